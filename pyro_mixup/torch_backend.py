"""The torch / Pyro backend of the pooling engine: array operations and the
map from ``torch.distributions`` and ``pyro.distributions`` classes to families."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyro.distributions as pdist
import torch
import torch.distributions as tdist
import torch.nn.functional as F

from . import _engine
from .families import FAMILY_BY_CLASS_NAME, Family

ops = SimpleNamespace(
    rsqrt=torch.rsqrt,
    sqrt=torch.sqrt,
    log=torch.log,
    exp=torch.exp,
    expm1=torch.expm1,
    softplus=F.softplus,
    logsigmoid=F.logsigmoid,
    cos=torch.cos,
    sin=torch.sin,
    atan2=torch.atan2,
    matvec=lambda m, v: (m @ v.unsqueeze(-1)).squeeze(-1),
    cholesky=torch.linalg.cholesky,
    cho_solve=lambda tril, v: torch.cholesky_solve(v.unsqueeze(-1), tril).squeeze(-1),
)


class TorchBackend:
    name = "torch"
    ops = ops

    def __init__(self):
        self._table = {}  # class -> (family, constructor)
        for name, family in FAMILY_BY_CLASS_NAME.items():
            for module in (tdist, pdist):
                cls = getattr(module, name, None)
                if cls is not None:
                    self._table[cls] = (family, cls)
        # A low-rank Gaussian pools to a full-rank one (the low-rank structure is not closed under pooling).
        for module in (tdist, pdist):
            self._table[module.LowRankMultivariateNormal] = (
                FAMILY_BY_CLASS_NAME["MultivariateNormal"],
                module.MultivariateNormal,
            )

    # --- class table ------------------------------------------------------
    def register(self, cls, family: Family, constructor=None):
        self._table[cls] = (family, constructor or cls)

    def lookup(self, d):
        entry = self._table.get(type(d))
        return None if entry is None else entry[0]

    def supported_names(self):
        return sorted({f.name for f, _ in self._table.values()})

    def unwrap(self, d):
        t = type(d)
        if t in (tdist.Independent, pdist.Independent):
            return "independent", d.base_dist, d.reinterpreted_batch_ndims
        if t is pdist.torch_distribution.ExpandedDistribution:
            return "expanded", d.base_dist, None
        if t is pdist.torch_distribution.MaskedDistribution:
            return "masked", d.base_dist, d._mask
        if t in (tdist.TransformedDistribution, pdist.TransformedDistribution):
            return "transformed", d.base_dist, list(d.transforms)
        return None

    def same_transforms(self, a, b):
        return len(a) == len(b) and all(x == y for x, y in zip(a, b))

    # --- building ---------------------------------------------------------
    def param(self, d, name):
        return getattr(d, name)

    def fixed_param(self, d, name):
        return getattr(d, name)

    def construct(self, like, family, kwargs):
        ctor = self._table[type(like)][1]
        return ctor(**kwargs, validate_args=False)

    def independent(self, child, n, like):
        return pdist.Independent(child, n, validate_args=False) if isinstance(
            child, pdist.torch_distribution.TorchDistributionMixin
        ) else tdist.Independent(child, n, validate_args=False)

    def masked(self, child, mask):
        return pdist.torch_distribution.MaskedDistribution(child, mask)

    def transformed(self, child, transforms, like):
        return type(like)(child, transforms, validate_args=False)

    def first_param(self, node):
        while node.child is not None:
            node = node.child
        return self.param(node.dist, node.family.params[0])

    # --- arrays -----------------------------------------------------------
    @staticmethod
    def shape(x):
        if isinstance(x, torch.Tensor):
            return tuple(x.shape)
        return () if isinstance(x, (int, float)) else np.shape(x)  # np.shape is slow on scalars

    @staticmethod
    def broadcast_to(x, shape):
        # expand() to the same shape is a free view; comparing shapes first would
        # put Python branches on sizes into torch.jit traces.
        return x.expand(shape)

    @staticmethod
    def reshape(x, shape):
        return x.reshape(shape)

    @staticmethod
    def take(x, index, axis):
        return x.index_select(axis % x.dim(), index)

    @staticmethod
    def lerp(start, end, weight):
        if isinstance(weight, torch.Tensor) and weight.dtype != start.dtype:
            weight = weight.to(start.dtype)
        return torch.lerp(start, end, weight)

    @staticmethod
    def logical_and(a, b):
        return a & b

    @staticmethod
    def as_bool(mask, like):
        return mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask, dtype=torch.bool)

    @staticmethod
    def as_weight(w, like):
        if isinstance(w, float):
            return w  # Python scalars broadcast for free
        if isinstance(w, torch.Tensor):
            return w if w.dtype == like.dtype else w.to(like.dtype)
        return torch.as_tensor(w, dtype=like.dtype, device=like.device)

    @staticmethod
    def as_index(index):
        if isinstance(index, torch.Tensor):
            return index
        return torch.as_tensor(np.asarray(index))

    @staticmethod
    def to_numpy(x):
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)


BACKEND = TorchBackend()


def log_linear_pool(dists, weights):
    """Log-linear pool of exponential-family distributions (torch / Pyro).

    Returns the distribution proportional to ``prod_k p_k(y) ** w_k``: for an
    exponential family it is the member with natural parameter
    ``sum_k w_k * eta_k`` (METHOD.md, Thm C.1), of the same class as the inputs.

    :param dists: ``K >= 2`` distributions of one supported family, with the
        same wrappers (Independent, expanded, masked, transformed).
    :param weights: ``K`` floats or tensors, each broadcastable against the
        batch shape (per-example weights), in ``[0, 1]`` and summing to 1
        within ``1e-5``.
    :raises UnsupportedDistributionError: for a family without closed-form pool.
    :raises ValueError: for mixed families, mismatched ``total_count``,
        non-broadcastable shapes or invalid weights.

    Example (the paper's worked example, section 3.2.3)::

        >>> import torch, pyro.distributions as dist
        >>> p = log_linear_pool([dist.Normal(125., 13.5), dist.Normal(-125., 13.5)], [0.8, 0.2])
        >>> round(p.loc.item(), 4), round(p.scale.item(), 4)
        (75.0, 13.5)
        >>> round(-p.log_prob(torch.tensor(80.)).item(), 2)
        3.59

    Discrete families are returned parameterised by ``logits`` (pooling happens
    in log space); MultivariateNormal (and LowRankMultivariateNormal) by
    ``precision_matrix``.
    """
    return _engine.log_linear_pool(BACKEND, dists, weights)


def pool_pairs(d, lam, perm, dim=-1):
    """Pool every element of ``d`` along batch dim ``dim`` with element ``perm[i]``.

    The result has the batch shape of ``d``; element ``i`` is the log-linear
    pool of elements ``i`` and ``perm[i]`` with weights ``(lam, 1 - lam)``.
    This is the primitive behind the :mod:`pyro_mixup.handlers`; it gathers
    along ``dim`` once per natural parameter, with no Python loop over the batch.

    :param d: a distribution of a supported family (wrappers allowed).
    :param lam: a scalar in ``[0, 1]``, or a tensor of shape ``(n,)`` with one
        weight per element along ``dim``.
    :param perm: an integer tensor of shape ``(n,)``: the partner of each element
        (any index map, e.g. nearest neighbours; not necessarily a permutation).
    :param int dim: the batch dim to pair along (negative or non-negative).

    Example::

        >>> import torch, pyro.distributions as dist
        >>> d = dist.Normal(torch.tensor([0., 10.]), 1.)
        >>> pool_pairs(d, 0.25, torch.tensor([1, 0])).loc
        tensor([7.5000, 2.5000])
    """
    return _engine.pool_pairs(BACKEND, d, lam, perm, dim)


def register(cls, family_name: str, constructor=None):
    """Declare that instances of ``cls`` (a subclass of a supported class, say)
    belong to the family ``family_name`` and are rebuilt with ``constructor``
    (default ``cls``) from that family's parameters."""
    try:
        family = FAMILY_BY_CLASS_NAME[family_name]
    except KeyError:
        raise ValueError(
            f"unknown family {family_name!r}; known: {', '.join(sorted(FAMILY_BY_CLASS_NAME))}"
        ) from None
    BACKEND.register(cls, family, constructor)
