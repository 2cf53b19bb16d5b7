"""The JAX / NumPyro backend of the pooling engine: array operations and the
map from ``numpyro.distributions`` classes to families. Imports no torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import numpyro.distributions as nd
from jax.typing import ArrayLike, DTypeLike
from numpyro.distributions import Distribution

from ..core import pooling
from ..core.backend import PoolingBackend
from ..core.families import FAMILY_BY_CLASS_NAME, Family
from ..core.pairing import Partner

ops = SimpleNamespace(
    rsqrt=jax.lax.rsqrt,
    sqrt=jnp.sqrt,
    log=jnp.log,
    exp=jnp.exp,
    expm1=jnp.expm1,
    softplus=jax.nn.softplus,
    logsigmoid=jax.nn.log_sigmoid,
    cos=jnp.cos,
    sin=jnp.sin,
    atan2=jnp.arctan2,
    matvec=lambda m, v: jnp.einsum("...ij,...j->...i", m, v),
    solve_tril=lambda tril, b: jsl.solve_triangular(tril, b, lower=True),
    solve_triu=lambda triu, b: jsl.solve_triangular(triu, b, lower=False),
    qr=jnp.linalg.qr,
    concat=lambda xs, axis: jnp.concatenate(jnp.broadcast_arrays(*xs), axis),
    diagonal_sign=lambda m: jnp.sign(jnp.diagonal(m, axis1=-2, axis2=-1)),
    transpose=lambda m: jnp.swapaxes(m, -1, -2),
    eye_like=lambda m: jnp.broadcast_to(jnp.eye(m.shape[-1], dtype=m.dtype), m.shape),
    maximum=jnp.maximum,
    isfinite=jnp.isfinite,
    logical_and=jnp.logical_and,
    # see the torch backend: a logit of probability 0 or 1 made finite
    clip_to_finite=lambda x: jnp.clip(
        x, -(jnp.finfo(x.dtype).max ** 0.5), jnp.finfo(x.dtype).max ** 0.5
    ),
    # for the targets
    where=jnp.where,
    stack=jnp.stack,
    log_softmax=jax.nn.log_softmax,
    softmax=jax.nn.softmax,
    one_hot=lambda value, k, like: jax.nn.one_hot(
        jnp.asarray(value, jnp.int32), k, dtype=jnp.result_type(like)
    ),
    cast_like=lambda x, like: jnp.asarray(x, jnp.result_type(like)),
    floating=lambda x: (
        x if jnp.issubdtype(jnp.result_type(x), jnp.floating) else jnp.asarray(x, float)
    ),
    sum_rightmost=lambda x, k: x.sum(tuple(range(-k, 0))),
)

# A cyclic partner (its shift) travels through jax transformations as a leaf.
jax.tree_util.register_pytree_node(
    Partner,
    lambda p: ((p.index, p.shift), (p.n, p.shards)),
    lambda aux, children: _partner(*aux, *children),
)


def _partner(n: int, shards: int | None, index: Any, shift: Any) -> Partner:
    p = Partner.__new__(Partner)  # no validation: jax may unflatten placeholder leaves
    p.n, p.shards, p.index, p.shift = n, shards, index, shift
    return p


# NumPyro splits several families into Probs/Logits classes; pooling happens in
# log space, so every pooled discrete distribution is the Logits class.
_CLASSES = {
    "Normal": [(nd.Normal, nd.Normal)],
    "MultivariateNormal": [
        (nd.MultivariateNormal, nd.MultivariateNormal),
        (nd.LowRankMultivariateNormal, nd.MultivariateNormal),
    ],
    "Bernoulli": [
        (nd.BernoulliProbs, nd.BernoulliLogits),
        (nd.BernoulliLogits, nd.BernoulliLogits),
    ],
    "Categorical": [
        (nd.CategoricalProbs, nd.CategoricalLogits),
        (nd.CategoricalLogits, nd.CategoricalLogits),
    ],
    "Binomial": [(nd.BinomialProbs, nd.BinomialLogits), (nd.BinomialLogits, nd.BinomialLogits)],
    "Multinomial": [
        (nd.MultinomialProbs, nd.MultinomialLogits),
        (nd.MultinomialLogits, nd.MultinomialLogits),
    ],
    "Poisson": [(nd.Poisson, nd.Poisson)],
    "Geometric": [
        (nd.GeometricProbs, nd.GeometricLogits),
        (nd.GeometricLogits, nd.GeometricLogits),
    ],
    "NegativeBinomial": [
        (nd.NegativeBinomialProbs, nd.NegativeBinomialLogits),
        (nd.NegativeBinomialLogits, nd.NegativeBinomialLogits),
    ],
    "Exponential": [(nd.Exponential, nd.Exponential)],
    "Gamma": [(nd.Gamma, nd.Gamma)],
    "Chi2": [(nd.Chi2, nd.Chi2)],
    "InverseGamma": [(nd.InverseGamma, nd.InverseGamma)],
    "Beta": [(nd.Beta, nd.Beta)],
    "Dirichlet": [(nd.Dirichlet, nd.Dirichlet)],
    "LogNormal": [(nd.LogNormal, nd.LogNormal)],
    "HalfNormal": [(nd.HalfNormal, nd.HalfNormal)],
    "VonMises": [(nd.VonMises, nd.VonMises)],
    # NumPyro has no OneHotCategorical or ContinuousBernoulli.
}


def _negbin_probs_logits(d: nd.NegativeBinomialProbs) -> jax.Array:
    return jnp.log(d.probs) - jnp.log1p(-d.probs)


_PARAM_OVERRIDES = {
    (nd.NegativeBinomialProbs, "logits"): _negbin_probs_logits,
}


def _classes() -> dict[type, tuple[Family, Callable[..., Distribution]]]:
    return {
        cls: (FAMILY_BY_CLASS_NAME[name], out)
        for name, pairs in _CLASSES.items()
        for cls, out in pairs
    }


_WRAPPERS = {
    nd.Independent: "independent",
    nd.ExpandedDistribution: "expanded",
    nd.MaskedDistribution: "masked",
    nd.TransformedDistribution: "transformed",
}


class NumPyroBackend(PoolingBackend):
    name = "numpyro"
    ops = ops

    def param(self, d: Distribution, name: str) -> jax.Array:
        override = _PARAM_OVERRIDES.get((type(d), name))
        return override(d) if override is not None else getattr(d, name)

    @staticmethod
    def shape(x: ArrayLike) -> tuple[int, ...]:
        return tuple(jnp.shape(x))

    @staticmethod
    def broadcast_to(x: jax.Array, shape: Sequence[int]) -> jax.Array:
        return x if jnp.shape(x) == tuple(shape) else jnp.broadcast_to(x, shape)

    @staticmethod
    def reshape(x: jax.Array, shape: Sequence[int]) -> jax.Array:
        return jnp.reshape(x, shape)

    @staticmethod
    def take(x: jax.Array, index: jax.Array, axis: int) -> jax.Array:
        return jnp.take(x, index, axis=axis)

    @staticmethod
    def take_local(x: jax.Array, index: jax.Array, axis: int, shards: int) -> jax.Array:
        """``take`` for a shard-local ``index``: ``x`` split along ``axis`` into
        ``shards`` blocks, each gathered by its own block of ``index`` (a gather
        batched over the blocks). Sharded over ``shards`` devices along ``axis``,
        each device gathers from its own rows, with no collective (a plain
        gather by a global index has to bring the rows of every shard together)."""
        x = jnp.asarray(x)
        axis = axis % x.ndim
        n = x.shape[axis]
        size = n // shards
        blocks = jnp.moveaxis(x, axis, 0).reshape(
            (shards, size) + x.shape[:axis] + x.shape[axis + 1 :]
        )
        index = jnp.reshape(index, (shards, size))
        local = index - (jnp.arange(shards, dtype=index.dtype) * size)[:, None]
        out = jax.vmap(lambda rows, i: jnp.take(rows, i, axis=0))(blocks, local)
        return jnp.moveaxis(out.reshape((n,) + out.shape[2:]), 0, axis)

    @staticmethod
    def roll(x: jax.Array, shift: int | jax.Array, axis: int) -> jax.Array:
        return jnp.roll(x, shift, axis=axis)

    @staticmethod
    def lerp(start: jax.Array, end: jax.Array, weight: float | jax.Array) -> jax.Array:
        # exact at both ends (weight 0 -> start, 1 -> end) even when start and end
        # differ by orders of magnitude, unlike start + weight * (end - start)
        return weight * end + (1 - weight) * start

    @staticmethod
    def logical_and(a: ArrayLike, b: ArrayLike) -> jax.Array:
        return jnp.logical_and(a, b)

    @staticmethod
    def as_bool(mask: ArrayLike, like: ArrayLike) -> jax.Array:
        return jnp.asarray(mask, dtype=bool)

    @staticmethod
    def as_weight(w: ArrayLike, like: ArrayLike) -> jax.Array:
        return jnp.asarray(w, dtype=jnp.result_type(like))

    as_array = as_weight  # a weight as an array of the parameters' dtype: the same here

    @staticmethod
    def clip_at_zero(w: ArrayLike) -> jax.Array:
        return jnp.maximum(w, 0)

    @staticmethod
    def dtype_name(x: ArrayLike | DTypeLike) -> str:
        return str(jnp.result_type(x))

    @staticmethod
    def as_index(index: ArrayLike) -> jax.Array:
        return jnp.asarray(index)

    @staticmethod
    def to_numpy(x: ArrayLike) -> np.ndarray | None:
        """A concrete numpy copy, or None for a traced value (inside jit/grad)."""
        if isinstance(x, jax.core.Tracer):
            return None
        return np.asarray(x)

    # --- handler options ----------------------------------------------------
    @staticmethod
    def weight_array(lam: ArrayLike) -> jax.Array:
        return jnp.asarray(lam, dtype=jnp.result_type(float))

    @staticmethod
    def index_array(perm: ArrayLike) -> jax.Array:
        dtype = jnp.result_type(perm) if isinstance(perm, jax.Array) else np.asarray(perm).dtype
        if not jnp.issubdtype(dtype, jnp.integer):
            shown = perm if isinstance(perm, jax.core.Tracer) else np.asarray(perm).tolist()[:20]
            raise ValueError(
                f"perm must hold integer indices (floats would be truncated); got {dtype} {shown}"
            )
        return jnp.asarray(perm, dtype=jnp.int32)

    @staticmethod
    def check_rng_key(key: object) -> None:
        if key is None:
            return
        typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        raw = (
            isinstance(key, (jax.Array, np.ndarray))
            and key.dtype == np.uint32
            and key.shape[-1:] == (2,)
        )
        if not (typed or raw):
            raise ValueError(
                f"rng_key must be a JAX PRNG key, jax.random.key(seed) or jax.random.PRNGKey(seed); got {key!r}"
            )


BACKEND = NumPyroBackend(_classes(), _WRAPPERS)


def log_linear_pool(dists: Sequence[Distribution], weights: Sequence[ArrayLike]) -> Distribution:
    """Log-linear pool of exponential-family NumPyro distributions.

    Same contract as :func:`pyro_mixup.log_linear_pool` (the formulas are the
    shared ones in :mod:`pyro_mixup.core.families`). Weight checks need concrete
    values: inside ``jax.jit`` they are skipped. Discrete families come back
    as their ``*Logits`` class; (LowRank)MultivariateNormal as a
    MultivariateNormal with ``scale_tril``.

    Example::

        >>> import numpyro.distributions as dist
        >>> p = log_linear_pool([dist.Normal(125., 13.5), dist.Normal(-125., 13.5)], [0.8, 0.2])
        >>> round(float(p.loc), 4), round(float(p.scale), 4)
        (75.0, 13.5)
    """
    return pooling.log_linear_pool(BACKEND, dists, weights)


def pool_pairs(d: Distribution, lam: ArrayLike, perm: ArrayLike, dim: int = -1) -> Distribution:
    """Pool element ``i`` of ``d`` along batch dim ``dim`` with element ``perm[i]``,
    weights ``(lam, 1 - lam)``; see :func:`pyro_mixup.pool_pairs`. Works under ``jax.jit``
    (checks of traced ``lam``/``perm`` values are skipped there)."""
    return pooling.pool_pairs(BACKEND, d, lam, perm, dim)


def register(
    cls: type[Distribution],
    family_name: str,
    constructor: Callable[..., Distribution] | None = None,
) -> None:
    """NumPyro twin of :func:`pyro_mixup.register`."""
    BACKEND.register(cls, family_name, constructor)
