"""Log-linear pooling of exponential-family distributions, backend-neutral.

Distributions are taken apart into a *leaf* exponential family (looked up in
:mod:`pyro_mixup.families` through the backend's class table) wrapped by any
number of Independent / Expanded / Masked / Transformed layers. Leaf parameters
are broadcast to the full batch shape, mapped to natural parameters, combined,
mapped back, and the wrapper layers are rebuilt around the pooled leaf.

The backend (:mod:`pyro_mixup.pyro.backend`, :mod:`pyro_mixup.numpyro.backend`;
its interface is :class:`pyro_mixup.core.backend.PoolingBackend`) supplies
array operations and knows its own distribution classes; nothing here imports
torch or jax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._types import Array, Distribution
from .errors import UnsupportedDistributionError
from .families import Family, masked_weighted_sum
from .pairing import Partner

if TYPE_CHECKING:
    from .backend import PoolingBackend

#: Weights must lie in [-WEIGHT_TOL, 1 + WEIGHT_TOL] and sum to 1 within WEIGHT_TOL;
#: they are then projected onto the simplex (clipped at 0, renormalised).
WEIGHT_TOL = 1e-5

#: Equal fixed parameters (total_count) may differ by this many units of the
#: dtype's resolution (0.1 + 0.2 is 0.3 to the user).
FIXED_PARAM_ULPS = 8


def take_partner(backend: PoolingBackend, x: Array, partner: Partner | Array, axis: int) -> Array:
    """``x`` with element ``i`` along ``axis`` replaced by its partner's: a roll
    for a cyclic :class:`~pyro_mixup.core.pairing.Partner`, a gather shard by
    shard for a shard-local one, else a gather."""
    if type(partner) is Partner:
        if partner.shift is not None:
            return backend.roll(x, -partner.shift, axis)
        if partner.shards is not None:
            return backend.take_local(x, partner.index, axis, partner.shards)
        partner = partner.index
    return backend.take(x, partner, axis)


def _partner_shape(backend: PoolingBackend, partner: Partner | Array) -> tuple[int, ...]:
    return (partner.n,) if type(partner) is Partner else tuple(backend.shape(partner))


def _partner_numpy(backend: PoolingBackend, partner: Partner | Array) -> np.ndarray | None:
    """The partner index as a numpy array, or None while traced."""
    if type(partner) is not Partner:
        return backend.to_numpy(partner)
    if partner.index is not None:
        return backend.to_numpy(partner.index)
    shift = backend.to_numpy(partner.shift)
    return None if shift is None else (np.arange(partner.n) + int(shift)) % partner.n


@dataclass
class Node:
    """One layer of a decomposed distribution."""

    kind: str  # "leaf", "independent", "expanded", "masked", "transformed"
    dist: Distribution
    child: Node | None = None
    family: Family | None = None
    info: Any = None  # reinterpreted dims, mask or transforms


def _child(node: Node) -> Node:
    """The layer a wrapper layer wraps (:func:`decompose` gives every wrapper one)."""
    child = node.child
    assert child is not None, node.kind
    return child


def _family(node: Node) -> Family:
    """The family of a leaf layer (:func:`decompose` gives every leaf one)."""
    family = node.family
    assert family is not None, node.kind
    return family


def decompose(backend: PoolingBackend, d: Distribution) -> Node:
    entry = backend.lookup(d)
    if entry is not None:
        return Node("leaf", d, family=entry)
    layer = backend.unwrap(d)
    if layer is None:
        raise UnsupportedDistributionError(
            f"log-linear pooling does not support {type(d).__name__}: it is not an "
            f"exponential family with a closed-form pool. Supported: "
            f"{', '.join(backend.supported_names())}, and Independent/.to_event, expanded, "
            f"masked and transformed versions of them. A subclass of a supported class "
            f"can be added with pyro_mixup.register(cls, family_name)."
        )
    kind, child, info = layer
    return Node(kind, d, decompose(backend, child), info=info)


def _strip_expanded(node: Node) -> Node:
    # An expanded layer only broadcasts parameters, which pooling does anyway:
    # it is transparent, so Gamma(2., 1.).expand([3]) pools with Gamma(rates).
    while node.kind == "expanded":
        node = _child(node)
    return node


def _same_structure(backend: PoolingBackend, nodes: Sequence[Node]) -> None:
    nodes = [_strip_expanded(n) for n in nodes]
    first = nodes[0]
    for other in nodes[1:]:
        if other.kind != first.kind:
            raise ValueError(
                "log_linear_pool needs distributions of one family with the same wrappers; "
                f"got {type(first.dist).__name__} and {type(other.dist).__name__}"
            )
        if first.kind == "leaf" and other.family is not first.family:
            raise ValueError(
                "log_linear_pool needs distributions of one family; got "
                f"{_family(first).name} ({type(first.dist).__name__}) and "
                f"{_family(other).name} ({type(other.dist).__name__})"
            )
        if first.kind == "independent" and other.info != first.info:
            raise ValueError(
                "log_linear_pool needs the same number of event dims in every Independent "
                f"wrapper; got {first.info} and {other.info}"
            )
        if first.kind == "transformed" and not backend.same_transforms(first.info, other.info):
            raise ValueError(
                "log_linear_pool pools transformed distributions only when their transforms "
                f"are equal; got {first.info} and {other.info}"
            )
    if first.child is not None:
        _same_structure(backend, [_child(n) for n in nodes])


def _broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError as e:
        raise ValueError(
            "the distributions (and weights) have batch shapes that do not broadcast: "
            f"{[tuple(s) for s in shapes]}"
        ) from e


class _Combiner:
    """How arrays at one level are combined: a weighted sum over K inputs, or
    a pair sum along one batch dim of a single input.

    ``careful``: check parameters and results, drop weight-0 members exactly
    (public calls); the handlers' hot path (``validate=False``) skips all that.
    """

    careful = True

    def combine(self, arrays: Sequence[Array], rank: int) -> Array:  # pragma: no cover - interface
        raise NotImplementedError

    def terms(
        self, arrays: Sequence[Array], rank: int
    ) -> list[tuple[Array, Array]]:  # pragma: no cover - interface
        """``[(weight, array), ...]``, one per member, weights shaped to broadcast."""
        raise NotImplementedError

    def member(self, k: int) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def combine_masks(
        self, masks: Sequence[Array], batch_shape: tuple[int, ...]
    ) -> Array:  # pragma: no cover - interface
        raise NotImplementedError

    def check_fixed(
        self, name: str, values: Sequence[Array], batch_shape: tuple[int, ...]
    ) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def _pool_node(
    backend: PoolingBackend, nodes: list[Node], batch_shape: tuple[int, ...], combiner: _Combiner
) -> Distribution:
    """Pool a list of structurally equal nodes; ``batch_shape`` is the batch
    shape the pooled node must have."""
    nodes = [_strip_expanded(n) for n in nodes]
    first = nodes[0]
    if first.kind == "leaf":
        return _pool_leaf(backend, nodes, batch_shape, combiner)
    if first.kind == "masked":
        # Each input's mask broadcast to this level; the pool is observed where all are.
        masks = [
            backend.broadcast_to(backend.as_bool(n.info, like=n.dist), batch_shape) for n in nodes
        ]
        child = _pool_node(backend, [_child(n) for n in nodes], batch_shape, combiner)
        return backend.masked(child, combiner.combine_masks(masks, batch_shape), like=first.dist)
    child_suffix = _broadcast_shapes(
        *[tuple(_child(n).dist.batch_shape)[len(n.dist.batch_shape) :] for n in nodes]
    )
    child = _pool_node(
        backend, [_child(n) for n in nodes], tuple(batch_shape) + child_suffix, combiner
    )
    if first.kind == "independent":
        return backend.independent(child, first.info, like=first.dist)
    if first.kind == "transformed":
        return backend.transformed(child, first.info, like=first.dist)
    raise AssertionError(first.kind)


def _pool_leaf(
    backend: PoolingBackend, nodes: list[Node], batch_shape: tuple[int, ...], combiner: _Combiner
) -> Distribution:
    family = _family(nodes[0])
    ops = backend.ops
    raw = [[backend.param(n.dist, name) for name in family.params] for n in nodes]
    if combiner.careful:
        _check_event_sizes(backend, nodes, raw)
        _check_finite_params(backend, nodes, raw, combiner)
    params = [
        [
            _broadcast_param(backend, p, batch_shape, rank)
            for p, rank in zip(member, family.param_event_dims)
        ]
        for member in raw
    ]
    if family.pool is not None:
        by_param = zip(*params)
        kwargs = family.pool(
            ops,
            *[
                combiner.terms(list(ps), rank)
                for ps, rank in zip(by_param, family.param_event_dims)
            ],
        )
    else:
        to_natural, from_natural = family.to_natural, family.from_natural
        assert to_natural is not None and from_natural is not None  # no pool: naturals
        naturals_per_input: list[Sequence[Array]] = [to_natural(ops, *member) for member in params]
        if family.infinite_naturals and not combiner.careful:
            # the handlers' path cannot refuse on values: clipped, 0 * -inf is 0, not NaN, and
            # +inf with -inf pools as the limit of large finite logits (public calls refuse it)
            naturals_per_input = [
                [ops.clip_to_finite(eta) for eta in nat] for nat in naturals_per_input
            ]
        pooled = [
            combiner.combine([nat[i] for nat in naturals_per_input], rank)
            for i, rank in enumerate(family.natural_event_dims)
        ]
        kwargs = from_natural(ops, *pooled)
    if combiner.careful:
        for name in family.infinite_ok:
            kwargs[name] = ops.clip_to_finite(kwargs[name])
        _check_finite_result(backend, nodes, kwargs)
    for name in family.fixed:
        values = [backend.fixed_param(n.dist, name) for n in nodes]
        combiner.check_fixed(name, values, batch_shape)
        kwargs[name] = values[0]
    try:
        return backend.construct(nodes[0].dist, family, kwargs)
    except ValueError as e:  # the library's own check of the pooled parameters
        raise ValueError(
            f"the pool of {_member_classes(nodes)} is not a valid {family.name}: {e} "
            "Check the members' parameters (pool in float64 if they are extreme)."
        ) from e


def _broadcast_param(
    backend: PoolingBackend, p: Array, batch_shape: tuple[int, ...], rank: int
) -> Array:
    shape = backend.shape(p)
    event = shape[len(shape) - rank :] if rank else ()
    return backend.broadcast_to(p, tuple(batch_shape) + tuple(event))


def _member_classes(nodes: Sequence[Node]) -> str:
    names = sorted({type(n.dist).__name__ for n in nodes})
    return " and ".join(names) + " members"


def _check_event_sizes(
    backend: PoolingBackend, nodes: Sequence[Node], raw: Sequence[Sequence[Array]]
) -> None:
    """Event dims (categories, dimensions) are never broadcast: a Categorical
    over 1 class pooled with one over 4 is a mistake, not a pool."""
    family = _family(nodes[0])
    for i, (name, rank) in enumerate(zip(family.params, family.param_event_dims)):
        if not rank:
            continue
        first = tuple(backend.shape(raw[0][i]))[-rank:]
        for k, member in enumerate(raw[1:], start=1):
            other = tuple(backend.shape(member[i]))[-rank:]
            if other != first:
                raise ValueError(
                    f"log_linear_pool needs members of one event size; member 0 "
                    f"({type(nodes[0].dist).__name__}) has {name} of event shape {first} and member {k} "
                    f"({type(nodes[k].dist).__name__}) has {other}. Event dims are not broadcast: give "
                    "every member the same number of categories or dimensions."
                )


def _check_event_shapes(dists: Sequence[Distribution]) -> None:
    first = tuple(dists[0].event_shape)
    for k, d in enumerate(dists[1:], start=1):
        if tuple(d.event_shape) != first:
            raise ValueError(
                f"log_linear_pool needs members of one event shape; member 0 ({type(dists[0]).__name__}) "
                f"has event shape {first} and member {k} ({type(d).__name__}) has {tuple(d.event_shape)}. "
                "Event dims are not broadcast: give every member the same event shape."
            )


def _check_finite_params(
    backend: PoolingBackend,
    nodes: Sequence[Node],
    raw: Sequence[Sequence[Array]],
    combiner: _Combiner,
) -> None:
    """Refuse a NaN parameter, or an infinite one where no boundary allows it,
    before it spreads into some pooled fields and not others (skipped for
    traced values, which cannot be looked at)."""
    family = _family(nodes[0])
    for k, (node, member) in enumerate(zip(nodes, raw)):
        for name, value in zip(family.params, member):
            concrete = backend.to_numpy(value)
            if concrete is None:
                continue
            concrete = np.asarray(concrete, dtype=np.float64)
            bad = np.isnan(concrete) if name in family.infinite_ok else ~np.isfinite(concrete)
            if np.any(bad):
                what = "NaN" if np.isnan(concrete).any() else "inf"
                raise ValueError(
                    f"{combiner.member(k)} ({type(node.dist).__name__}) has {what} in its {name} "
                    f"(at index {tuple(int(i) for i in np.argwhere(bad)[0])}); log-linear pooling needs "
                    "finite parameters. Find where it came from (a log of 0, an overflow) and fix it there."
                )


def _check_finite_result(
    backend: PoolingBackend, nodes: Sequence[Node], kwargs: dict[str, Array]
) -> None:
    for name, value in kwargs.items():
        concrete = backend.to_numpy(value)
        if concrete is not None and not np.all(np.isfinite(np.asarray(concrete, dtype=np.float64))):
            raise ValueError(
                f"pooling {_member_classes(nodes)} gave a non-finite {name}: the members' parameters "
                f"overflow {backend.dtype_name(value)} when pooled, or their supports do not overlap (a "
                "probability 0 in one member where another has 1). Pool in float64, or bring the "
                "parameters into range."
            )


def _check_precision(backend: PoolingBackend, dists: Sequence[Distribution], like: Array) -> None:
    """Half precision cannot hold the pooled precisions and log-rates
    (3 significant digits, overflow past 65504): refuse it rather than answer NaN."""
    dtype = backend.dtype_name(like)
    if dtype in ("float16", "bfloat16"):
        raise ValueError(
            f"log-linear pooling needs float32 or float64 parameters; {type(dists[0]).__name__} has "
            f"{dtype}, too coarse for the pooled parameters. Cast the parameters to float32 "
            "(torch: .float(); JAX: .astype(jnp.float32)) and pool that."
        )


# ---------------------------------------------------------------------------
# log_linear_pool


def _check_weights(backend: PoolingBackend, weights: Sequence[Array], k: int) -> None:
    if k < 2:
        raise ValueError(f"log_linear_pool needs at least 2 distributions, got {k}")
    if len(weights) != k:
        raise ValueError(f"got {k} distributions but {len(weights)} weights; give one weight each")
    concrete = [c for c in (backend.to_numpy(w) for w in weights) if c is not None]
    if len(concrete) < len(weights):
        return  # traced values (inside jax.jit): cannot be checked here
    try:
        stacked = np.stack(
            np.broadcast_arrays(*[np.asarray(c, dtype=np.float64) for c in concrete])
        )
    except ValueError as e:
        raise ValueError(
            f"the weights have shapes that do not broadcast: {[np.shape(c) for c in concrete]}"
        ) from e
    if not np.all(np.isfinite(stacked)):
        raise ValueError("weights must be finite numbers; got NaN or inf")
    if np.any(stacked < -WEIGHT_TOL) or np.any(stacked > 1 + WEIGHT_TOL):
        raise ValueError(
            f"weights must lie in [0, 1]; got values from {stacked.min():.6g} to {stacked.max():.6g}"
        )
    total = stacked.sum(0)
    if np.any(np.abs(total - 1) > WEIGHT_TOL):
        worst = total.flat[np.argmax(np.abs(total - 1))]
        raise ValueError(
            f"weights must sum to 1 (tolerance {WEIGHT_TOL}); they sum to {worst:.8g}. "
            "Normalise them, e.g. [lam, 1 - lam]."
        )


def _project_onto_simplex(backend: PoolingBackend, weights: Sequence[Array]) -> list[Array]:
    """Weights clipped at 0 and renormalised: inside the tolerance a weight of
    -5e-6 is still negative, and on a member with concentration 1e6 it would
    make the pooled Gamma's concentration -5."""
    clipped = [backend.clip_at_zero(w) for w in weights]
    total = sum(clipped[1:], clipped[0])
    return [c / total for c in clipped]


