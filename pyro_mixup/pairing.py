"""Partner tables (LocK, C-Mixup); they live in :mod:`pyro_mixup.core.pairing`,
this name stays for existing code."""

from .core.pairing import LabelKernelPairing, NearestNeighbourPairing, Partner, PartnerTable

__all__ = ["LabelKernelPairing", "NearestNeighbourPairing", "Partner", "PartnerTable"]
