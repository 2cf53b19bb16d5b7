"""The torch / Pyro backend of the pooling engine: array operations and the map
from ``torch.distributions`` and ``pyro.distributions`` classes to families."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyro.distributions as pdist
import torch
import torch.distributions as tdist
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch.distributions import Distribution
from torch.distributions.utils import lazy_property

from ..core import pooling
from ..core.backend import PoolingBackend
from ..core.families import FAMILY_BY_CLASS_NAME, NORMAL, Family

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
    solve_tril=lambda tril, b: torch.linalg.solve_triangular(tril, b, upper=False),
    solve_triu=lambda triu, b: torch.linalg.solve_triangular(triu, b, upper=True),
    qr=torch.linalg.qr,
    concat=lambda xs, axis: torch.cat(torch.broadcast_tensors(*xs), axis),
    diagonal_sign=lambda m: torch.sign(torch.diagonal(m, dim1=-2, dim2=-1)),
    transpose=lambda m: m.mT,
    eye_like=lambda m: torch.eye(m.shape[-1], dtype=m.dtype, device=m.device).expand(m.shape),
    maximum=torch.maximum,
    isfinite=torch.isfinite,
    logical_and=torch.logical_and,
    # a logit of probability 0 or 1 made finite: exp() of it is still exactly 0, and
    # 0 * it is 0, not NaN; the square root of the largest float leaves room for counts
    clip_to_finite=lambda x: x.clamp(
        -(torch.finfo(x.dtype).max ** 0.5), torch.finfo(x.dtype).max ** 0.5
    ),
    # for the targets
    where=torch.where,
    stack=torch.stack,
    log_softmax=lambda x: torch.log_softmax(x, -1),
    softmax=lambda x: torch.softmax(x, -1),
    one_hot=lambda value, k, like: F.one_hot(value.long(), k).to(like.dtype),
    cast_like=lambda x, like: x.to(like.dtype),
    floating=lambda x: x if x.is_floating_point() else x.to(torch.get_default_dtype()),
    sum_rightmost=lambda x, k: x.sum(tuple(range(-k, 0))),
)


def _classes() -> dict[type, tuple[Family, Callable[..., Distribution]]]:
    table: dict[type, tuple[Family, Callable[..., Distribution]]] = {}
    for name, family in FAMILY_BY_CLASS_NAME.items():
        for module in (tdist, pdist):
            cls = getattr(module, name, None)
            if cls is not None:
                table[cls] = (family, cls)
    # A low-rank Gaussian pools to a full-rank one (low rank is not closed under pooling).
    for module in (tdist, pdist):
        table[module.LowRankMultivariateNormal] = (
            FAMILY_BY_CLASS_NAME["MultivariateNormal"],
            module.MultivariateNormal,
        )
    return table


_WRAPPERS = {
    tdist.Independent: "independent",
    pdist.Independent: "independent",
    pdist.torch_distribution.ExpandedDistribution: "expanded",
    pdist.torch_distribution.MaskedDistribution: "masked",
    tdist.TransformedDistribution: "transformed",
    pdist.TransformedDistribution: "transformed",
}


_LOG_2PI = math.log(2 * math.pi)


class NaturalNormal(pdist.Normal):
    """A Normal held by its natural parameters, ``precision`` = 1/scale**2 and
    ``precision_loc`` = loc/scale**2: the form a log-linear pool of Normals
    comes in. ``loc`` and ``scale`` are computed on first use; ``log_prob`` is
    computed from the natural form directly, which saves the handlers' hot path
    the way back (a division and an rsqrt, and their gradients, in eager torch
    each as dear as the arithmetic they do)."""

    def __init__(
        self, precision: torch.Tensor, precision_loc: torch.Tensor, validate_args: bool = False
    ) -> None:
        self.precision, self.precision_loc = precision, precision_loc
        torch.distributions.Distribution.__init__(self, precision.shape, validate_args=False)

    @lazy_property
    def loc(self) -> torch.Tensor:
        return self.precision_loc / self.precision

    @lazy_property
    def scale(self) -> torch.Tensor:
        return self.precision.rsqrt()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # (log(tau) - log(2 pi) - r^2 / tau) / 2 with r = eta - tau y; fused ops (fewer autograd nodes)
        tau = self.precision
        r = torch.addcmul(self.precision_loc, value, tau, value=-1.0)
        return torch.addcdiv(tau.log() - _LOG_2PI, r * r, tau, value=-1.0) * 0.5

    def expand(
        self, batch_shape: Sequence[int], _instance: NaturalNormal | None = None
    ) -> NaturalNormal:
        batch_shape = torch.Size(batch_shape)
        return NaturalNormal(
            self.precision.expand(batch_shape), self.precision_loc.expand(batch_shape)
        )


class TorchBackend(PoolingBackend):
    name = "torch"
    ops = ops
    build_kwargs = {"validate_args": False}

    def construct_pooled(
        self, like: Distribution, family: Family, naturals: Sequence[torch.Tensor]
    ) -> Distribution:
        if family is NORMAL and self._table[type(like)][1] is pdist.Normal:
            precision, precision_loc = naturals
            return NaturalNormal(precision, precision_loc)
        return super().construct_pooled(like, family, naturals)

    # --- arrays -----------------------------------------------------------
    @staticmethod
    def shape(x: Any) -> tuple[int, ...]:
        if isinstance(x, torch.Tensor):
            return tuple(x.shape)
        return () if isinstance(x, (int, float)) else np.shape(x)  # np.shape is slow on scalars

    @staticmethod
    def broadcast_to(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        # a view, but still an autograd node: skipped when there is nothing to broadcast
        return x if x.shape == shape else x.expand(shape)

    @staticmethod
    def reshape(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return x.reshape(shape)

    @staticmethod
    def take(x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
        return x.index_select(axis % x.dim(), index)

    @staticmethod
    def roll(x: torch.Tensor, shift: int | torch.Tensor, axis: int) -> torch.Tensor:
        if isinstance(shift, torch.Tensor):  # drawn under torch.jit tracing: stays a traced index
            n = x.shape[axis]
            return x.index_select(axis % x.dim(), (torch.arange(n, device=x.device) - shift) % n)
        return torch.roll(x, shift, axis)

    @staticmethod
    def lerp(start: torch.Tensor, end: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        if isinstance(weight, torch.Tensor) and weight.dtype != start.dtype:
            weight = weight.to(start.dtype)
        return torch.lerp(start, end, weight)  # exact at weight 0 and 1

    @staticmethod
    def logical_and(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a & b

    @staticmethod
    def as_bool(mask: ArrayLike | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask, dtype=torch.bool)

    @staticmethod
    def as_weight(w: ArrayLike | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
        if isinstance(w, float):
            return w  # Python scalars broadcast for free
        if isinstance(w, torch.Tensor):
            return w if w.dtype == like.dtype else w.to(like.dtype)
        return torch.as_tensor(w, dtype=like.dtype, device=like.device)

    @staticmethod
    def as_array(w: ArrayLike | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if isinstance(w, torch.Tensor):
            return w
        return torch.as_tensor(w, dtype=like.dtype, device=like.device)

    @staticmethod
    def clip_at_zero(w: float | torch.Tensor) -> float | torch.Tensor:
        return w.clamp_min(0) if isinstance(w, torch.Tensor) else max(w, 0.0)

    @staticmethod
    def dtype_name(x: Any) -> str:
        return str(x.dtype).replace("torch.", "") if isinstance(x, torch.Tensor) else "float64"

    @staticmethod
    def as_index(index: ArrayLike | torch.Tensor) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            return index
        return torch.as_tensor(np.asarray(index))

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            if x.dtype == torch.bfloat16:  # numpy has no bfloat16
                x = x.float()
            return x.detach().cpu().numpy()
        return np.asarray(x)

    # --- handler options ----------------------------------------------------
    @staticmethod
    def weight_array(lam: ArrayLike | torch.Tensor) -> torch.Tensor:
        if isinstance(lam, torch.Tensor):
            return lam.detach().to(torch.get_default_dtype())
        return torch.as_tensor(np.asarray(lam, dtype=np.float64), dtype=torch.get_default_dtype())

    @staticmethod
    def index_array(perm: ArrayLike | torch.Tensor) -> torch.Tensor:
        t = perm if isinstance(perm, torch.Tensor) else torch.as_tensor(np.asarray(perm))
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(
                f"perm must hold integer indices (floats would be truncated); got {t.dtype} {t.tolist()[:20]}"
            )
        return t.long()

    @staticmethod
    def check_rng_key(key: object) -> None:
        if key is not None:
            raise ValueError(
                "rng_key is a NumPyro option; the Pyro handlers draw from the global RNGs that "
                "pyro.set_rng_seed seeds"
            )


BACKEND = TorchBackend(_classes(), _WRAPPERS)


def log_linear_pool(
    dists: Sequence[Distribution], weights: Sequence[float | torch.Tensor]
) -> Distribution:
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
    ``scale_tril``. Weights are projected onto the simplex (clipped at 0,
    renormalised); a NaN or infinite parameter, half precision and members of
    different event sizes are refused (docs/pooling.md, "At the edges").
    """
    return pooling.log_linear_pool(BACKEND, dists, weights)


def pool_pairs(
    d: Distribution,
    lam: float | torch.Tensor,
    perm: torch.Tensor | ArrayLike,
    dim: int = -1,
) -> Distribution:
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
    return pooling.pool_pairs(BACKEND, d, lam, perm, dim)


def register(
    cls: type[Distribution],
    family_name: str,
    constructor: Callable[..., Distribution] | None = None,
) -> None:
    """Declare that instances of ``cls`` (a subclass of a supported class, say)
    belong to the family ``family_name`` and are rebuilt with ``constructor``
    (default ``cls``) from that family's parameters."""
    BACKEND.register(cls, family_name, constructor)