class _WeightedSum(_Combiner):
    def __init__(self, backend: PoolingBackend, weights: Sequence[Array], batch_ndim: int) -> None:
        self.backend = backend
        self.weights = weights
        self.batch_ndim = batch_ndim

    def member(self, k: int) -> str:
        return f"member {k}"

    def _weight(self, w: Array, level_ndim: int, rank: int) -> Array:
        # Weights broadcast against the top-level batch shape; pad them on the
        # right for batch dims added by Independent layers and event dims.
        trailing = (level_ndim - self.batch_ndim) + rank
        shape = self.backend.shape(w)
        return self.backend.reshape(w, tuple(shape) + (1,) * trailing) if trailing and shape else w

    def terms(self, arrays: Sequence[Array], rank: int) -> list[tuple[Array, Array]]:
        level_ndim = len(self.backend.shape(arrays[0])) - rank
        return [
            (self.backend.as_array(self._weight(w, level_ndim, rank), like=a), a)
            for w, a in zip(self.weights, arrays)
        ]

    def combine(self, arrays: Sequence[Array], rank: int) -> Array:
        return masked_weighted_sum(self.backend.ops, self.terms(arrays, rank))

    def combine_masks(self, masks: Sequence[Array], batch_shape: tuple[int, ...]) -> Array:
        out = masks[0]
        for m in masks[1:]:
            out = self.backend.logical_and(out, m)
        return out

    def check_fixed(self, name: str, values: Sequence[Array], batch_shape: tuple[int, ...]) -> None:
        ref = self.backend.to_numpy(values[0])
        for v in values[1:]:
            other = self.backend.to_numpy(v)
            if ref is None or other is None:
                continue
            if not _equal_within_rounding(ref, other):
                raise ValueError(
                    f"log-linear pooling needs equal {name} across the pooled distributions "
                    f"(it is not pooled); got {ref} and {other}"
                )


