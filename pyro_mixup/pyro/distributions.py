"""The mixup targets as torch distributions, so that Pyro's ELBOs score them
like any site: thin shells over :mod:`pyro_mixup.core.targets`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import Distribution

from ..core import targets
from ..core.pairing import Partner
from .backend import BACKEND


class PairScore(TorchDistribution):
    """A distribution that scores a pair's observed values (never sampled by a
    guide: it sits at an observed site). ``dim`` is the negative batch dim of
    the pairs; new batch dims on the left (vectorised particles, enumeration)
    keep it valid."""

    arg_constraints = {}
    has_rsample = False

    def __init__(
        self,
        base: Distribution,
        lam: float | torch.Tensor,
        partner: Partner | torch.Tensor,
        dim: int,
        mask: torch.Tensor | None = None,
    ) -> None:
        self.base, self.lam, self.partner, self.dim, self.pair_mask = base, lam, partner, dim, mask
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint | None:
        return self.base.support

    def sample(
        self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()
    ) -> torch.Tensor:
        return self.base.sample(sample_shape)

    def expand(self, batch_shape: Sequence[int], _instance: PairScore | None = None) -> PairScore:
        batch_shape = torch.Size(batch_shape)
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.base = self.base.expand(batch_shape)
        if self.pair_mask is not None:
            new.pair_mask = self.pair_mask.expand(batch_shape)
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        return new


PairedTarget, SoftLabelTarget = targets.target_classes(PairScore, BACKEND, __name__)
