"""The former home of the BNN experiments, now :mod:`pyro_mixup.experiments.bnn`; these names stay for existing code.

- :mod:`pyro_mixup.bnn.models_pyro`, :mod:`pyro_mixup.bnn.models_numpyro`: the BNN for Pyro and NumPyro;
- :mod:`pyro_mixup.bnn.data`: UCI splits (:func:`~pyro_mixup.bnn.data.load_split`).

The ``pyro-mixup bnn`` command lives in :mod:`pyro_mixup.experiments.bnn.cli`.
"""

from ..experiments.bnn import BNN_METHODS, METHODS, uses_embed

__all__ = ["BNN_METHODS", "METHODS", "uses_embed"]
