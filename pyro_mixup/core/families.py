"""The exponential-family registry: the one place that knows each family's
natural parameters.

Log-linear pooling of exponential-family densities (METHOD.md, Thm C.1) stays in
the family, with natural parameter ``eta~ = sum_k w_k eta_k``. Any *affine*
image of the natural parameters pools the same way (an affine map commutes
with convex combinations), so each family below pools in the coordinates that
are cheapest and most stable to compute: precision and precision-times-mean
for Gaussians, log-rates for Poisson, plain (concentration - 1) for Gamma and
Beta, logits for Bernoulli and Categorical.

Each :class:`Family` is written once against an ``ops`` namespace (torch or
jax.numpy functions, supplied by the backend), so the torch and NumPyro
backends share these formulas instead of keeping copies that drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

Array = Any


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
    """

    name: str
    params: Tuple[str, ...]
    param_event_dims: Tuple[int, ...]
    to_natural: Callable[..., Tuple[Array, ...]]
    natural_event_dims: Tuple[int, ...]
    from_natural: Callable[..., Dict[str, Array]]
    fixed: Tuple[str, ...] = ()
    convex_support: bool = True
    label_kind: str | None = None

    @property
    def classification(self) -> bool:
        return self.label_kind is not None


def _identity_family(name, params, event_dims=None, **kw) -> Family:
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


def _gaussian_to_natural(ops, loc, scale):
    precision = scale**-2  # one op (each op is a node for autograd on the hot path)
    return precision, precision * loc


def _gaussian_from_natural(ops, precision, precision_loc):
    return {"loc": precision_loc / precision, "scale": ops.rsqrt(precision)}


def _mvn_to_natural(ops, loc, precision_matrix):
    return precision_matrix, ops.matvec(precision_matrix, loc)


def _mvn_from_natural(ops, precision_matrix, precision_loc):
    tril = ops.cholesky(precision_matrix)
    return {"loc": ops.cho_solve(tril, precision_loc), "precision_matrix": precision_matrix}


def _halfnormal_to_natural(ops, scale):
    return (scale**-2,)


def _halfnormal_from_natural(ops, precision):
    return {"scale": ops.rsqrt(precision)}


def _poisson_to_natural(ops, rate):
    return (ops.log(rate),)


def _poisson_from_natural(ops, log_rate):
    return {"rate": ops.exp(log_rate)}


# Geometric (failures before the first success, p = success probability):
# log p(k) = k*log(1-p) + log p, natural parameter log(1-p) = -softplus(logits).
def _geometric_to_natural(ops, logits):
    return (-ops.softplus(logits),)


def _geometric_from_natural(ops, log1m_p):
    return {"logits": ops.log(-ops.expm1(log1m_p)) - log1m_p}


# NegativeBinomial (successes before total_count failures, p = success
# probability): log p(k) = k*log p + r*log(1-p) + ..., natural parameter
# log p = logsigmoid(logits).
def _negbin_to_natural(ops, logits):
    return (ops.logsigmoid(logits),)


def _negbin_from_natural(ops, log_p):
    return {"logits": log_p - ops.log(-ops.expm1(log_p))}


def _vonmises_to_natural(ops, loc, concentration):
    return concentration * ops.cos(loc), concentration * ops.sin(loc)


def _vonmises_from_natural(ops, c, s):
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
    ("loc", "precision_matrix"),
    (1, 2),
    _mvn_to_natural,
    (2, 1),
    _mvn_from_natural,  # the pool is parameterised by its precision matrix
)
BERNOULLI = _identity_family("Bernoulli", ("logits",), convex_support=False, label_kind="bernoulli")
CATEGORICAL = _identity_family(
    "Categorical", ("logits",), (1,), convex_support=False, label_kind="categorical"
)
ONE_HOT_CATEGORICAL = _identity_family(
    "OneHotCategorical", ("logits",), (1,), convex_support=False, label_kind="one_hot"
)
CONTINUOUS_BERNOULLI = _identity_family("ContinuousBernoulli", ("logits",))
BINOMIAL = _identity_family("Binomial", ("logits",), fixed=("total_count",), convex_support=False)
MULTINOMIAL = _identity_family(
    "Multinomial", ("logits",), (1,), fixed=("total_count",), convex_support=False
)
POISSON = Family(
    "Poisson",
    ("rate",),
    (0,),
    _poisson_to_natural,
    (0,),
    _poisson_from_natural,
    convex_support=False,
)
GEOMETRIC = Family(
    "Geometric",
    ("logits",),
    (0,),
    _geometric_to_natural,
    (0,),
    _geometric_from_natural,
    convex_support=False,
)
NEGATIVE_BINOMIAL = Family(
    "NegativeBinomial",
    ("logits",),
    (0,),
    _negbin_to_natural,
    (0,),
    _negbin_from_natural,
    fixed=("total_count",),
    convex_support=False,
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
