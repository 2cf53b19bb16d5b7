"""The handler options, once: a frozen dataclass validated where it is created.

Both backends' ``probmix`` and ``mixup`` (and their messengers) take exactly
these keyword options; their signatures and parameter docs are generated from
:data:`OPTION_DOCS`, so an option is added or documented in this module only.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .errors import MixupUsageError
from .pairing import PartnerTable, ShardLocalPairing

TARGETS = ("mixed", "expected")
PAIRINGS = ("permutation", "shift")
POOLINGS = ("log-linear", "linear")

#: Each option's documentation, in signature order (used for both backends'
#: docstrings; ``{key}`` is filled in by the backend's wording).
OPTION_DOCS = {
    "alpha": ":param float alpha: ``lam ~ Beta(alpha, alpha)``; ``alpha=0`` is ERM (``lam = 1``).",
    "lam": ":param lam: a fixed weight in ``[0, 1]`` (scalar or one per example) instead of a draw.",
    "perm": ":param perm: a fixed permutation of the batch (integers) instead of a random one.",
    "at": ":param str at: {at}",
    "sites": ":param sites: names of the observed sites to treat (default: every observed site with a likelihood).",
    "plate": ":param str plate: the plate over examples (default: the one plate a site is in).",
    "target": (
        ':param str target: ``"mixed"`` (score at ``lam*y_i + (1-lam)*y_j``) or ``"expected"``\n'
        '    (``lam*log p(y_i) + (1-lam)*log p(y_j)``); default per family: "mixed" for\n'
        '    continuous families with convex support, "expected" for counts, classes and\n'
        '    angles. For class labels "mixed" scores the log-linear pool of\n'
        "    ``beta``-smoothed labels (the paper's choice)."
    ),
    "beta": (
        ":param float beta: variance of the Gaussian jitter added to the mixed target\n"
        "    (regression), or the label-smoothing constant (classification)."
    ),
    "per_example": ":param bool per_example: one ``lam`` per example instead of one per batch.",
    "pairing": (
        ':param pairing: ``"permutation"`` (a uniform random permutation, default),\n'
        '    ``"shift"`` (a random cyclic shift: the same pair marginals, cheaper), a\n'
        "    :class:`~pyro_mixup.pairing.PartnerTable` (LocK, C-Mixup), or\n"
        "    :class:`~pyro_mixup.pairing.ShardLocalPairing` ``(k)`` (a random permutation within\n"
        "    each of ``k`` contiguous shards of the batch: no partner crosses a device when the\n"
        "    batch is sharded over ``k`` devices; the batch must split into ``k`` equal shards)."
    ),
    "pooling": (
        ":param str pooling: how ``probmix(at=...)`` fuses a pair's embedding densities:\n"
        '    ``"log-linear"`` (the paper\'s pool, default) or ``"linear"`` (``z`` drawn from\n'
        "    the ``lam``-mixture of the two densities; the paper's ablation). At embed layers only."
    ),
    "rng_key": ":param rng_key: {rng_key}",
}


def _number(name: str, value: Any, minimum: float = 0.0) -> float:
    """A finite float >= minimum from a Python, NumPy, torch or JAX scalar."""
    shape = getattr(value, "shape", None)
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) or (shape is not None and tuple(shape) == ())
    ):
        raise ValueError(f"{name} must be a number >= {minimum:g}; got {value!r}")
    try:
        out = float(value)
    except Exception as e:  # a traced JAX value: options are fixed when the handler is made
        raise ValueError(
            f"{name} must be a concrete number, not a traced value; got {value!r}"
        ) from e
    if not math.isfinite(out) or out < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}; got {value!r}")
    return out


def _flag(name: str, value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False; got {value!r}")


def _name(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{name} must be a site or plate name (a string) or None; got {value!r}")


@dataclass(frozen=True)
class MixOptions:
    """The options of a mixing handler, validated on creation.

    ``arrays`` is the backend's array interface (see
    :class:`pyro_mixup.core.backend.PoolingBackend`): it converts ``lam`` and
    ``perm`` to the backend's arrays and checks ``rng_key``.
    """

    alpha: float = 1.0
    lam: Any = None
    perm: Any = None
    at: str | None = None
    sites: frozenset[str] | None = None
    plate: str | None = None
    target: str | None = None
    beta: float = 0.0
    per_example: bool = False
    pairing: Any = "permutation"
    pooling: str = "log-linear"
    rng_key: Any = None
    #: the backend (a :class:`~pyro_mixup.core.backend.PoolingBackend`; ``Any`` to the type
    #: checker because the field's default is None, which the adapters never leave it)
    arrays: Any = field(default=None, compare=False, repr=False)
    #: ``perm`` as a cyclic shift when it is one (found on a concrete ``perm``):
    #: a partner by shift is a roll, far cheaper than a gather and its scatter-add gradient.
    perm_shift: int | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        put = object.__setattr__.__get__(self)
        put("alpha", _number("alpha (lam ~ Beta(alpha, alpha))", self.alpha))
        put("beta", _number("beta", self.beta))
        put("per_example", _flag("per_example", self.per_example))
        put("at", _name("at", self.at))
        put("plate", _name("plate", self.plate))
        if self.target is not None and self.target not in TARGETS:
            raise ValueError(
                f"target must be one of {TARGETS} or None (per-family default); got {self.target!r}"
            )
        if self.sites is not None:
            if isinstance(self.sites, str) or not all(isinstance(s, str) for s in self.sites):
                raise ValueError(f"sites must be a list of site names; got {self.sites!r}")
            put("sites", frozenset(self.sites))
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {self.pooling!r}")
        if isinstance(self.pairing, str):
            if self.pairing not in PAIRINGS:
                raise ValueError(
                    f"pairing must be one of {PAIRINGS}, a pyro_mixup.pairing.PartnerTable or a "
                    f"ShardLocalPairing; got {self.pairing!r}"
                )
        elif isinstance(self.pairing, ShardLocalPairing):
            pass  # a fixed perm= is checked to stay within its shards (in _fixed_perm)
        elif not isinstance(self.pairing, PartnerTable):
            raise ValueError(
                f"pairing must be one of {PAIRINGS}, a PartnerTable or a ShardLocalPairing; "
                f"got {self.pairing!r}"
            )
        elif self.perm is not None:
            raise ValueError("give either perm= or a pairing table, not both")
        self.arrays.check_rng_key(self.rng_key)
        if self.lam is not None:
            put("lam", self._fixed_lam(self.lam))
        if self.perm is not None:
            put("perm", self._fixed_perm(self.perm))
        lam_n = self._length(self.lam)
        if self.perm is not None and lam_n is not None and lam_n != self._length(self.perm):
            raise ValueError(
                f"lam has {lam_n} values but perm has length {self._length(self.perm)}"
            )

    def _length(self, array: Any) -> int | None:
        shape = () if array is None else tuple(self.arrays.shape(array))
        return shape[0] if shape else None

    def _fixed_lam(self, lam: Any) -> Any:
        lam = self.arrays.weight_array(lam)
        shape = tuple(self.arrays.shape(lam))
        if len(shape) > 1:
            raise ValueError(
                f"lam must be a scalar or have one value per example; got shape {shape}"
            )
        concrete = self.arrays.to_numpy(lam)
        if concrete is not None:
            values = np.asarray(concrete, dtype=np.float64)
            if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
                raise ValueError(f"lam must lie in [0, 1]; got {values}")
        return lam

    def _fixed_perm(self, perm: Any) -> Any:
        # read a constant before converting it: inside jax.jit the conversion is traced
        given = self.arrays.to_numpy(perm)
        perm = self.arrays.index_array(perm)  # refuses non-integer dtypes
        shape = tuple(self.arrays.shape(perm))
        if len(shape) != 1:
            raise ValueError(f"perm must be a 1-D permutation of the batch; got shape {shape}")
        concrete = given if given is not None else self.arrays.to_numpy(perm)
        if concrete is None and isinstance(self.pairing, ShardLocalPairing):
            # a traced perm cannot be checked to stay in its shards, and the shard-by-shard
            # gather would read out of its block (NaN or a wrapped index) rather than fail
            raise MixupUsageError(
                "perm= with pairing=ShardLocalPairing(...) must be concrete (a NumPy array or a "
                "list), not traced inside jax.jit: pass it as a constant, or drop pairing= "
                "(a fixed perm already says who pairs with whom)"
            )
        if concrete is not None:
            if not np.array_equal(np.sort(concrete), np.arange(shape[0])):
                raise ValueError(
                    f"perm must be a permutation of 0..{shape[0] - 1} (each index once); got {concrete.tolist()[:20]}"
                )
            if isinstance(self.pairing, ShardLocalPairing):
                self.pairing.check(concrete)
                return perm  # applied shard by shard (a shift would cross shards)
            steps = (np.asarray(concrete) - np.arange(shape[0])) % max(shape[0], 1)
            if steps.size and np.all(steps == steps[0]):
                object.__setattr__(self, "perm_shift", int(steps[0]))
        return perm

    def same_draws(self, other: MixOptions) -> bool:
        """Whether two handlers draw from the same distribution (so one may
        reuse the other's draw): equal options that shape the draws."""

        def same(a: Any, b: Any) -> bool:
            if a is b:
                return True
            if a is None or b is None:
                return False
            x, y = self.arrays.to_numpy(a), self.arrays.to_numpy(b)
            return x is not None and y is not None and np.array_equal(x, y)

        return (
            (self.alpha, self.per_example, self.beta)
            == (other.alpha, other.per_example, other.beta)
            and (self.pairing is other.pairing or self.pairing == other.pairing)
            and same(self.lam, other.lam)
            and same(self.perm, other.perm)
        )


#: The option names, in signature order.
OPTION_NAMES = tuple(f.name for f in fields(MixOptions) if f.name != "arrays" and f.init)


def handler_signature(*, required_at: bool, with_rng_key: bool) -> inspect.Signature:
    """The signature ``(fn=None, *, alpha=1.0, ...)`` of a functional handler."""
    params = [inspect.Parameter("fn", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    for f in fields(MixOptions):
        if f.name == "arrays" or not f.init or (f.name == "rng_key" and not with_rng_key):
            continue
        default = inspect.Parameter.empty if (f.name == "at" and required_at) else f.default
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params)


def options_doc(*, at: str, rng_key: str | None) -> str:
    """The ``:param ...:`` lines of a functional handler's docstring."""
    lines = [":param fn: the model (or step function) to wrap; omit for ``with handler(...):``."]
    for name, text in OPTION_DOCS.items():
        if name == "rng_key" and rng_key is None:
            continue
        lines.append(text.format(at=at, rng_key=rng_key))
    return "\n".join(lines)
