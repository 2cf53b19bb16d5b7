"""Bayesian neural networks with probabilistic mixup, for Pyro and NumPyro.

- :mod:`pyro_mixup.bnn.models_pyro`: :class:`~pyro_mixup.bnn.models_pyro.BNNRegressor`
  (a ``PyroModule`` with ``PyroSample`` priors) and :func:`~pyro_mixup.bnn.models_pyro.fit`;
- :mod:`pyro_mixup.bnn.models_numpyro`: the same model and trainer for NumPyro;
- :mod:`pyro_mixup.bnn.cli`: the ``pyro-mixup bnn`` command (UCI benchmark with
  ArviZ output).

Methods (``method=`` of ``fit``): ``erm`` (plain model), ``probmix``
(``probmix(model)``), ``m-probmix`` (``probmix(model, at="z")`` on the
``embed=True`` model), ``mix`` (``mixup(model, at="x")``), ``m-mix``
(``mixup(model, at="h")``, the first hidden layer).
"""

METHODS = ("erm", "probmix", "m-probmix", "mix", "m-mix")


def uses_embed(method: str) -> bool:
    """Whether ``method`` trains the stochastic-embedding variant of the model."""
    return method == "m-probmix"


__all__ = ["METHODS", "uses_embed"]
