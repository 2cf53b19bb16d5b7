"""What the core asks of a backend adapter, and the part of it that is the
same for torch and JAX.

- :class:`PoolingBackend`: the distribution classes of a library mapped to
  families (shared here), plus the array operations the pooling engine and
  the targets need (each backend's own: ``shape``, ``take``, ``roll``,
  ``lerp``, ... and an ``ops`` namespace for :mod:`pyro_mixup.core.families`
  and :mod:`pyro_mixup.core.targets`).
- :class:`RandomSource`: the elementary draws of a handler.
- :class:`Effects`: the hooks of a library's effect system the handler core uses.

The last two are :class:`typing.Protocol` classes: documentation and type
checking only. Nothing here imports torch or jax.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._types import Array, Distribution, Message
from .families import FAMILY_BY_CLASS_NAME, Family

if TYPE_CHECKING:
    import numpy as np

    from .options import MixOptions
    from .pairing import Partner, PartnerTable
    from .pooling import Node

#: The wrapper layers pooling sees through, and the attribute holding what each wraps.
WRAPPER_KINDS = ("independent", "expanded", "masked", "transformed")


class PoolingBackend:
    """A library's distributions as the pooling engine sees them.

    :param classes: ``{distribution class: (family, class of the pooled result)}``.
    :param wrappers: ``{wrapper class: kind}`` with kinds from :data:`WRAPPER_KINDS`.
    """

    name = "?"
    ops: Any = None

    def __init__(
        self,
        classes: dict[type, tuple[Family, Callable[..., Distribution]]],
        wrappers: dict[type, str],
    ) -> None:
        self._table = dict(classes)
        self._wrappers = dict(wrappers)

    # --- the class table -------------------------------------------------------
    def register(
        self, cls: type, family_name: str, constructor: Callable[..., Distribution] | None = None
    ) -> None:
        """Declare that instances of ``cls`` belong to ``family_name`` and are
        rebuilt with ``constructor`` (default ``cls``) from its parameters."""
        try:
            family = FAMILY_BY_CLASS_NAME[family_name]
        except KeyError:
            raise ValueError(
                f"unknown family {family_name!r}; known: {', '.join(sorted(FAMILY_BY_CLASS_NAME))}"
            ) from None
        self._table[cls] = (family, constructor or cls)

    def lookup(self, d: Distribution) -> Family | None:
        entry = self._table.get(type(d))
        return None if entry is None else entry[0]

    def supported_names(self) -> Iterable[str]:
        return sorted({f.name for f, _ in self._table.values()})

    #: keyword arguments of every constructor call (torch: no validation of pooled parameters)
    build_kwargs: dict[str, Any] = {}

    def construct(
        self, like: Distribution, family: Family, kwargs: dict[str, Array]
    ) -> Distribution:
        """``like``'s result class built from ``kwargs``."""
        return self._table[type(like)][1](**kwargs, **self.build_kwargs)

    def construct_pooled(
        self, like: Distribution, family: Family, naturals: Sequence[Array]
    ) -> Distribution:
        """The handlers' pooled distribution, from its natural parameters (a
        family without fixed parameters). A backend may keep the natural form
        where that is cheaper to score (the torch backend's Normal)."""
        from_natural = family.from_natural
        assert from_natural is not None  # only a family that pools its naturals gets here
        return self.construct(like, family, from_natural(self.ops, *naturals))

    # the wrapper layers, rebuilt around a pooled child (same class as the input's)
    @staticmethod
    def independent(child: Distribution, n: int, like: Distribution) -> Distribution:
        return type(like)(child, n, validate_args=False)

    @staticmethod
    def masked(child: Distribution, mask: Array, like: Distribution) -> Distribution:
        return type(like)(child, mask)

    @staticmethod
    def transformed(child: Distribution, transforms: list[Any], like: Distribution) -> Distribution:
        return type(like)(child, transforms, validate_args=False)

    # --- structure ---------------------------------------------------------------
    def unwrap(self, d: Distribution) -> tuple[str, Distribution, Any] | None:
        """``(kind, wrapped distribution, info)`` for a wrapper layer, else None."""
        kind = self._wrappers.get(type(d))
        if kind is None:
            return None
        if kind == "independent":
            return kind, d.base_dist, d.reinterpreted_batch_ndims
        if kind == "masked":
            return kind, d.base_dist, d._mask  # the libraries keep the mask there, unexposed
        if kind == "transformed":
            return kind, d.base_dist, list(d.transforms)
        return kind, d.base_dist, None

    @staticmethod
    def same_transforms(a: Sequence[Any], b: Sequence[Any]) -> bool:
        return len(a) == len(b) and all(x == y for x, y in zip(a, b))

    def param(self, d: Distribution, name: str) -> Array:
        return getattr(d, name)

    def fixed_param(self, d: Distribution, name: str) -> Array:
        return getattr(d, name)

    def take_local(self, x: Any, index: Any, axis: int, shards: int) -> Any:
        """``x`` gathered along ``axis`` by ``index``, a permutation that keeps each of
        ``shards`` contiguous blocks in place (:class:`~pyro_mixup.core.pairing.ShardLocalPairing`).
        By default a plain gather; a backend that shards arrays over devices gathers
        block by block instead, so that no row leaves its device."""
        return self.take(x, index, axis)

    def first_param(self, node: Node) -> Array:
        """The first parameter of a decomposed distribution's leaf (for dtype and device)."""
        while node.child is not None:
            node = node.child
        family = node.family
        assert family is not None  # decompose gives every leaf its family
        return self.param(node.dist, family.params[0])

    if TYPE_CHECKING:
        # The array operations each backend supplies (static methods of its subclass),
        # declared for the type checker only: this class implements none of them.
        @staticmethod
        def shape(x: Array) -> tuple[int, ...]: ...
        @staticmethod
        def broadcast_to(x: Array, shape: tuple[int, ...]) -> Array: ...
        @staticmethod
        def reshape(x: Array, shape: tuple[int, ...]) -> Array: ...
        @staticmethod
        def take(x: Array, index: Array, axis: int) -> Array: ...
        @staticmethod
        def roll(x: Array, shift: Array, axis: int) -> Array: ...
        @staticmethod
        def lerp(start: Array, end: Array, weight: Array) -> Array: ...
        @staticmethod
        def logical_and(a: Array, b: Array) -> Array: ...
        @staticmethod
        def as_bool(mask: Array, like: Array) -> Array: ...
        @staticmethod
        def as_weight(w: Array, like: Array) -> Array: ...
        @staticmethod
        def as_array(w: Array, like: Array) -> Array: ...
        @staticmethod
        def clip_at_zero(w: Array) -> Array: ...
        @staticmethod
        def dtype_name(x: Array) -> str: ...
        @staticmethod
        def as_index(index: Array) -> Array: ...
        @staticmethod
        def to_numpy(x: Array) -> np.ndarray | None: ...  # None: a traced value
        # the handler options' conversions (MixOptions.arrays is the backend)
        @staticmethod
        def weight_array(lam: Array) -> Array: ...
        @staticmethod
        def index_array(perm: Array) -> Array: ...
        @staticmethod
        def check_rng_key(key: Any) -> None: ...


