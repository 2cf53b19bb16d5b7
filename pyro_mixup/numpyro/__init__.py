"""Probabilistic mixup for NumPyro (JAX). Imports without torch.

Same API as :mod:`pyro_mixup`, for NumPyro models: :func:`log_linear_pool`,
:func:`pool_pairs`, :func:`register`, and the handlers in
:mod:`pyro_mixup.numpyro.handlers`.
"""

from ..errors import UnsupportedDistributionError
from .backend import log_linear_pool, pool_pairs, register

__all__ = ["UnsupportedDistributionError", "log_linear_pool", "pool_pairs", "register"]
