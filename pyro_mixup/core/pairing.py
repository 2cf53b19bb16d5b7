"""Who is paired with whom: the :class:`Partner` of each example, and partner
tables (LocK, C-Mixup), shared by both backends; no torch or jax here.

The default pairing (a uniform random permutation of the batch, as in
ordinary mixup) needs no table. The two data-dependent pairings of the paper's
baselines and of C-Mixup precompute, once, in numpy, for each training example
a set of candidate partners and their probabilities; each training step then
draws one partner per example from that table with the backend's RNG.

- :class:`NearestNeighbourPairing` (LocK mixup, K = 5 in the paper): partner
  drawn uniformly from the K nearest neighbours of ``x_i`` in input space.
- :class:`LabelKernelPairing` (C-Mixup, Yao et al. 2022): partner drawn with
  probability proportional to ``exp(-|y_i - y_j|^2 / (2 h^2))``.

Full-batch training passes the table to a handler (``pairing=table``). With
minibatches the partner must be in the batch: :meth:`PartnerTable.batches`
yields index batches made of anchors and their drawn partners, and the
matching ``perm`` to give the handler.

:class:`ShardLocalPairing` is the pairing for a batch split into contiguous
shards (one per device under data parallelism): a uniform random permutation
within each shard, so that no partner crosses a device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MixupUsageError


class Partner:
    """The partner of each of ``n`` examples along one axis: ``index[i]``, or
    ``(i + shift) % n`` for a cyclic shift.

    A shift is applied as a roll (two slices), whose gradient is a roll too; an
    index as a gather, whose gradient is a scatter-add, the slowest op of a
    small CPU step. Backends apply it with :func:`pyro_mixup.core.pooling.take_partner`.
    With ``shards=k`` the index (still global, into ``0..n-1``) keeps every
    partner inside its own contiguous block of ``n // k`` examples, and is
    applied as a gather batched over the blocks, which a batch sharded over
    ``k`` devices runs without communication.
    """

    __slots__ = ("index", "n", "shards", "shift")

    def __init__(
        self, n: int, index: Any = None, shift: Any = None, shards: int | None = None
    ) -> None:
        if (index is None) == (shift is None):
            raise ValueError("a Partner holds either an index or a shift")
        if shards is not None and index is None:
            raise ValueError("a shard-local Partner holds an index")
        self.n = n
        self.index = index
        self.shift = shift
        self.shards = shards

    def __repr__(self) -> str:
        what = f"shift={self.shift}" if self.shift is not None else f"index={self.index}"
        local = "" if self.shards is None else f", shards={self.shards}"
        return f"Partner(n={self.n}, {what}{local})"


@dataclass(frozen=True)
class ShardLocalPairing:
    """Pair each example within its contiguous shard of the batch: the batch of
    ``n`` rows is cut into ``num_shards`` blocks of ``n // num_shards`` rows
    (rows ``s*b .. (s+1)*b - 1``: the blocks a batch sharded over
    ``num_shards`` devices along its first axis puts on each device), and each
    block gets its own uniform random permutation, independently.

    ``pairing=ShardLocalPairing(k)`` in either backend's handlers. No partner
    crosses a device, so a jitted step on a sharded batch pairs without moving
    rows between devices (the default global permutation gathers partners from
    other shards). Within a shard each partner is uniform over the shard, not
    over the batch: with ``k = 1`` it is the default pairing. In one process it
    also reproduces the pairs of data-parallel training on ``k`` ranks (each
    rank pairs within its own batch).

    :param int num_shards: the number of contiguous shards, e.g. the mesh's size
        along the batch axis (``mesh.shape["data"]``). The batch must be
        divisible by it, with at least 2 rows per shard.
    """

    num_shards: int

    def __post_init__(self) -> None:
        k = self.num_shards
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(
                f"ShardLocalPairing: num_shards must be a positive integer (the number of devices "
                f"the batch is split over); got {k!r}"
            )
        object.__setattr__(self, "num_shards", int(k))

    def shard_size(self, n: int) -> int:
        """The rows per shard of a batch of ``n``; refuses a batch that does not split."""
        k = self.num_shards
        if n % k or n // k < 2:
            raise MixupUsageError(
                f"ShardLocalPairing({k}) pairs within {k} equal contiguous shards, and a batch of "
                f"{n} examples "
                + (
                    f"does not split into {k} equal shards"
                    if n % k
                    else "leaves fewer than 2 per shard"
                )
                + f": use a batch size that is a multiple of {k} with at least {2 * k} examples "
                "(sharding a batch over devices needs that too: drop or pad the last batch), "
                "or the default pairing"
            )
        return n // k

    def check(self, perm: Any) -> None:
        """Refuse a concrete ``perm`` (numpy) that sends an example out of its shard."""
        perm = np.asarray(perm)
        b = self.shard_size(len(perm))
        rows = np.arange(len(perm))
        bad = perm // b != rows // b
        if bad.any():
            i = int(np.argmax(bad))
            raise MixupUsageError(
                f"perm pairs example {i} (shard {i // b}) with {int(perm[i])} (shard "
                f"{int(perm[i]) // b}), but pairing=ShardLocalPairing({self.num_shards}) keeps every "
                f"partner in its own shard of {b} rows: pass a shard-local perm, or drop pairing="
            )


def _table_error(what: str, row: int, value: object) -> ValueError:
    return ValueError(f"PartnerTable: {what} (row {row}: {value!r})")


@dataclass
class PartnerTable:
    """Candidate partners per example: ``candidates[i]`` (``m`` indices into the
    table's own ``n`` rows) drawn with probabilities ``probs[i]`` (``None``
    means uniform). Validated on construction."""

    candidates: np.ndarray  # (n, m) int64
    probs: np.ndarray | None = None  # (n, m) float, rows sum to 1

    def __post_init__(self) -> None:
        cand = np.asarray(self.candidates)
        if cand.ndim != 2 or cand.shape[1] < 1:
            raise ValueError(
                f"PartnerTable: candidates must be an (n, m) array of row indices with m >= 1; got shape {cand.shape}"
            )
        if not np.issubdtype(cand.dtype, np.integer):
            raise ValueError(
                f"PartnerTable: candidates must hold integer row indices; got dtype {cand.dtype} "
                "(floats would be truncated: convert deliberately with .astype(int))"
            )
        n = cand.shape[0]
        bad = (cand < 0) | (cand >= n)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise _table_error(
                f"candidates must lie in 0..{n - 1}, the table's rows", row, cand[row].tolist()
            )
        self.candidates = cand.astype(np.int64)
        if self.probs is not None:
            probs = np.asarray(self.probs, dtype=np.float64)
            if probs.shape != cand.shape:
                raise ValueError(
                    f"PartnerTable: probs must have the shape of candidates {cand.shape}; got {probs.shape}"
                )
            for what, bad in (
                ("probabilities must be finite", ~np.isfinite(probs).all(1)),
                ("probabilities must be >= 0", (probs < 0).any(1)),
                (
                    "each row of probabilities must sum to 1 (tolerance 1e-6)",
                    np.abs(probs.sum(1) - 1) > 1e-6,
                ),
            ):
                if bad.any():
                    row = int(np.argmax(bad))
                    raise _table_error(what, row, probs[row].tolist())
            self.probs = probs

    @property
    def size(self) -> int:
        return self.candidates.shape[0]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One partner per example, with numpy's RNG (for batch building)."""
        n, m = self.candidates.shape
        if self.probs is None:
            cols = rng.integers(0, m, size=n)
        else:
            cols = (rng.random((n, 1)) > np.cumsum(self.probs, axis=1)).sum(axis=1)
            cols = np.minimum(cols, m - 1)
        return self.candidates[np.arange(n), cols]

    def batches(
        self, batch_size: int, *, seed: int | None = None, drop_last: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of minibatches that carry their partners.

        Each batch holds ``batch_size // 2`` anchors (a random split of the
        data) followed by one drawn partner for each; yields ``(indices, perm)``
        where ``perm`` pairs anchor ``a`` with its partner and back. Pass
        ``perm`` to the handler (``probmix(..., perm=perm)``) and index the data
        with ``indices``.
        """
        if batch_size < 2:
            raise ValueError("batch_size must be at least 2 (an anchor and its partner)")
        rng = np.random.default_rng(seed)
        half = batch_size // 2
        order = rng.permutation(self.size)
        for start in range(0, self.size, half):
            anchors = order[start : start + half]
            if len(anchors) < half and drop_last:
                return
            partners = (
                self.sample(rng)[anchors] if self.probs is None else self._sample_rows(anchors, rng)
            )
            k = len(anchors)
            indices = np.concatenate([anchors, partners])
            perm = np.concatenate([np.arange(k, 2 * k), np.arange(k)])
            yield indices, perm

    def _sample_rows(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        assert self.probs is not None  # the uniform case draws with sample()
        probs = self.probs[rows]
        cols = (rng.random((len(rows), 1)) > np.cumsum(probs, axis=1)).sum(axis=1)
        return self.candidates[rows, np.minimum(cols, probs.shape[1] - 1)]


def _nearest(points: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Indices and squared distances of the k nearest other rows (chunked, O(n k) memory)."""
    n = points.shape[0]
    sq = (points**2).sum(1)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k))
    for start in range(0, n, chunk):
        block = points[start : start + chunk]
        d2 = sq[start : start + chunk, None] - 2 * block @ points.T + sq[None, :]
        rows = np.arange(block.shape[0])
        d2[rows, start + rows] = np.inf  # never your own neighbour
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        pd = np.take_along_axis(d2, part, 1)
        order = np.argsort(pd, axis=1)
        idx[start : start + chunk] = np.take_along_axis(part, order, 1)
        dist[start : start + chunk] = np.maximum(np.take_along_axis(pd, order, 1), 0)
    return idx, dist