def _equal_within_rounding(a: np.typing.ArrayLike, b: np.typing.ArrayLike) -> bool:
    """Equal up to FIXED_PARAM_ULPS of the coarser dtype; whole numbers exactly."""
    a, b = np.asarray(a), np.asarray(b)
    try:
        a, b = np.broadcast_arrays(a, b)
    except ValueError:
        return False
    floats = [x.dtype for x in (a, b) if np.issubdtype(x.dtype, np.floating)]
    if not floats:
        return bool(np.array_equal(a, b))
    eps = max(np.finfo(dt).eps for dt in floats)
    close = np.isclose(a, b, rtol=FIXED_PARAM_ULPS * eps, atol=0.0)
    # whole counts compare exactly: in float32 8 ulps of 2e6 span more than one count
    whole = (np.round(a) == a) & (np.round(b) == b)
    return bool(np.all(np.where(whole, a == b, close)))


def log_linear_pool(
    backend: PoolingBackend, dists: Sequence[Distribution], weights: Sequence[Array]
) -> Distribution:
    dists = list(dists)
    weights = list(weights)
    if len(dists) < 2:
        raise ValueError(f"log_linear_pool needs at least 2 distributions, got {len(dists)}")
    nodes = [decompose(backend, d) for d in dists]
    _same_structure(backend, nodes)
    _check_event_shapes(dists)
    like = backend.first_param(nodes[0])
    _check_precision(backend, dists, like)
    _check_weights(backend, weights, len(dists))
    weights = _project_onto_simplex(backend, [backend.as_weight(w, like) for w in weights])
    batch_shape = _broadcast_shapes(
        *[tuple(d.batch_shape) for d in dists], *[backend.shape(w) for w in weights]
    )
    return _pool_node(backend, nodes, batch_shape, _WeightedSum(backend, weights, len(batch_shape)))


