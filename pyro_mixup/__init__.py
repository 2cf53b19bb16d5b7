"""Probabilistic mixup (ProbMix, M-ProbMix) for Pyro and NumPyro.

The top-level package is the torch / Pyro API (re-exported from
:mod:`pyro_mixup.pyro`); the JAX / NumPyro API lives in
:mod:`pyro_mixup.numpyro`, which imports without torch. Both are thin adapters
over the backend-neutral :mod:`pyro_mixup.core`.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .core.errors import MixupUsageError, UnsupportedDistributionError
from .core.families import ALL_FAMILIES

# one version, written in pyproject.toml; a source tree that was never installed has none
try:
    __version__ = version("pyro-mixup")
except PackageNotFoundError:  # pragma: no cover - only outside an installed tree
    __version__ = "0+unknown"

__all__ = [
    "ALL_FAMILIES",
    "MixupUsageError",
    "UnsupportedDistributionError",
    "embed",
    "handlers",
    "log_linear_pool",
    "marginal_predictive",
    "mean_embedding",
    "mixable",
    "pool_pairs",
    "register",
]

_LAZY = {
    "log_linear_pool": ".pyro.backend",
    "pool_pairs": ".pyro.backend",
    "register": ".pyro.backend",
    "embed": ".pyro.primitives",
    "mixable": ".pyro.primitives",
    "marginal_predictive": ".pyro.predictive",
    "mean_embedding": ".pyro.predictive",
}


def __getattr__(name: str) -> Any:
    # Import the torch side lazily so that ``import pyro_mixup.numpyro`` works
    # on a machine without torch.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name == "handlers":
        return importlib.import_module(".handlers", __name__)
    raise AttributeError(f"module 'pyro_mixup' has no attribute {name!r}")
