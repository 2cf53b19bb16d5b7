"""Moved to :mod:`pyro_mixup.experiments.bnn.models_numpyro`; re-exported for existing code."""

from ..experiments.bnn.models_numpyro import BNNRegressor, fit, fit_splits, make_model, wrap

__all__ = ["BNNRegressor", "fit", "fit_splits", "make_model", "wrap"]
