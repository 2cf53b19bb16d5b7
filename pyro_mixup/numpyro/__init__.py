"""Probabilistic mixup for NumPyro (JAX). Imports without torch.

Same API as :mod:`pyro_mixup`, for NumPyro models: :func:`log_linear_pool`,
:func:`pool_pairs`, :func:`register`, the primitives :func:`embed` and
:func:`mixable`, the marginal predictive :func:`marginal_predictive` (with
:func:`mean_embedding`), and the handlers in :mod:`pyro_mixup.numpyro.handlers`
(:func:`~pyro_mixup.numpyro.handlers.probmix`,
:func:`~pyro_mixup.numpyro.handlers.mixup`). A thin adapter over
:mod:`pyro_mixup.core`: backend, random, distributions, primitives, handlers.
"""

from ..core.errors import MixupUsageError, UnsupportedDistributionError
from . import handlers
from .backend import log_linear_pool, pool_pairs, register
from .handlers import mixup, probmix
from .predictive import marginal_predictive, mean_embedding
from .primitives import embed, mixable

__all__ = [
    "MixupUsageError",
    "UnsupportedDistributionError",
    "embed",
    "handlers",
    "log_linear_pool",
    "marginal_predictive",
    "mean_embedding",
    "mixable",
    "mixup",
    "pool_pairs",
    "probmix",
    "register",
]
