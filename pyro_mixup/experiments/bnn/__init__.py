"""Bayesian neural networks with probabilistic mixup, for Pyro and NumPyro.

- :mod:`~pyro_mixup.experiments.bnn.models_pyro`: :class:`~pyro_mixup.experiments.bnn.models_pyro.BNNRegressor`
  (a ``PyroModule`` with ``PyroSample`` priors) and its trainer :func:`~pyro_mixup.experiments.bnn.models_pyro.fit`;
- :mod:`~pyro_mixup.experiments.bnn.models_numpyro`: the same model and trainer for NumPyro;
- :mod:`~pyro_mixup.experiments.bnn.cli`: the ``pyro-mixup bnn`` command (UCI benchmark with
  ArviZ output).

Methods (``method=`` of ``fit``), from the registry :data:`pyro_mixup.experiments.methods.METHODS`:
``erm`` (plain model), ``probmix`` (``probmix(model)``), ``m-probmix``
(``probmix(model, at="z")`` on the ``embed=True`` model), ``mix``
(``mixup(model, at="x")``), ``m-mix`` (``mixup(model, at="h")``, the first hidden layer).
"""

from ..methods import METHOD_NAMES as _DEFAULT_SET
from ..methods import METHODS as _REGISTRY

#: The methods the BNN trains: those of the registry's default set that need no
#: partner table (erm, mix, m-mix, probmix, m-probmix).
BNN_METHODS = tuple(name for name in _DEFAULT_SET if not _REGISTRY[name].uses_table)
#: The name this package has always exported.
METHODS = BNN_METHODS


def uses_embed(method: str) -> bool:
    """Whether ``method`` trains the stochastic-embedding variant of the model."""
    return _REGISTRY[method].embedding


__all__ = ["BNN_METHODS", "METHODS", "uses_embed"]
