"""The random part of a handler entry: the weight ``lam`` and each example's
partner, drawn on first use, per plate size, and shared by every site inside
the entry.

Drawing lazily (not when the handler is entered) keeps the draw inside the
region that runs the model: under a compiled step (``JitTrace_ELBO``,
``jax.jit(svi.update)``) it is then part of what is compiled, and fresh at every
step. The backend's random source (:class:`pyro_mixup.core.backend.RandomSource`)
makes the elementary draws; this module decides what is drawn and checks it
against the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._types import Array
from .options import MixOptions
from .pairing import Partner, PartnerTable, ShardLocalPairing

if TYPE_CHECKING:
    from .backend import RandomSource


def _size_error(n: int) -> ValueError:
    return ValueError(
        f"cannot pair examples in a batch of size {n}: mixup needs at least 2 examples "
        "along the plate (use a larger batch, or leave the model unwrapped)"
    )


class Draws:
    """``lam`` and partners of one handler entry.

    :param options: the handler's options (fixed ``lam`` / ``perm``, ``alpha``, pairing).
    :param source: the backend's random source, already begun for this entry.
    :param on_random: called once, before the first random draw (the handler
        core refuses MCMC there).
    """

    def __init__(
        self,
        options: MixOptions,
        source: RandomSource,
        on_random: Callable[[], None] | None = None,
    ) -> None:
        self.options = options
        self.source = source
        self._on_random = on_random
        self._lam: dict[int | None, Array] = {}  # per plate size (None: one lam for all)
        self._partner: dict[int, Partner] = {}

    def _random(self) -> None:
        if self._on_random is not None:
            hook, self._on_random = self._on_random, None
            hook()

    def lam(self, n: int, like: Array) -> Array:
        """The mixing weight for a plate of ``n`` examples, as the backend's
        weight for arrays like ``like`` (a scalar, or one per example)."""
        opts = self.options
        key = n if opts.per_example else None
        lam = self._lam.get(key)
        if lam is None:
            if opts.lam is not None:
                shape = tuple(opts.arrays.shape(opts.lam))
                if shape and shape[0] != n:
                    raise ValueError(f"lam has {shape[0]} values but the batch has {n} examples")
                lam = self.source.fixed_weight(opts.lam)
            elif opts.alpha == 0.0:
                # Beta(0, 0) limit: all weight on each example itself, i.e. ERM
                lam = self.source.ones(n if opts.per_example else None)
            else:
                self._random()
                lam = self.source.beta(opts.alpha, n if opts.per_example else None)
            self._lam[key] = lam
        return self.source.cast_weight(lam, like)

    def partner(self, n: int) -> Partner:
        """The partner of each of ``n`` examples."""
        partner = self._partner.get(n)
        if partner is None:
            opts = self.options
            if n < 2:
                raise _size_error(n)
            if opts.alpha == 0.0 and opts.lam is None and opts.perm is None:
                # alpha=0 puts all weight on each example (ERM): pairing each with itself
                # is exact and draws nothing (so MCMC on it is well defined)
                partner = Partner(n, shift=0)
            elif opts.perm is not None:
                length = next(iter(opts.arrays.shape(opts.perm)))
                if length != n:
                    raise ValueError(f"perm has length {length} but the batch has {n} examples")
                if isinstance(opts.pairing, ShardLocalPairing):
                    partner = Partner(n, index=opts.perm, shards=self._shards(opts.pairing, n))
                elif opts.perm_shift is not None:
                    partner = Partner(n, shift=opts.perm_shift)
                else:
                    partner = Partner(n, index=opts.perm)
            elif isinstance(opts.pairing, PartnerTable):
                if opts.pairing.size != n:
                    raise ValueError(
                        f"the pairing table covers {opts.pairing.size} examples but the batch has {n}: a "
                        "table pairs a full batch; for minibatches use table.batches(...) and pass perm="
                    )
                self._random()
                partner = Partner(n, index=self.source.from_table(opts.pairing, n))
            elif isinstance(opts.pairing, ShardLocalPairing):
                shards = self._shards(opts.pairing, n)
                self._random()
                partner = Partner(n, index=self.source.local_permutation(n, shards), shards=shards)
            elif opts.pairing == "shift":
                self._random()
                partner = Partner(n, shift=self.source.shift(n))
            else:
                self._random()
                partner = Partner(n, index=self.source.permutation(n))
            self._partner[n] = partner
        return partner

    @staticmethod
    def _shards(pairing: ShardLocalPairing, n: int) -> int:
        pairing.shard_size(n)  # refuses a batch that does not split into equal shards
        return pairing.num_shards

    def noise(self, like: Array) -> Array:
        """Standard normal noise shaped like ``like`` (the jitter of ``beta``)."""
        self._random()
        return self.source.normal(like)
