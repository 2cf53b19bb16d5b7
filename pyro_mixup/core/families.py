"""The exponential-family registry: the one place that knows each family's
natural parameters.

Log-linear pooling of exponential-family densities (METHOD.md, Thm C.1) stays in
the family, with natural parameter ``eta~ = sum_k w_k eta_k``. Any *affine*
image of the natural parameters pools the same way (an affine map commutes
with convex combinations), so each family below pools in the coordinates that
are cheapest and most stable to compute: precision and precision-times-mean
for Gaussians, log-rates for Poisson, plain (concentration - 1) for Gamma and
Beta, logits for Bernoulli and Categorical.

Three families pool in a form other than a plain sum of natural parameters,
because that sum loses precision at the edges of their parameter space
(``Family.pool``): Gaussians in square-root (Cholesky) form, so that a
covariance dominated by a low-rank part never passes through an
ill-conditioned precision matrix; Geometric and NegativeBinomial in the log of
the natural parameter's magnitude, so that logits beyond +-100 neither
underflow nor overflow.

Each :class:`Family` is written once against an ``ops`` namespace (torch or
jax.numpy functions, supplied by the backend), so the torch and NumPyro
backends share these formulas instead of keeping copies that drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

from ._types import Array, Ops


@dataclass(frozen=True)
class Family:
    """One exponential family, described for pooling.

    :param name: short name, used in messages.
    :param params: names of the parameters read from a distribution instance
        (attribute names shared by torch and NumPyro classes).
    :param param_event_dims: rank of each parameter beyond the batch shape
        (``1`` for Categorical logits, ``2`` for a precision matrix).
    :param to_natural: ``(ops, *params) -> tuple`` of natural parameters (or an
        affine image of them).
    :param natural_event_dims: rank of each natural parameter beyond the batch shape.
    :param from_natural: ``(ops, *naturals) -> dict`` of constructor keyword
        arguments of the pooled distribution.
    :param fixed: parameters that are not pooled and must be equal across the
        pooled densities (``total_count``).
    :param convex_support: whether ``lam*y_i + (1-lam)*y_j`` stays in the
        support, i.e. whether the "mixed" target is meaningful.
    :param label_kind: for class labels, how a value encodes its class
        ("categorical": an index, "one_hot": a one-hot vector, "bernoulli": 0/1);
        ``None`` otherwise. Label smoothing (the classification target) uses it.
    :param pool: ``(ops, *terms) -> dict`` of constructor keyword arguments,
        one ``terms`` list per parameter, each ``[(weight, value), ...]`` over
        the members (weights shaped to broadcast against the value): a pool
        computed from the members' parameters, for families whose natural
        parameters are unstable to sum. When set, ``to_natural`` and
        ``from_natural`` are unused (``None``).
    :param infinite_ok: parameters that may be +-inf at a valid boundary (a
        logit of a probability 0 or 1). Any other infinite parameter is
        refused; these are kept, and the pooled ones are clipped to the
        dtype's finite range (``ops.clip_to_finite``) so that every library's
        ``log_prob`` gives 0 * logit = 0 where it should, not NaN.
    :param infinite_naturals: a natural parameter may be -inf at a valid
        boundary (a logit of probability 0, the log of a Poisson rate 0): the
        pooling clips them to the finite range before weighting, everywhere
        (the handlers' hot path too), since 0 * -inf is NaN.
    """

    name: str
    params: tuple[str, ...]
    param_event_dims: tuple[int, ...]
    to_natural: Callable[..., tuple[Array, ...]] | None
    natural_event_dims: tuple[int, ...]
    from_natural: Callable[..., dict[str, Array]] | None
    fixed: tuple[str, ...] = ()
    convex_support: bool = True
    label_kind: str | None = None
    pool: Callable[..., dict[str, Array]] | None = None
    infinite_ok: tuple[str, ...] = ()
    infinite_naturals: bool = False

    @property
    def classification(self) -> bool:
        return self.label_kind is not None

    @property
    def pools_naturals(self) -> bool:
        """Whether a pair pools by one lerp per natural parameter (the handlers' fast path)."""
        return self.pool is None and not self.fixed


def masked_weighted_sum(ops: Ops, terms: Sequence[tuple[Array, Array]]) -> Array:
    """``sum_k w_k * a_k`` over ``terms = [(w_k, a_k), ...]``, where a member of
    weight 0 drops out even if its ``a_k`` is infinite (a log-rate of a rate 0:
    ``0 * inf`` is NaN). The inner ``where`` keeps the gradient finite too
    (the outer one alone would still send ``0 * inf`` back to ``w_k``)."""
    total: Array = None
    for w, a in terms:
        dropped = w == 0
        term = ops.where(dropped, 0.0, w * ops.where(dropped, 0.0, a))
        total = term if total is None else total + term
    return total


def _log_weighted_sum_exp(ops: Ops, terms: Sequence[tuple[Array, Array]]) -> Array:
    """``log sum_k w_k exp(s_k)`` over ``terms = [(w_k, s_k), ...]``, shifted
    by the largest ``s_k`` among the members that count (weight > 0), so
    that neither a dropped member nor the exponential decides the scale."""
    live = [w > 0 for w, _ in terms]
    shift: Array = None
    for alive, (_, s) in zip(live, terms):
        candidate = ops.where(alive, s, -float("inf"))
        shift = candidate if shift is None else ops.maximum(shift, candidate)
    shift = ops.where(ops.isfinite(shift), shift, 0.0)  # all dropped, or an infinite magnitude
    total = masked_weighted_sum(
        ops,
        [(w, ops.exp(ops.where(alive, s, shift) - shift)) for alive, (w, s) in zip(live, terms)],
    )
    return ops.log(total) + shift


class _FamilyOptions(TypedDict, total=False):
    """The optional fields of :class:`Family`, as keyword arguments."""

    fixed: tuple[str, ...]
    convex_support: bool
    label_kind: str | None
    infinite_ok: tuple[str, ...]
    infinite_naturals: bool


class _LogitOptions(TypedDict):
    """The fields every logit-parameterised family shares (:data:`_LOGITS`)."""

    convex_support: bool
    infinite_ok: tuple[str, ...]
    infinite_naturals: bool


def _identity_family(
    name: str,
    params: tuple[str, ...],
    event_dims: tuple[int, ...] | None = None,
    **kw: Unpack[_FamilyOptions],
) -> Family:
    """A family whose parameters are already an affine image of the natural ones."""
    event_dims = event_dims or (0,) * len(params)
    return Family(
        name=name,
        params=params,
        param_event_dims=event_dims,
        to_natural=lambda ops, *p: p,
        natural_event_dims=event_dims,
        from_natural=lambda ops, *eta: dict(zip(params, eta)),
        **kw,
    )


def _gaussian_to_natural(ops: Ops, loc: Array, scale: Array) -> tuple[Array, Array]:
    precision = scale**-2  # one op (each op is a node for autograd on the hot path)
    return precision, precision * loc


def _gaussian_from_natural(ops: Ops, precision: Array, precision_loc: Array) -> dict[str, Array]:
    return {"loc": precision_loc / precision, "scale": ops.rsqrt(precision)}


def _first_largest(ops: Ops, weights: Sequence[Array]) -> list[Array]:
    """For each member, where it is the reference: the first of the largest weights."""
    refs = []
    for k, w in enumerate(weights):
        ref: Array = None
        for j, v in enumerate(weights):
            if j != k:
                beats = (w > v) if j < k else (w >= v)
                ref = beats if ref is None else ops.logical_and(ref, beats)
        refs.append(ref)
    return refs


def _select(ops: Ops, refs: Sequence[Array], values: Sequence[Array]) -> Array:
    out = values[0]
    for ref, v in zip(refs[1:], values[1:]):
        out = ops.where(ref, v, out)
    return out


def _sqrt_weight(ops: Ops, w: Array) -> Array:
    # sqrt'(0) is inf: a member of weight 0 must send back 0, not 0 * inf
    live = w > 0
    return ops.where(live, ops.sqrt(ops.where(live, w, 1.0)), 0.0)


def _mvn_pool(
    ops: Ops, loc_terms: Sequence[tuple[Array, Array]], tril_terms: Sequence[tuple[Array, Array]]
) -> dict[str, Array]:
    """The pool of Gaussians ``N(mu_k, L_k L_k^T)``, in square-root form.

    The pooled precision is ``sum_k w_k (L_k L_k^T)^-1``. Summing precision
    matrices and inverting (the textbook route) squares the condition number:
    a covariance whose low-rank part dominates its diagonal (1e6 : 1) comes
    back 10% off in float32, or fails its Cholesky. Here everything is
    whitened by a reference member ``r`` (the first of largest weight):
    with ``A_k = L_k^-1 L_r`` (``A_r = I``) the whitened pooled precision is
    ``B^T B``, ``B`` the blocks ``sqrt(w_k) A_k`` stacked; a QR of ``B``
    gives its factor ``R`` without forming ``B^T B`` (which would square the
    condition number again), and ``B``'s singular values are >= sqrt(w_r).
    The pooled covariance is ``G G^T`` with ``G = L_r R^-1``, and a second QR
    (of ``G^T``) turns ``G`` into the lower triangular ``scale_tril``. The
    mean is ``mu_r + L_r`` times the least-squares solution of
    ``B v = (sqrt(w_k) L_k^-1 (mu_k - mu_r))_k``. A member pooled with itself,
    or with weight 1, gives ``B = [I ...]``: itself back.
    """
    loc_weights, locs = zip(*loc_terms)
    tril_weights, trils = zip(*tril_terms)
    loc_refs, tril_refs = _first_largest(ops, loc_weights), _first_largest(ops, tril_weights)
    ref_loc, ref_tril = _select(ops, loc_refs, locs), _select(ops, tril_refs, trils)
    eye = ops.eye_like(ref_tril)
    blocks, shifts = [], []
    for w_vec, w_mat, loc_ref, tril_ref, loc, tril in zip(
        loc_weights, tril_weights, loc_refs, tril_refs, locs, trils
    ):
        whitened = ops.where(tril_ref, eye, ops.solve_tril(tril, ref_tril))
        shift = ops.where(loc_ref, 0.0, ops.solve_tril(tril, (loc - ref_loc)[..., None])[..., 0])
        blocks.append(_sqrt_weight(ops, w_mat) * whitened)
        shifts.append(_sqrt_weight(ops, w_vec) * shift)
    q, r = ops.qr(ops.concat(blocks, -2))
    g_t = ops.solve_tril(ops.transpose(r), ops.transpose(ref_tril))  # (L_r R^-1)^T
    r2 = ops.qr(g_t)[1]
    scale_tril = ops.transpose(r2) * ops.diagonal_sign(r2)[..., None, :]
    v = ops.solve_triu(r, ops.matvec(ops.transpose(q), ops.concat(shifts, -1))[..., None])[..., 0]
    return {"loc": ref_loc + ops.matvec(ref_tril, v), "scale_tril": scale_tril}


def _halfnormal_to_natural(ops: Ops, scale: Array) -> tuple[Array]:
    return (scale**-2,)


def _halfnormal_from_natural(ops: Ops, precision: Array) -> dict[str, Array]:
    return {"scale": ops.rsqrt(precision)}


def _poisson_to_natural(ops: Ops, rate: Array) -> tuple[Array]:
    return (ops.log(rate),)


def _poisson_from_natural(ops: Ops, log_rate: Array) -> dict[str, Array]:
    return {"rate": ops.exp(log_rate)}


def _inverse_softplus_of_exp(ops: Ops, log_m: Array) -> Array:
    """``x`` with ``softplus(x) = exp(log_m)``, for any ``log_m``: below -40,
    ``x = log_m`` to within ``exp(log_m) / 2`` (and ``exp`` may underflow);
    above, ``m + log(1 - exp(-m))`` (no overflow of ``expm1(m)``). The inner
    ``where`` keeps the unused branch, and its gradient, finite."""
    tiny = log_m < -40.0
    m = ops.exp(ops.where(tiny, 0.0, log_m))
    return ops.where(tiny, log_m, m + ops.log(-ops.expm1(-m)))


def _log_softplus(ops: Ops, x: Array) -> Array:
    """``log(softplus(x))``, also below -20 where ``softplus(x) = exp(x)``
    underflows (float32: x < -103) and the log of it would be -inf."""
    small = x < -20.0
    return ops.where(small, x, ops.log(ops.softplus(ops.where(small, 0.0, x))))


# Geometric (failures before the first success, p = success probability):
# log p(k) = k*log(1-p) + log p, natural parameter log(1-p) = -softplus(logits);
# NegativeBinomial (successes before total_count failures): log p(k) = k*log p
# + r*log(1-p) + ..., natural parameter log p = -softplus(-logits). Both
# naturals are negative; pooled as sums they underflow to 0 (logits < -100 in
# float32: -softplus(-120) = -exp(-120) = 0) and come back as +-inf logits.
# Their log-magnitudes log softplus(+-logits) pool as a log-sum-exp instead,
# exact in every range.
def _log_magnitude_pool(sign: float) -> Callable[..., dict[str, Array]]:
    def pool(ops: Ops, logit_terms: Sequence[tuple[Array, Array]]) -> dict[str, Array]:
        log_magnitudes = [(w, _log_softplus(ops, sign * logits)) for w, logits in logit_terms]
        return {
            "logits": sign
            * _inverse_softplus_of_exp(ops, _log_weighted_sum_exp(ops, log_magnitudes))
        }

    return pool


def _vonmises_to_natural(ops: Ops, loc: Array, concentration: Array) -> tuple[Array, Array]:
    return concentration * ops.cos(loc), concentration * ops.sin(loc)


def _vonmises_from_natural(ops: Ops, c: Array, s: Array) -> dict[str, Array]:
    return {"loc": ops.atan2(s, c), "concentration": ops.sqrt(c * c + s * s)}


NORMAL = Family(
    "Normal", ("loc", "scale"), (0, 0), _gaussian_to_natural, (0, 0), _gaussian_from_natural
)
LOG_NORMAL = Family(
    "LogNormal", ("loc", "scale"), (0, 0), _gaussian_to_natural, (0, 0), _gaussian_from_natural
)
HALF_NORMAL = Family(
    "HalfNormal", ("scale",), (0,), _halfnormal_to_natural, (0,), _halfnormal_from_natural
)
MULTIVARIATE_NORMAL = Family(
    "MultivariateNormal",
    ("loc", "scale_tril"),  # LowRankMultivariateNormal's scale_tril is its stable capacitance form
    (1, 2),
    None,
    (),
    None,
    pool=_mvn_pool,  # the pool is parameterised by its scale_tril
)
_LOGITS: _LogitOptions = dict(
    convex_support=False, infinite_ok=("logits",), infinite_naturals=True
)  # logits of probabilities 0 and 1
BERNOULLI = _identity_family("Bernoulli", ("logits",), label_kind="bernoulli", **_LOGITS)
CATEGORICAL = _identity_family(
    "Categorical", ("logits",), (1,), label_kind="categorical", **_LOGITS
)
ONE_HOT_CATEGORICAL = _identity_family(
    "OneHotCategorical", ("logits",), (1,), label_kind="one_hot", **_LOGITS
)
CONTINUOUS_BERNOULLI = _identity_family("ContinuousBernoulli", ("logits",))
BINOMIAL = _identity_family("Binomial", ("logits",), fixed=("total_count",), **_LOGITS)
MULTINOMIAL = _identity_family("Multinomial", ("logits",), (1,), fixed=("total_count",), **_LOGITS)
POISSON = Family(
    "Poisson",
    ("rate",),
    (0,),
    _poisson_to_natural,
    (0,),
    _poisson_from_natural,
    convex_support=False,
    infinite_naturals=True,  # log of a rate 0
)
GEOMETRIC = Family(
    "Geometric", ("logits",), (0,), None, (), None, pool=_log_magnitude_pool(1.0), **_LOGITS
)
NEGATIVE_BINOMIAL = Family(
    "NegativeBinomial",
    ("logits",),
    (0,),
    None,
    (),
    None,
    pool=_log_magnitude_pool(-1.0),
    fixed=("total_count",),
    **_LOGITS,
)
EXPONENTIAL = _identity_family("Exponential", ("rate",))
GAMMA = _identity_family("Gamma", ("concentration", "rate"))
CHI2 = _identity_family("Chi2", ("df",))
INVERSE_GAMMA = _identity_family("InverseGamma", ("concentration", "rate"))
BETA = _identity_family("Beta", ("concentration1", "concentration0"))
DIRICHLET = _identity_family("Dirichlet", ("concentration",), (1,))
VON_MISES = Family(
    "VonMises",
    ("loc", "concentration"),
    (0, 0),
    _vonmises_to_natural,
    (0, 0),
    _vonmises_from_natural,
    # An average of angles is not an angle on the circle: score the expected target.
    convex_support=False,
)

ALL_FAMILIES = (
    NORMAL,
    MULTIVARIATE_NORMAL,
    BERNOULLI,
    CATEGORICAL,
    ONE_HOT_CATEGORICAL,
    BINOMIAL,
    MULTINOMIAL,
    POISSON,
    GEOMETRIC,
    NEGATIVE_BINOMIAL,
    EXPONENTIAL,
    GAMMA,
    CHI2,
    INVERSE_GAMMA,
    BETA,
    DIRICHLET,
    LOG_NORMAL,
    HALF_NORMAL,
    VON_MISES,
    CONTINUOUS_BERNOULLI,
)

# Distribution class name -> family, for the classes both backends share by name.
# Each backend maps its own classes (and parameterisation variants such as
# NumPyro's BernoulliProbs) onto these families.
FAMILY_BY_CLASS_NAME = {f.name: f for f in ALL_FAMILIES}