def NearestNeighbourPairing(x: np.typing.ArrayLike, k: int = 5) -> PartnerTable:
    """LocK pairing: each example's partner is one of its ``k`` nearest
    neighbours (Euclidean, on the rows of ``x``), uniformly."""
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(len(x), -1)
    if len(x) < 2:
        raise ValueError("nearest-neighbour pairing needs at least 2 examples")
    k = int(k)
    if not 1 <= k <= len(x) - 1:
        raise ValueError(f"k must be between 1 and n - 1 = {len(x) - 1}; got {k}")
    idx, _ = _nearest(x, k)
    return PartnerTable(idx)


def LabelKernelPairing(
    y: np.typing.ArrayLike, bandwidth: float = 1.0, max_candidates: int = 256
) -> PartnerTable:
    """C-Mixup pairing: partner ``j`` of ``i`` drawn with probability
    proportional to ``exp(-|y_i - y_j|^2 / (2 * bandwidth^2))``, ``j != i``.

    The kernel is kept over the ``max_candidates`` nearest labels (exact when
    ``n - 1 <= max_candidates``; beyond that the dropped mass is the kernel's
    far tail)."""
    y = np.asarray(y, dtype=np.float64)
    y = y.reshape(len(y), -1)
    if len(y) < 2:
        raise ValueError("label-kernel pairing needs at least 2 examples")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive; got {bandwidth}")
    m = min(max_candidates, len(y) - 1)
    idx, d2 = _nearest(y, m)
    logits = -d2 / (2 * bandwidth**2)
    w = np.exp(logits - logits.max(1, keepdims=True))
    return PartnerTable(idx, w / w.sum(1, keepdims=True))