# ---------------------------------------------------------------------------
# pool_pairs


class _PairSum(_Combiner):
    """``lam * a + (1 - lam) * a[partner]`` along one batch dim."""

    def __init__(
        self,
        backend: PoolingBackend,
        lam: Array,
        partner: Partner | Array,
        dim: int,
        batch_ndim: int,
        careful: bool,
    ) -> None:
        self.backend = backend
        self.lam = lam
        self.partner = partner
        self.dim = dim  # negative, relative to the top-level batch shape
        self.batch_ndim = batch_ndim
        self.careful = careful

    def member(self, k: int) -> str:
        return "the distribution"

    def _axis(self, level_ndim: int, rank: int) -> int:
        return self.dim - (level_ndim - self.batch_ndim) - rank

    def _pair(self, a: Array, rank: int) -> tuple[Array, Array, Array]:
        """``(lam, a, partner's a)``, ``lam`` shaped to broadcast against ``a``."""
        level_ndim = len(self.backend.shape(a)) - rank
        axis = self._axis(level_ndim, rank)
        other = take_partner(self.backend, a, self.partner, axis)
        lam = self.lam
        if self.backend.shape(lam):
            # one weight per example along the pairing dim: (n,) -> (n, 1, ..., 1)
            lam = self.backend.reshape(lam, (-1,) + (1,) * (-axis - 1))
        return lam, a, other

    def terms(self, arrays: Sequence[Array], rank: int) -> list[tuple[Array, Array]]:
        (a,) = arrays
        lam, a, other = self._pair(a, rank)
        lam = self.backend.as_array(lam, like=a)
        return [(lam, a), (1 - lam, other)]

    def combine(self, arrays: Sequence[Array], rank: int) -> Array:
        if self.careful:
            return masked_weighted_sum(self.backend.ops, self.terms(arrays, rank))
        lam, a, other = self._pair(arrays[0], rank)
        # lam * a + (1 - lam) * other as one fused op
        return self.backend.lerp(other, a, lam)

    def combine_masks(self, masks: Sequence[Array], batch_shape: tuple[int, ...]) -> Array:
        (m,) = masks
        axis = self.dim - (len(batch_shape) - self.batch_ndim)
        return self.backend.logical_and(m, take_partner(self.backend, m, self.partner, axis))

    def check_fixed(self, name: str, values: Sequence[Array], batch_shape: tuple[int, ...]) -> None:
        (v,) = values
        concrete = self.backend.to_numpy(v)
        if concrete is None or np.ndim(concrete) == 0:
            return
        full = np.broadcast_to(
            concrete,
            tuple(batch_shape)[len(batch_shape) - np.ndim(concrete) :]
            if np.ndim(concrete) <= len(batch_shape)
            else np.shape(concrete),
        )
        axis = self.dim - (len(batch_shape) - self.batch_ndim)
        if -axis > full.ndim:
            return  # constant along the pairing dim
        partner = _partner_numpy(self.backend, self.partner)
        if partner is None:
            return
        if full.shape[axis] != 1 and not _equal_within_rounding(
            full, np.take(full, partner, axis=axis)
        ):
            raise ValueError(
                f"pool_pairs needs equal {name} within every pair (it is not pooled); "
                f"pair elements with the same {name}, or use a family without it"
            )


