"""Partner tables (LocK, C-Mixup) and shard-local pairing; they live in
:mod:`pyro_mixup.core.pairing` (shared by both backends), this name stays for
existing code."""

from .core.pairing import (
    LabelKernelPairing,
    NearestNeighbourPairing,
    Partner,
    PartnerTable,
    ShardLocalPairing,
)

__all__ = [
    "LabelKernelPairing",
    "NearestNeighbourPairing",
    "Partner",
    "PartnerTable",
    "ShardLocalPairing",
]
