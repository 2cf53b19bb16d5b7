"""The exponential-family registry; it lives in :mod:`pyro_mixup.core.families`,
this name stays for existing code."""

from .core.families import *  # noqa: F403
from .core.families import ALL_FAMILIES, FAMILY_BY_CLASS_NAME, Family

__all__ = ["ALL_FAMILIES", "FAMILY_BY_CLASS_NAME", "Family"]
