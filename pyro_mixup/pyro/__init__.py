"""The Pyro (torch) adapter: pooling backend, random draws, target
distributions, primitives and handlers. Its public names are re-exported at
the top of :mod:`pyro_mixup` (``log_linear_pool``, ``embed``, ...) and in
:mod:`pyro_mixup.handlers`."""

from .backend import log_linear_pool, pool_pairs, register
from .handlers import mixup, probmix
from .predictive import marginal_predictive, mean_embedding
from .primitives import embed, mixable

__all__ = [
    "embed",
    "log_linear_pool",
    "marginal_predictive",
    "mean_embedding",
    "mixable",
    "mixup",
    "pool_pairs",
    "probmix",
    "register",
]