def normalise_dim(dim: int, batch_shape: Sequence[int]) -> int:
    ndim = len(batch_shape)
    if not -ndim <= dim < max(ndim, 1) or ndim == 0:
        raise ValueError(
            f"dim={dim} is not a batch dim of a distribution with batch_shape {tuple(batch_shape)}; "
            "pairs are formed along a batch dim (the plate's dim)"
        )
    return dim - ndim if dim >= 0 else dim


def check_pairing(
    backend: PoolingBackend, lam: Array, partner: Partner | Array, n: int, *, permutation: bool
) -> None:
    """Validate a concrete mixing weight and partner index (skipped when traced)."""
    if n < 2:
        raise ValueError(
            f"cannot pair examples in a batch of size {n}: mixup needs at least 2 examples "
            "along the pairing dim (use a larger batch, or leave the model unwrapped)"
        )
    lam_np = backend.to_numpy(lam)
    if lam_np is not None:
        lam_np = np.asarray(lam_np, dtype=np.float64)
        if lam_np.ndim > 1 or (lam_np.ndim == 1 and lam_np.shape[0] != n):
            raise ValueError(
                f"lam must be a scalar or have one value per example (shape ({n},)); got shape {lam_np.shape}"
            )
        if not np.all(np.isfinite(lam_np)) or np.any(lam_np < 0) or np.any(lam_np > 1):
            raise ValueError(f"lam must lie in [0, 1]; got {lam_np}")
    shape = _partner_shape(backend, partner)
    if len(shape) != 1 or shape[0] != n:
        raise ValueError(
            f"perm must be a 1-D index of length {n} (the size of the pairing dim); got shape {tuple(shape)}"
        )
    p = _partner_numpy(backend, partner)
    if p is None:
        return
    if not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"perm must hold integer indices; got dtype {p.dtype}")
    if permutation and not np.array_equal(np.sort(p), np.arange(n)):
        raise ValueError(
            f"perm must be a permutation of 0..{n - 1} (each index once); got {p.tolist()[:20]}"
        )
    if not permutation and (p.min() < 0 or p.max() >= n):
        raise ValueError(f"partner indices must lie in 0..{n - 1}")


