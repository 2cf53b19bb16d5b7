"""What an observed site is scored on under a handler: the choice of target,
and the scoring itself, written once against the backend's array operations.

- ``"mixed"``, continuous families: the site's value becomes
  ``lam * y_i + (1 - lam) * y_partner(i)`` (+ N(0, beta) jitter): :func:`mix_values`.
- ``"expected"``: ``lam * log p(y_i) + (1 - lam) * log p(y_partner(i))`` under each
  example's (pooled) density: :func:`paired_log_prob`.
- ``"mixed"``, class labels: the cross-entropy against the log-linear pool of
  beta-smoothed one-hot labels (paper section 3.2), in closed form (the
  expectation over the pooled label, not one draw of it): :func:`soft_label_log_prob`.

The backends wrap the last two in distributions (:func:`target_classes` on
each backend's shell, in its ``distributions`` module) so that the libraries'
ELBOs score them as usual.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._types import Array, Distribution
from .families import Family
from .pairing import Partner
from .pooling import take_partner

if TYPE_CHECKING:
    from .backend import PoolingBackend


def resolve_target(
    site: str,
    family: Family | None,
    is_discrete: bool,
    real_support: bool,
    target: str | None,
    beta: float,
) -> str:
    """The target an observed site is scored on.

    Default: "mixed" (score at lam*y_i + (1-lam)*y_j) for continuous families
    whose support is convex; "expected" (lam*log p(y_i) + (1-lam)*log p(y_j))
    for counts, classes and angles, where the mixed value leaves the support.
    For classification families "mixed" means the paper's log-linear pool of
    beta-smoothed labels, which needs beta > 0. For other families beta is the
    variance of Gaussian jitter on the mixed value, which only an unbounded
    support (``real_support``) can take.
    """
    classification = family is not None and family.classification
    convex = family.convex_support if family is not None else not is_discrete
    chosen = target or ("expected" if classification or not convex else "mixed")
    name = family.name if family is not None else "this distribution"
    if chosen == "mixed":
        if classification and not beta > 0:
            raise ValueError(
                f"site {site!r}: target='mixed' for class labels pools beta-smoothed labels "
                "(paper section 3.2); give beta > 0 (the paper uses 0.01) or target='expected'"
            )
        if not classification and not convex:
            raise ValueError(
                f"site {site!r}: target='mixed' would score {name} at lam*y_i + (1-lam)*y_j, "
                "which is outside its support; use target='expected' "
                "(lam*log p(y_i) + (1-lam)*log p(y_j))"
            )
        if not classification and beta > 0 and not real_support:
            raise ValueError(
                f"site {site!r}: beta={beta} adds N(0, beta) jitter to the mixed target, which can "
                f"leave the bounded support of {name}; use beta=0 (or target='expected')"
            )
    return chosen


def along(backend: PoolingBackend, weight: Array, dim: int) -> Array:
    """A per-example ``(n,)`` weight shaped to broadcast along ``dim`` (negative);
    scalars pass through."""
    if not backend.shape(weight):
        return weight
    return backend.reshape(weight, (-1,) + (1,) * (-dim - 1))


def mix_values(
    backend: PoolingBackend,
    value: Array,
    lam: Array,
    partner: Partner | Array,
    axis: int,
    beta: float,
    noise: Callable[[Array], Array] | None = None,
) -> Array:
    """``lam * v + (1 - lam) * v_partner`` along ``axis``, plus ``N(0, beta)``
    jitter from ``noise(like)`` when ``beta > 0``."""
    value = backend.ops.floating(value)
    mixed = backend.lerp(
        take_partner(backend, value, partner, axis), value, along(backend, lam, axis)
    )
    if beta > 0:
        assert noise is not None, "beta > 0 jitters the mixed value: pass noise="
        mixed = mixed + math.sqrt(beta) * noise(mixed)
    return mixed


def _zero_where_not(backend: PoolingBackend, mask: Array, x: Array) -> Array:
    return backend.ops.where(mask, x, 0.0)


def paired_log_prob(
    backend: PoolingBackend,
    base: Distribution,
    value: Array,
    lam: Array,
    partner: Partner | Array,
    dim: int,
    mask: Array | None = None,
) -> Array:
    """``lam * log p_i(y_i) + (1 - lam) * log p_i(y_partner(i))`` (METHOD.md section 2,
    Assumption 4.2); ``mask`` (batch-shaped) drops unobserved members."""
    lp_self = base.log_prob(value)
    lp_partner = base.log_prob(take_partner(backend, value, partner, dim - len(base.event_shape)))
    if mask is not None:
        lp_self = _zero_where_not(backend, mask, lp_self)
        lp_partner = _zero_where_not(backend, take_partner(backend, mask, partner, dim), lp_partner)
    # an impossible value (log p = -inf) of a member with weight 0 must not make 0 * -inf = NaN
    clip = backend.ops.clip_to_finite
    return backend.lerp(clip(lp_partner), clip(lp_self), along(backend, lam, dim))


def soft_label_log_prob(
    backend: PoolingBackend,
    base: Distribution,
    value: Array,
    lam: Array,
    partner: Partner | Array,
    dim: int,
    beta: float,
    kind: str,
    mask: Array | None = None,
) -> Array:
    """Cross-entropy of ``base`` against the log-linear pool of the pair's
    beta-smoothed labels. ``kind`` says how a value encodes its class
    ("categorical": an index, "one_hot": a one-hot vector, "bernoulli": 0/1)."""
    ops = backend.ops
    # Class labels may sit under Independent (``.to_event``): score the leaf,
    # then sum its reinterpreted dims.
    leaf, extra = base, 0
    layer = backend.unwrap(leaf)
    while layer is not None and layer[0] == "independent":
        extra += layer[2]
        leaf = layer[1]
        layer = backend.unwrap(leaf)
    logits = backend.param(leaf, "logits")
    if kind == "bernoulli":
        value = ops.cast_like(value, logits)
        one_hot = ops.stack([1 - value, value], -1)
        log_p = ops.stack([ops.logsigmoid(-logits), ops.logsigmoid(logits)], -1)
    else:
        log_p = ops.log_softmax(logits)
        if kind == "categorical":
            one_hot = ops.one_hot(value, backend.shape(log_p)[-1], log_p)
        else:
            one_hot = ops.cast_like(value, log_p)
    axis = dim - extra - 1  # the class dim is rightmost
    log_s = ops.log(one_hot + beta)
    pooled = backend.lerp(
        take_partner(backend, log_s, partner, axis), log_s, along(backend, lam, axis)
    )
    lp = ops.sum_rightmost(ops.softmax(pooled) * log_p, 1 + extra)
    if mask is not None:
        both = backend.logical_and(mask, take_partner(backend, mask, partner, dim))
        lp = _zero_where_not(backend, both, lp)
    return lp


def target_classes(shell: type, backend: PoolingBackend, module: str) -> tuple[type, type]:
    """A backend's two target distributions, ``(PairedTarget, SoftLabelTarget)``,
    built on its pair-score ``shell`` (a distribution class holding ``base``,
    ``lam``, ``partner``, ``dim`` and ``pair_mask``)."""

    class PairedTarget(shell):
        """The expected target ``lam * log p_i(y_i) + (1 - lam) * log p_i(y_partner(i))``."""

        def log_prob(self, value: Array) -> Array:
            return paired_log_prob(
                backend, self.base, value, self.lam, self.partner, self.dim, self.pair_mask
            )

    class SoftLabelTarget(shell):
        """Cross-entropy against the log-linear pool of the pair's beta-smoothed labels."""

        pytree_aux_fields = ("beta", "kind")  # NumPyro: static under jax transformations

        def __init__(
            self,
            base: Distribution,
            lam: Array,
            partner: Partner | Array,
            dim: int,
            beta: float,
            kind: str,
            mask: Array | None = None,
        ) -> None:
            super().__init__(base, lam, partner, dim, mask)
            self.beta, self.kind = beta, kind

        def log_prob(self, value: Array) -> Array:
            return soft_label_log_prob(
                backend,
                self.base,
                value,
                self.lam,
                self.partner,
                self.dim,
                self.beta,
                self.kind,
                self.pair_mask,
            )

    for cls in (PairedTarget, SoftLabelTarget):
        cls.__module__, cls.__qualname__ = module, cls.__name__  # picklable as the adapter's names
    return PairedTarget, SoftLabelTarget
