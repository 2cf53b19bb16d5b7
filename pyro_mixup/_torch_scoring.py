"""What an observed site is scored on under a handler (torch / Pyro side).

- "mixed", continuous families: the site's value becomes
  ``lam * y_i + (1 - lam) * y_perm[i]`` (+ N(0, beta) jitter); no wrapper needed.
- "expected": :class:`PairedTarget`, ``lam * log p(y_i) + (1 - lam) * log p(y_perm[i])``
  under each example's (pooled) density.
- "mixed", classification: :class:`SoftLabelTarget`, the cross-entropy against the
  log-linear pool of beta-smoothed one-hot labels (paper section 3.2), in closed
  form (the expectation over the pooled label rather than one draw of it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import Independent


def along(t, dim):
    """Reshape a per-example ``(n,)`` weight to broadcast along ``dim`` (negative);
    scalars (floats, 0-d tensors) pass through."""
    if isinstance(t, float) or t.dim() == 0:
        return t
    return t.reshape((-1,) + (1,) * (-dim - 1))


def _weight(lam, like):
    return lam if isinstance(lam, float) or lam.dtype == like.dtype else lam.to(like.dtype)


def partner_of(value, perm, axis):
    return value.index_select(axis % value.dim(), perm)


class _PairScore(TorchDistribution):
    """Shared plumbing: a distribution that only scores observed values."""

    arg_constraints = {}
    has_rsample = False

    def __init__(self, base, lam, perm, dim, mask=None):
        self.base = base
        self.lam = lam
        self.perm = perm
        self.dim = dim  # negative, relative to batch_shape
        self.pair_mask = mask
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self):
        return self.base.support

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        # New dims come on the left (vectorised particles, enumeration): the
        # pairing dim counts from the right, so perm, dim and lam stay valid.
        batch_shape = torch.Size(batch_shape)
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.base = self.base.expand(batch_shape)
        if self.pair_mask is not None:
            new.pair_mask = self.pair_mask.expand(batch_shape)
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        return new

    def _value_axis(self):
        return self.dim - len(self.event_shape)


class PairedTarget(_PairScore):
    """Scores ``lam * log p_i(y_i) + (1 - lam) * log p_i(y_perm[i])``: the expected
    target of METHOD.md section 2 (Assumption 4.2)."""

    def log_prob(self, value):
        lp_self = self.base.log_prob(value)
        lp_partner = self.base.log_prob(partner_of(value, self.perm, self._value_axis()))
        if self.pair_mask is not None:
            # mask is broadcast to batch_shape by the handler
            lp_self = lp_self.masked_fill(~self.pair_mask, 0.0)
            lp_partner = lp_partner.masked_fill(~partner_of(self.pair_mask, self.perm, self.dim), 0.0)
        return torch.lerp(lp_partner, lp_self, _weight(along(self.lam, self.dim), lp_self))


class SoftLabelTarget(_PairScore):
    """Cross-entropy against the log-linear pool of beta-smoothed labels."""

    def __init__(self, base, lam, perm, dim, beta, kind, mask=None):
        super().__init__(base, lam, perm, dim, mask)
        self.beta = beta
        self.kind = kind  # "categorical", "one_hot" or "bernoulli"

    def log_prob(self, value):
        # Class labels may sit under Independent (``.to_event``): score the leaf,
        # then sum its reinterpreted dims.
        leaf, extra = self.base, 0
        while isinstance(leaf, Independent):
            extra += leaf.reinterpreted_batch_ndims
            leaf = leaf.base_dist
        if self.kind == "bernoulli":
            one_hot = torch.stack([1 - value, value], -1)
            log_p = torch.stack([F.logsigmoid(-leaf.logits), F.logsigmoid(leaf.logits)], -1)
        else:
            log_p = torch.log_softmax(leaf.logits, -1)
            if self.kind == "categorical":
                one_hot = F.one_hot(value.long(), log_p.shape[-1]).to(log_p.dtype)
            else:
                one_hot = value.to(log_p.dtype)
        axis = self.dim - extra - 1  # the class dim is rightmost
        log_s = torch.log(one_hot + self.beta)
        lam = along(self.lam, axis)
        log_s_partner = partner_of(log_s, self.perm, axis)
        soft = torch.softmax(log_s_partner + lam * (log_s - log_s_partner), -1)
        lp = (soft * log_p).sum(-1)
        if extra:
            lp = lp.sum(tuple(range(-extra, 0)))
        if self.pair_mask is not None:
            both = self.pair_mask & partner_of(self.pair_mask, self.perm, self.dim)
            lp = lp.masked_fill(~both, 0.0)
        return lp


def mix_values(value, lam, perm, axis, beta):
    mixed = torch.lerp(partner_of(value, perm, axis), value, _weight(along(lam, axis), value))
    if beta > 0:
        mixed = mixed + beta**0.5 * torch.randn_like(mixed)
    return mixed


def is_real_support(support):
    """Whether a support is all of R^d (Gaussian jitter cannot leave it)."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real
