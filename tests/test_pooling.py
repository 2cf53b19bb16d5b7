"""Log-linear pooling against independent oracles: the defining identity,
quadrature / summation, the paper's worked example and theorems, and the two
backends against each other."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import scipy.integrate
import torch
from families_cases import CASES, CONTINUOUS_1D, DISCRETE_1D, make_torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_mixup import UnsupportedDistributionError, log_linear_pool, pool_pairs

ALL = sorted(CASES)


def _points(dists, n=6):
    """Values in the support: draws from each input distribution."""
    torch.manual_seed(0)
    return torch.cat([d.sample((n,)) for d in dists])


def _identity_spread(pooled, dists, weights, y):
    """Spread over y of log p~(y) - sum_k w_k log p_k(y); 0 for a correct pool."""
    lhs = pooled.log_prob(y)
    rhs = sum(w * d.log_prob(y) for w, d in zip(weights, dists))
    diff = (lhs - rhs).reshape(len(y), -1)
    return (diff.max(0).values - diff.min(0).values).abs().max().item(), diff


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seed", [0, 1])
def test_defining_identity_torch(name, seed):
    rng = np.random.default_rng(seed)
    dists = [make_torch(name, CASES[name](rng)) for _ in range(3)]
    weights = [0.2, 0.5, 0.3]
    pooled = log_linear_pool(dists, weights)
    spread, diff = _identity_spread(pooled, dists, weights, _points(dists))
    assert torch.isfinite(diff).all()
    assert spread < 1e-8 * max(1.0, diff.abs().max().item())


@pytest.mark.parametrize("name", ALL)
def test_pool_keeps_family(name):
    rng = np.random.default_rng(3)
    d1, d2 = make_torch(name, CASES[name](rng)), make_torch(name, CASES[name](rng))
    pooled = log_linear_pool([d1, d2], [0.4, 0.6])
    expected = (
        dist.MultivariateNormal if name.startswith(("MultivariateNormal", "LowRank")) else type(d1)
    )
    assert type(pooled) is expected
    assert pooled.batch_shape == d1.batch_shape and pooled.event_shape == d1.event_shape


@pytest.mark.parametrize("name", sorted(CONTINUOUS_1D))
def test_normalisation_by_quadrature(name):
    rng = np.random.default_rng(7)
    d1, d2 = make_torch(name, CASES[name](rng)), make_torch(name, CASES[name](rng))
    w = [0.3, 0.7]
    pooled = log_linear_pool([d1, d2], w)

    def unnormalised(y):
        y = torch.tensor(y, dtype=torch.float64)
        return math.exp(w[0] * d1.log_prob(y).item() + w[1] * d2.log_prob(y).item())

    lo, hi = CONTINUOUS_1D[name]
    z, _err = scipy.integrate.quad(unnormalised, lo, hi, limit=200)
    # p~(y) = prod p_k(y)^w_k / Z at any point of the support
    y0 = d1.sample()
    expected = w[0] * d1.log_prob(y0) + w[1] * d2.log_prob(y0) - math.log(z)
    assert pooled.log_prob(y0).item() == pytest.approx(expected.item(), abs=1e-6)
    total, _ = scipy.integrate.quad(
        lambda y: math.exp(pooled.log_prob(torch.tensor(y, dtype=torch.float64)).item()),
        lo,
        hi,
        limit=200,
    )
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(DISCRETE_1D))
def test_normalisation_by_summation(name):
    rng = np.random.default_rng(11)
    d1, d2 = make_torch(name, CASES[name](rng)), make_torch(name, CASES[name](rng))
    w = [0.65, 0.35]
    pooled = log_linear_pool([d1, d2], w)
    ks = torch.arange(DISCRETE_1D[name] + 1, dtype=torch.float64)
    if name == "Categorical":
        ks = ks.long()
    unnorm = torch.exp(w[0] * d1.log_prob(ks) + w[1] * d2.log_prob(ks))
    z = unnorm.sum()
    assert torch.allclose(pooled.log_prob(ks).exp(), unnorm / z, atol=1e-10)
    assert pooled.log_prob(ks).exp().sum().item() == pytest.approx(1.0, abs=1e-8)


def test_paper_worked_example():
    # METHOD.md section 2: N(125, 182.25) and N(-125, 182.25), lam = 0.8 -> N(75, 182.25); NLL(80) ~ 3.59
    p = log_linear_pool([dist.Normal(125.0, 13.5), dist.Normal(-125.0, 13.5)], [0.8, 0.2])
    assert p.loc.item() == pytest.approx(75.0, rel=1e-6)
    assert p.scale.item() == pytest.approx(13.5, rel=1e-6)
    assert -p.log_prob(torch.tensor(80.0)).item() == pytest.approx(3.59, abs=5e-3)
    # vanilla mixup predicts at x~ = 3 with the true model: N(27, 30.25); NLL(80) ~ 49.05
    assert -dist.Normal(27.0, 5.5).log_prob(torch.tensor(80.0)).item() == pytest.approx(
        49.05, abs=5e-3
    )


@pytest.mark.parametrize("name", ALL)
def test_weight_one_returns_first(name):
    rng = np.random.default_rng(5)
    d1, d2 = make_torch(name, CASES[name](rng)), make_torch(name, CASES[name](rng))
    pooled = log_linear_pool([d1, d2], [1.0, 0.0])
    y = _points([d1])
    assert torch.allclose(pooled.log_prob(y), d1.log_prob(y), atol=1e-9, rtol=1e-9)


@given(
    mu=st.lists(st.floats(-50, 50), min_size=2, max_size=2),
    sigma=st.floats(0.05, 20),
    lam=st.floats(0, 1),
)
@settings(max_examples=60, deadline=None)
def test_homoscedastic_normal_mixes_means(mu, sigma, lam):
    # paper Thm 4.4: with equal variances the pool is mixup of the means
    p = log_linear_pool(
        [
            dist.Normal(torch.tensor(mu[0], dtype=torch.float64), sigma),
            dist.Normal(torch.tensor(mu[1], dtype=torch.float64), sigma),
        ],
        [lam, 1 - lam],
    )
    assert p.loc.item() == pytest.approx(lam * mu[0] + (1 - lam) * mu[1], abs=1e-9)
    assert p.scale.item() == pytest.approx(sigma, rel=1e-9)


@given(
    logits=st.lists(st.lists(st.floats(-20, 20), min_size=4, max_size=4), min_size=2, max_size=2),
    lam=st.floats(0, 1),
)
@settings(max_examples=60, deadline=None)
def test_categorical_mixes_logits(logits, lam):
    # paper Thm 4.3: the categorical pool is mixup of the logits
    a, b = (torch.tensor(lg, dtype=torch.float64) for lg in logits)
    p = log_linear_pool([dist.Categorical(logits=a), dist.Categorical(logits=b)], [lam, 1 - lam])
    assert torch.allclose(p.logits, torch.log_softmax(lam * a + (1 - lam) * b, -1), atol=1e-9)


@given(
    log_scales=st.lists(st.floats(-4, 4), min_size=2, max_size=2),
    locs=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=2),
    lam=st.floats(0, 1),
)
@settings(max_examples=80, deadline=None)
def test_normal_stable_in_float32_across_scales(log_scales, locs, lam):
    scales = [10.0**s for s in log_scales]
    ds = [
        dist.Normal(torch.tensor(m, dtype=torch.float32), torch.tensor(s, dtype=torch.float32))
        for m, s in zip(locs, scales)
    ]
    p = log_linear_pool(ds, [lam, 1 - lam])
    assert torch.isfinite(p.loc) and torch.isfinite(p.scale) and p.scale > 0
    lo, hi = min(locs), max(locs)
    assert lo - 1e-3 * (1 + abs(lo)) <= p.loc.item() <= hi + 1e-3 * (1 + abs(hi))


@given(
    log_rates=st.lists(st.floats(-4, 4), min_size=2, max_size=2),
    lam=st.floats(0, 1),
    logits=st.lists(st.floats(-60, 60), min_size=2, max_size=2),
)
@settings(max_examples=60, deadline=None)
def test_rates_and_logits_stable_in_float32(log_rates, lam, logits):
    rates = [torch.tensor(10.0**r, dtype=torch.float32) for r in log_rates]
    p = log_linear_pool([dist.Poisson(r) for r in rates], [lam, 1 - lam])
    assert torch.isfinite(p.rate) and p.rate > 0
    for cls in (dist.Bernoulli, dist.Geometric):
        ls = [torch.tensor(lg, dtype=torch.float32) for lg in logits]
        q = log_linear_pool([cls(logits=lg) for lg in ls], [lam, 1 - lam])
        assert torch.isfinite(q.logits) or (
            cls is dist.Geometric and torch.isinf(q.logits) and q.logits > 0
        )
        assert torch.isfinite(q.log_prob(torch.tensor(1.0)))


@pytest.mark.parametrize(
    "name",
    [
        "Normal",
        "Gamma",
        "Poisson",
        "Categorical",
        "MultivariateNormal",
        "Beta",
        "VonMises",
        "NegativeBinomial",
    ],
)
def test_gradients_flow_to_parameters_and_weights(name):
    rng = np.random.default_rng(2)
    params = [CASES[name](rng) for _ in range(2)]
    leaves = []
    ds = []
    for p in params:
        kw = {}
        for k, v in p.items():
            if k == "total_count":
                kw[k] = v
                continue
            t = torch.tensor(v, dtype=torch.float64, requires_grad=True)
            leaves.append(t)
            kw[k] = t
        ds.append(getattr(dist, name)(**kw))
    lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    pooled = log_linear_pool(ds, [lam, 1 - lam])
    y = ds[0].sample((4,))
    pooled.log_prob(y).sum().backward()
    for t in leaves + [lam]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and (t.grad != 0).any()


# --- wrappers ---------------------------------------------------------------


def _wrapped_cases():
    torch.manual_seed(0)
    a = dist.Normal(torch.randn(3, 2), torch.rand(3, 2) + 0.5)
    b = dist.Normal(torch.randn(3, 2), torch.rand(3, 2) + 0.5)
    m1, m2 = torch.tensor([1, 1, 0]).bool(), torch.tensor([1, 0, 1]).bool()
    aff = dist.transforms.AffineTransform(1.0, 2.0)
    return {
        "independent": ([a.to_event(1), b.to_event(1)], None),
        "expanded": (
            [
                dist.Gamma(torch.tensor(2.0), 1.0).expand([3]),
                dist.Gamma(torch.tensor([3.0, 1.5, 2.5]), 2.0),
            ],
            None,
        ),
        "expanded-wrapper": (
            [
                dist.torch_distribution.ExpandedDistribution(
                    dist.Gamma(torch.tensor(2.0), 1.0), [3]
                ),
                dist.Gamma(torch.tensor([3.0, 1.5, 2.5]), 2.0),
            ],
            None,
        ),
        "masked": (
            [dist.Normal(torch.zeros(3), 1.0).mask(m1), dist.Normal(torch.ones(3), 2.0).mask(m2)],
            m1 & m2,
        ),
        "transformed": (
            [
                dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0), [aff]),
                dist.TransformedDistribution(dist.Normal(torch.ones(3), 3.0), [aff]),
            ],
            None,
        ),
        "independent-of-expanded": (
            [
                dist.Poisson(torch.tensor(2.0)).expand([3, 2]).to_event(2),
                dist.Poisson(torch.rand(3, 2) + 1).to_event(2),
            ],
            None,
        ),
    }


@pytest.mark.parametrize("case", sorted(_wrapped_cases()))
def test_wrappers_defining_identity(case):
    dists, mask = _wrapped_cases()[case]
    dists = [d for d in dists]
    w = [0.35, 0.65]
    pooled = log_linear_pool(dists, w)
    unmasked = [d.base_dist if mask is not None else d for d in dists]
    core = pooled.base_dist if mask is not None else pooled
    y = _points(unmasked, 5)
    spread, _ = _identity_spread(core, unmasked, w, y)
    assert spread < 1e-5
    assert pooled.batch_shape == torch.broadcast_shapes(*[d.batch_shape for d in dists])
    assert pooled.event_shape == dists[0].event_shape
    if mask is not None:
        assert torch.equal(pooled._mask, mask)
        lp = pooled.log_prob(y)
        assert (lp[:, ~mask] == 0).all()


def test_transformed_needs_equal_transforms():
    a = dist.TransformedDistribution(
        dist.Normal(0.0, 1.0), [dist.transforms.AffineTransform(1.0, 2.0)]
    )
    b = dist.TransformedDistribution(
        dist.Normal(0.0, 1.0), [dist.transforms.AffineTransform(0.0, 2.0)]
    )
    with pytest.raises(ValueError, match="transforms are equal"):
        log_linear_pool([a, b], [0.5, 0.5])


@given(lam=st.floats(0, 1), per_example=st.booleans(), seed=st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_pool_pairs_matches_pairwise_pools(lam, per_example, seed):
    g = torch.Generator().manual_seed(seed)
    n = 5
    d = dist.Normal(
        torch.randn(n, 2, generator=g, dtype=torch.float64),
        torch.rand(n, 2, generator=g, dtype=torch.float64) + 0.1,
    ).to_event(1)
    perm = torch.randperm(n, generator=g)
    lam_t = (
        torch.rand(n, generator=g, dtype=torch.float64)
        if per_example
        else torch.tensor(lam, dtype=torch.float64)
    )
    pooled = pool_pairs(d, lam_t, perm, dim=0)
    for i in range(n):
        li = lam_t[i] if per_example else lam_t
        ref = log_linear_pool(
            [
                dist.Normal(d.base_dist.loc[i], d.base_dist.scale[i]),
                dist.Normal(d.base_dist.loc[perm[i]], d.base_dist.scale[perm[i]]),
            ],
            [li, 1 - li],
        )
        assert torch.allclose(pooled.base_dist.loc[i], ref.loc, atol=1e-10)
        assert torch.allclose(pooled.base_dist.scale[i], ref.scale, atol=1e-10)


def test_pool_pairs_along_inner_dim_with_mask():
    loc = torch.arange(6.0).reshape(2, 3)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    d = dist.Normal(loc, 1.0).mask(mask)
    perm = torch.tensor([2, 0, 1])
    pooled = pool_pairs(d, 0.5, perm, dim=-1)
    assert torch.allclose(pooled.base_dist.loc, 0.5 * loc + 0.5 * loc[:, perm])
    assert torch.equal(pooled._mask, mask & mask[:, perm])


def test_pool_pairs_total_count_must_match_within_pairs():
    d = dist.Binomial(torch.tensor([3.0, 3.0, 4.0]), logits=torch.zeros(3))
    pool_pairs(d, 0.5, torch.tensor([1, 0, 2]))  # pairs (0,1), (2,2): equal counts
    with pytest.raises(ValueError, match="total_count"):
        pool_pairs(d, 0.5, torch.tensor([2, 0, 1]))


# --- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        dist.StudentT(3.0),
        dist.Laplace(0.0, 1.0),
        dist.Delta(torch.tensor(0.0)),
        dist.MixtureSameFamily(dist.Categorical(torch.ones(2)), dist.Normal(torch.zeros(2), 1.0)),
    ],
    ids=lambda d: type(d).__name__,
)
def test_unsupported_family_error(bad):
    with pytest.raises(UnsupportedDistributionError) as info:
        log_linear_pool([bad, bad], [0.5, 0.5])
    assert isinstance(info.value, TypeError)
    msg = str(info.value)
    assert type(bad).__name__ in msg and "Normal" in msg and "Poisson" in msg
    with pytest.raises(UnsupportedDistributionError):
        pool_pairs(bad.expand([3]), 0.5, torch.tensor([1, 2, 0]))


@pytest.mark.parametrize(
    "dists, weights, match",
    [
        ([dist.Normal(0.0, 1.0), dist.Gamma(1.0, 1.0)], [0.5, 0.5], "one family"),
        (
            [dist.Binomial(3, probs=torch.tensor(0.5)), dist.Binomial(4, probs=torch.tensor(0.5))],
            [0.5, 0.5],
            "total_count",
        ),
        (
            [dist.Normal(torch.zeros(3), 1.0), dist.Normal(torch.zeros(4), 1.0)],
            [0.5, 0.5],
            "do not broadcast",
        ),
        ([dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0)], [1.2, -0.2], r"\[0, 1\]"),
        ([dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0)], [0.5, 0.6], "sum to 1"),
        ([dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0)], [float("nan"), 0.5], "finite"),
        ([dist.Normal(0.0, 1.0)], [1.0], "at least 2"),
        ([dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0)], [1.0], "weights"),
        (
            [dist.Normal(0.0, 1.0).to_event(0), dist.Normal(torch.zeros(2), 1.0).to_event(1)],
            [0.5, 0.5],
            "Independent|same wrappers|one family",
        ),
    ],
)
def test_bad_input_errors(dists, weights, match):
    with pytest.raises(ValueError, match=match):
        log_linear_pool(dists, weights)


def test_per_example_weights_must_sum_to_one():
    lam = torch.tensor([0.2, 0.9])
    with pytest.raises(ValueError, match="sum to 1"):
        log_linear_pool(
            [dist.Normal(torch.zeros(2), 1.0), dist.Normal(torch.ones(2), 1.0)], [lam, lam]
        )
    p = log_linear_pool(
        [dist.Normal(torch.zeros(2), 1.0), dist.Normal(torch.ones(2), 1.0)], [lam, 1 - lam]
    )
    assert torch.allclose(p.loc, 1 - lam)


@pytest.mark.parametrize(
    "lam, perm, match",
    [
        (1.5, [1, 0, 2], r"\[0, 1\]"),
        (-0.1, [1, 0, 2], r"\[0, 1\]"),
        (0.5, [1, 0], "length 3"),
        (torch.tensor([0.5, 0.5]), [1, 0, 2], "one value per example"),
        (0.5, [0.0, 1.0, 2.0], "integer"),
        (0.5, [0, 1, 5], "0..2"),
    ],
)
def test_pool_pairs_bad_input(lam, perm, match):
    d = dist.Normal(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match=match):
        pool_pairs(d, lam, torch.as_tensor(perm), dim=0)


def test_pool_pairs_batch_of_one_and_bad_dim():
    with pytest.raises(ValueError, match="batch of size 1"):
        pool_pairs(dist.Normal(torch.zeros(1), 1.0), 0.5, torch.tensor([0]))
    with pytest.raises(ValueError, match="not a batch dim"):
        pool_pairs(dist.Normal(torch.zeros(3), 1.0), 0.5, torch.tensor([1, 2, 0]), dim=2)
    with pytest.raises(ValueError, match="not a batch dim"):
        pool_pairs(dist.Normal(0.0, 1.0), 0.5, torch.tensor([0]))