def pool_pairs(
    backend: PoolingBackend,
    d: Distribution,
    lam: Array,
    perm: Partner | Array,
    dim: int = -1,
    *,
    validate: bool = True,
) -> Distribution:
    if not validate and dim < 0:
        # The handlers' hot path: inputs already checked, dim a plate's (negative).
        family = backend.lookup(d)
        if family is not None and family.pools_naturals:
            return _pair_leaf(backend, d, family, lam, perm, dim)
    batch_shape = tuple(d.batch_shape)
    dim = normalise_dim(dim, batch_shape)
    node = decompose(backend, d)
    n = batch_shape[dim]
    like = backend.first_param(node)
    if validate:
        _check_precision(backend, [d], like)
    lam = backend.as_weight(lam, like)
    if type(perm) is not Partner:
        perm = backend.as_index(perm)
    if validate:
        check_pairing(backend, lam, perm, n, permutation=False)
    combiner = _PairSum(backend, lam, perm, dim, len(batch_shape), careful=validate)
    return _pool_node(backend, [node], batch_shape, combiner)


def _pair_leaf(
    backend: PoolingBackend,
    d: Distribution,
    family: Family,
    lam: Array,
    partner: Partner | Array,
    dim: int,
) -> Distribution:
    """pool_pairs for an unwrapped distribution, with as little Python as possible
    (this runs at every step of every handler that pools)."""
    batch_shape = tuple(d.batch_shape)
    params = []
    for name, rank in zip(family.params, family.param_event_dims):
        p = backend.param(d, name)
        if rank:
            shape = backend.shape(p)
            params.append(backend.broadcast_to(p, batch_shape + shape[len(shape) - rank :]))
        else:
            params.append(backend.broadcast_to(p, batch_shape))
    lam = backend.as_weight(lam, params[0])
    per_example = bool(backend.shape(lam))
    to_natural = family.to_natural
    assert to_natural is not None  # pools_naturals: the family has no pool of its own
    pooled = []
    for eta, rank in zip(to_natural(backend.ops, *params), family.natural_event_dims):
        if family.infinite_naturals:
            # a masked class (logit -inf), a rate 0 (log -inf) stays impossible; 0 * -inf is NaN
            eta = backend.ops.clip_to_finite(eta)
        axis = dim - rank
        weight = backend.reshape(lam, (-1,) + (1,) * (-axis - 1)) if per_example else lam
        pooled.append(backend.lerp(take_partner(backend, eta, partner, axis), eta, weight))
    return backend.construct_pooled(d, family, pooled)
