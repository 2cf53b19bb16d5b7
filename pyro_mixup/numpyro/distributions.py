"""The mixup targets as NumPyro distributions (pytrees, so they pass through
``jax.jit``), so that NumPyro's ELBOs score them like any site: thin shells
over :mod:`pyro_mixup.core.targets`."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints

from ..core import targets
from ..core.pairing import Partner
from .backend import BACKEND


class PairScore(Distribution):
    """A distribution that scores a pair's observed values; ``dim`` is the
    negative batch dim of the pairs, valid under new batch dims on the left."""

    arg_constraints: dict[str, constraints.Constraint] = {}
    pytree_data_fields = ("base", "lam", "partner", "pair_mask")
    pytree_aux_fields = ("dim",)

    def __init__(
        self,
        base: Distribution,
        lam: jax.Array,
        partner: Partner | jax.Array,
        dim: int,
        mask: jax.Array | None = None,
    ) -> None:
        self.base, self.lam, self.partner, self.dim, self.pair_mask = base, lam, partner, dim, mask
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        return self.base.support

    @property
    def has_enumerate_support(self) -> bool:
        return False

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return self.base.sample(key, sample_shape)

    def expand(self, batch_shape: Sequence[int]) -> PairScore:
        batch_shape = tuple(batch_shape)
        if batch_shape == tuple(self.batch_shape):
            return self
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.base = self.base.expand(batch_shape)
        if self.pair_mask is not None:
            new.pair_mask = jnp.broadcast_to(self.pair_mask, batch_shape)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        return new


PairedTarget, SoftLabelTarget = targets.target_classes(PairScore, BACKEND, __name__)
