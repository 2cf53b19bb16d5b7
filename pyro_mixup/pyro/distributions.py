"""The mixup targets as torch distributions, so that Pyro's ELBOs score them
like any site: thin shells over :mod:`pyro_mixup.core.targets`."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution, constraints

from ..core import targets
from .backend import BACKEND


class PairScore(TorchDistribution):
    """A distribution that scores a pair's observed values (never sampled by a
    guide: it sits at an observed site). ``dim`` is the negative batch dim of
    the pairs; new batch dims on the left (vectorised particles, enumeration)
    keep it valid."""

    arg_constraints = {}
    has_rsample = False

    def __init__(self, base, lam, partner, dim, mask=None):
        self.base, self.lam, self.partner, self.dim, self.pair_mask = base, lam, partner, dim, mask
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self):
        return self.base.support

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.base = self.base.expand(batch_shape)
        if self.pair_mask is not None:
            new.pair_mask = self.pair_mask.expand(batch_shape)
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        return new


PairedTarget, SoftLabelTarget = targets.target_classes(PairScore, BACKEND, __name__)
