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

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .families import FAMILY_BY_CLASS_NAME, Family

#: The wrapper layers pooling sees through, and the attribute holding what each wraps.
WRAPPER_KINDS = ("independent", "expanded", "masked", "transformed")


class PoolingBackend:
    """A library's distributions as the pooling engine sees them.

    :param classes: ``{distribution class: (family, class of the pooled result)}``.
    :param wrappers: ``{wrapper class: kind}`` with kinds from :data:`WRAPPER_KINDS`.
    """

    name = "?"
    ops: Any = None

    def __init__(self, classes: dict[type, tuple[Family, Callable]], wrappers: dict[type, str]):
        self._table = dict(classes)
        self._wrappers = dict(wrappers)

    # --- the class table -------------------------------------------------------
    def register(self, cls: type, family_name: str, constructor: Callable | None = None) -> None:
        """Declare that instances of ``cls`` belong to ``family_name`` and are
        rebuilt with ``constructor`` (default ``cls``) from its parameters."""
        try:
            family = FAMILY_BY_CLASS_NAME[family_name]
        except KeyError:
            raise ValueError(
                f"unknown family {family_name!r}; known: {', '.join(sorted(FAMILY_BY_CLASS_NAME))}"
            ) from None
        self._table[cls] = (family, constructor or cls)

    def lookup(self, d) -> Family | None:
        entry = self._table.get(type(d))
        return None if entry is None else entry[0]

    def supported_names(self) -> Iterable[str]:
        return sorted({f.name for f, _ in self._table.values()})

    #: keyword arguments of every constructor call (torch: no validation of pooled parameters)
    build_kwargs: dict[str, Any] = {}

    def construct(self, like, family: Family, kwargs: dict):
        """``like``'s result class built from ``kwargs``."""
        return self._table[type(like)][1](**kwargs, **self.build_kwargs)

    def construct_pooled(self, like, family: Family, naturals):
        """The handlers' pooled distribution, from its natural parameters (a
        family without fixed parameters). A backend may keep the natural form
        where that is cheaper to score (the torch backend's Normal)."""
        return self.construct(like, family, family.from_natural(self.ops, *naturals))

    # the wrapper layers, rebuilt around a pooled child (same class as the input's)
    @staticmethod
    def independent(child, n, like):
        return type(like)(child, n, validate_args=False)

    @staticmethod
    def masked(child, mask, like):
        return type(like)(child, mask)

    @staticmethod
    def transformed(child, transforms, like):
        return type(like)(child, transforms, validate_args=False)

    # --- structure ---------------------------------------------------------------
    def unwrap(self, d):
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
    def same_transforms(a, b) -> bool:
        return len(a) == len(b) and all(x == y for x, y in zip(a, b))

    def param(self, d, name: str):
        return getattr(d, name)

    def fixed_param(self, d, name: str):
        return getattr(d, name)

    def first_param(self, node):
        """The first parameter of a decomposed distribution's leaf (for dtype and device)."""
        while node.child is not None:
            node = node.child
        return self.param(node.dist, node.family.params[0])


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
    def from_table(self, table, n: int) -> Any: ...
    def normal(self, like) -> Any: ...
    def uniform(self, n: int, like) -> Any: ...  # n uniforms on [0, 1) in like's floating dtype
    def fixed_weight(self, lam) -> Any: ...
    def cast_weight(self, lam, like) -> Any: ...


class Effects(Protocol):
    """A library's effect system, as the handler core uses it."""

    backend: PoolingBackend
    plate_example: str

    def random_source(self, options) -> RandomSource: ...
    def frames(
        self, msg
    ) -> list: ...  # plates a site is in (name, dim, size), particle plates excluded
    def plate_depth(self, msg) -> int: ...  # how many batch dims the enclosing plates (all) span
    def size(self, n) -> int: ...
    def carries_likelihood(self, msg) -> bool: ...  # not deterministic / factor / masked out
    def split_mask(self, msg) -> tuple[Any, Any]: ...  # (unmasked fn, batch mask or None)
    def remask(self, fn, mask) -> Any: ...
    def conditioned_inside(self, messenger, msg) -> bool: ...
    def replayed_infer(self, messenger, name: str) -> dict | None: ...
    def in_mcmc(self) -> bool: ...
    def runs_as_guide(
        self, messenger
    ) -> bool: ...  # an inference routine runs the wrapped fn as its guide
    def inference_conditions(
        self,
    ) -> bool: ...  # the library's own inference observes latents (MCMC, Predictive)
    def enumerated(self, msg) -> bool: ...  # a latent whose value the ELBO / MCMC enumerates
    def staging(self) -> bool: ...  # inside a compiled trace (torch.jit, jax.jit)
    def rsample(
        self, msg, dist, index: int
    ) -> Any: ...  # draw number index of an embed layer's distribution
    def is_real_support(self, support) -> bool: ...
    def paired_target(self, base, lam, partner, dim, mask) -> Any: ...
    def soft_label_target(self, base, lam, partner, dim, beta, kind, mask) -> Any: ...
