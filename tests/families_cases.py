"""Random parameters for every family, built for both backends from one numpy draw.

Shared by the pooling tests: ``CASES[name](rng)`` returns numpy parameters,
``make_torch(name, params)`` and ``make_numpyro(name, params)`` build the
distribution on each backend.
"""

import numpy as np

D = 3  # event size for vector families


def _tril(rng):
    a = rng.normal(size=(D, D)) * 0.4
    return np.tril(a, -1) + np.diag(rng.uniform(0.5, 1.5, D))


CASES = {
    "Normal": lambda r: dict(loc=r.normal(0, 3), scale=r.uniform(0.2, 3)),
    "MultivariateNormal": lambda r: dict(loc=r.normal(size=D), scale_tril=_tril(r)),
    "MultivariateNormalCov": lambda r: (
        lambda L: dict(loc=r.normal(size=D), covariance_matrix=L @ L.T)
    )(_tril(r)),
    "MultivariateNormalPrec": lambda r: (
        lambda L: dict(loc=r.normal(size=D), precision_matrix=L @ L.T)
    )(_tril(r)),
    "LowRankMultivariateNormal": lambda r: dict(
        loc=r.normal(size=D),
        cov_factor=r.normal(size=(D, 1)) * 0.5,
        cov_diag=r.uniform(0.5, 1.5, D),
    ),
    "Bernoulli": lambda r: dict(logits=r.normal(0, 2)),
    "Categorical": lambda r: dict(logits=r.normal(0, 2, size=4)),
    "OneHotCategorical": lambda r: dict(logits=r.normal(0, 2, size=4)),
    "Binomial": lambda r: dict(total_count=7.0, logits=r.normal(0, 1.5)),
    "Multinomial": lambda r: dict(total_count=5, logits=r.normal(0, 1.5, size=D)),
    "Poisson": lambda r: dict(rate=r.uniform(0.5, 6)),
    "Geometric": lambda r: dict(probs=r.uniform(0.2, 0.8)),
    "NegativeBinomial": lambda r: dict(total_count=3.5, probs=r.uniform(0.2, 0.7)),
    "Exponential": lambda r: dict(rate=r.uniform(0.3, 3)),
    "Gamma": lambda r: dict(concentration=r.uniform(0.7, 4), rate=r.uniform(0.5, 3)),
    "Chi2": lambda r: dict(df=r.uniform(1.5, 6)),
    "InverseGamma": lambda r: dict(concentration=r.uniform(1.5, 4), rate=r.uniform(0.5, 3)),
    "Beta": lambda r: dict(concentration1=r.uniform(0.7, 4), concentration0=r.uniform(0.7, 4)),
    "Dirichlet": lambda r: dict(concentration=r.uniform(0.7, 3, size=D)),
    "LogNormal": lambda r: dict(loc=r.normal(0, 1), scale=r.uniform(0.2, 1.5)),
    "HalfNormal": lambda r: dict(scale=r.uniform(0.3, 3)),
    "VonMises": lambda r: dict(loc=r.uniform(-3, 3), concentration=r.uniform(0.5, 4)),
    "ContinuousBernoulli": lambda r: dict(logits=r.normal(0, 2)),
}

TORCH_ONLY = {"OneHotCategorical", "ContinuousBernoulli"}
CONTINUOUS_1D = {
    "Normal": (-np.inf, np.inf),
    "Exponential": (0, np.inf),
    "Gamma": (0, np.inf),
    "Chi2": (0, np.inf),
    "InverseGamma": (0, np.inf),
    "Beta": (0, 1),
    "LogNormal": (0, np.inf),
    "HalfNormal": (0, np.inf),
    "VonMises": (-np.pi, np.pi),
    "ContinuousBernoulli": (0, 1),
}
DISCRETE_1D = {  # (support upper bound used for summation)
    "Bernoulli": 1,
    "Binomial": 7,
    "Poisson": 200,
    "Geometric": 400,
    "NegativeBinomial": 400,
    "Categorical": 3,
}


def _cls_name(name):
    return "MultivariateNormal" if name.startswith("MultivariateNormal") else name


def make_torch(name, params, dtype=None):
    import pyro.distributions as dist
    import torch

    dtype = dtype or torch.float64
    kw = {
        k: (v if isinstance(v, int) else torch.as_tensor(v, dtype=dtype)) for k, v in params.items()
    }
    return getattr(dist, _cls_name(name))(**kw)


def make_numpyro(name, params):
    import jax.numpy as jnp
    import numpyro.distributions as dist

    kw = {k: jnp.asarray(v) for k, v in params.items()}
    if name in ("Binomial", "Multinomial", "NegativeBinomial"):
        tc = kw.pop("total_count")
        if name == "NegativeBinomial":
            return dist.NegativeBinomialProbs(tc, kw["probs"])
        return getattr(dist, name)(total_count=tc.astype("int32"), **kw)
    return getattr(dist, _cls_name(name))(**kw)
