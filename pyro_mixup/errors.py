"""The exceptions; they live in :mod:`pyro_mixup.core.errors`, this name stays
for existing code."""

from .core.errors import MixupUsageError, UnsupportedDistributionError

__all__ = ["MixupUsageError", "UnsupportedDistributionError"]
