"""Probabilistic mixup (ProbMix, M-ProbMix) for Pyro and NumPyro.

The top-level package is the torch / Pyro API; the JAX / NumPyro API lives in
:mod:`pyro_mixup.numpyro`, which imports without torch.
"""

from .errors import UnsupportedDistributionError
from .families import ALL_FAMILIES

__version__ = "0.1.0"

__all__ = [
    "UnsupportedDistributionError",
    "ALL_FAMILIES",
    "log_linear_pool",
    "pool_pairs",
    "register",
    "embed",
    "mixable",
    "handlers",
]


def __getattr__(name):
    # Import the torch side lazily so that ``import pyro_mixup.numpyro`` works
    # on a machine without torch.
    if name in ("log_linear_pool", "pool_pairs", "register"):
        from . import torch_backend

        return getattr(torch_backend, name)
    if name in ("embed", "mixable"):
        from . import primitives

        return getattr(primitives, name)
    if name == "handlers":
        import importlib

        return importlib.import_module(".handlers", __name__)
    raise AttributeError(f"module 'pyro_mixup' has no attribute {name!r}")
