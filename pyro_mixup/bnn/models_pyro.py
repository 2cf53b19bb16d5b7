"""Moved to :mod:`pyro_mixup.experiments.bnn.models_pyro`; re-exported for existing code."""

from ..experiments.bnn.models_pyro import BNNRegressor, fit, make_model, predict, wrap

__all__ = ["BNNRegressor", "fit", "make_model", "predict", "wrap"]
