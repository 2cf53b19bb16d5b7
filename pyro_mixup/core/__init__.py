"""The backend-neutral core: the exponential-family registry, the pooling
engine, the handler options, draws, targets and handler logic, and pairing.
Imports neither torch nor jax (a test checks it); the adapters
:mod:`pyro_mixup.pyro` and :mod:`pyro_mixup.numpyro` supply the arrays, the
random numbers and the effect system."""