class RandomSource(Protocol):
    """The elementary draws of a handler, in the backend's arrays.

    One source serves one handler; :meth:`begin` starts an entry (NumPyro
    takes a fresh key lazily after it).
    """

    def begin(self) -> None: ...
    def beta(self, alpha: float, n: int | None) -> Any: ...
    def ones(self, n: int | None) -> Any: ...
    def permutation(self, n: int) -> Any: ...
    def shift(self, n: int) -> Any: ...
    # a permutation of 0..n-1 that maps each of `shards` contiguous blocks onto itself
    def local_permutation(self, n: int, shards: int) -> Any: ...
    def from_table(self, table: PartnerTable, n: int) -> Any: ...
    def normal(self, like: Array) -> Any: ...
    # n uniforms on [0, 1) in like's floating dtype
    def uniform(self, n: int, like: Array) -> Any: ...
    def fixed_weight(self, lam: Array) -> Any: ...
    def cast_weight(self, lam: Array, like: Array) -> Any: ...


class Frame(Protocol):
    """A plate a site is in, as the libraries record it (their ``CondIndepStackFrame``).
    The frames :meth:`Effects.frames` hands over all have a ``dim``."""

    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def size(self) -> int: ...


class Effects(Protocol):
    """A library's effect system, as the handler core uses it."""

    @property
    def backend(self) -> PoolingBackend: ...
    # how a plate over examples is written in this library (for messages)
    @property
    def plate_example(self) -> str: ...

    def random_source(self, options: MixOptions) -> RandomSource: ...
    # plates a site is in (name, dim, size), particle plates excluded
    def frames(self, msg: Message) -> Sequence[Frame]: ...
    # how many batch dims the enclosing plates (all) span
    def plate_depth(self, msg: Message) -> int: ...
    def size(self, n: Any) -> int: ...
    # not deterministic / factor / masked out
    def carries_likelihood(self, msg: Message) -> bool: ...
    # (unmasked fn, batch mask or None)
    def split_mask(self, msg: Message) -> tuple[Distribution, Array | None]: ...
    def remask(self, fn: Distribution, mask: Array) -> Distribution: ...
    # messenger: what the adapter handed to MixingCore.enter (its own messenger)
    def conditioned_inside(self, messenger: Any, msg: Message) -> bool: ...
    def replayed_infer(self, messenger: Any, name: str) -> dict[str, Any] | None: ...
    def in_mcmc(self) -> bool: ...
    # an inference routine runs the wrapped fn as its guide
    def runs_as_guide(self, messenger: Any) -> bool: ...
    # the library's own inference observes latents (MCMC, Predictive)
    def inference_conditions(self) -> bool: ...
    # a latent whose value the ELBO / MCMC enumerates
    def enumerated(self, msg: Message) -> bool: ...
    # inside a compiled trace (torch.jit, jax.jit)
    def staging(self) -> bool: ...
    # draw number index of an embed layer's distribution
    def rsample(self, msg: Message, dist: Distribution, index: int) -> Array: ...
    def is_real_support(self, support: Any) -> bool: ...
    def paired_target(
        self, base: Distribution, lam: Array, partner: Partner, dim: int, mask: Array | None
    ) -> Distribution: ...
    def soft_label_target(
        self,
        base: Distribution,
        lam: Array,
        partner: Partner,
        dim: int,
        beta: float,
        kind: str,
        mask: Array | None,
    ) -> Distribution: ...
