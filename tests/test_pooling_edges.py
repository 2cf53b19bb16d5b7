"""Pooling at the edges (issue 12, item 1): every case on both backends, in
float32 and float64. Each input here once gave a quiet wrong answer, NaN or a
bare library error; now it pools correctly or is refused with a message that
says what is wrong and what to do."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pyro.distributions as pd
import pytest
import scipy.stats
import torch

import pyro_mixup
import pyro_mixup.numpyro as pmn

SIDES = [("torch", "float32"), ("torch", "float64"), ("jax", "float32"), ("jax", "float64")]


class Side:
    """One backend in one dtype: arrays, distributions, the pooling functions."""

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype
        self.torch = name == "torch"
        self.dist = pd if self.torch else nd
        self.pool = pyro_mixup.log_linear_pool if self.torch else pmn.log_linear_pool
        self.pairs = pyro_mixup.pool_pairs if self.torch else pmn.pool_pairs
        self.eps = np.finfo(dtype).eps

    def a(self, x, dtype=None):
        x = np.asarray(x, dtype=dtype or self.dtype)
        return torch.as_tensor(x) if self.torch else jnp.asarray(x)

    def index(self, x):
        return torch.as_tensor(np.asarray(x)) if self.torch else jnp.asarray(np.asarray(x))

    @staticmethod
    def np(x):
        if isinstance(x, torch.Tensor):
            return x.detach().double().numpy()
        return np.asarray(x, dtype=np.float64)

    def negbin(self, total_count, logits=None, probs=None):
        if self.torch:
            return pd.NegativeBinomial(total_count, logits=logits, probs=probs)
        if logits is not None:
            return nd.NegativeBinomialLogits(total_count, logits)
        return nd.NegativeBinomialProbs(total_count, probs)

    def geometric(self, logits):
        return pd.Geometric(logits=logits) if self.torch else nd.GeometricLogits(logits)


@pytest.fixture(params=SIDES, ids=["-".join(s) for s in SIDES])
def S(request):
    name, dtype = request.param
    if name == "jax" and dtype == "float64":
        with jax.enable_x64(True):
            yield Side(name, dtype)
    else:
        yield Side(name, dtype)


# --- event sizes ----------------------------------------------------------------


def _mismatched(S, kind, n1, n2):
    d, a = S.dist, S.a
    if kind == "Categorical":
        return [d.Categorical(logits=a(np.zeros(n))) for n in (n1, n2)]
    if kind == "Multinomial":
        return [d.Multinomial(4, logits=a(np.zeros(n))) for n in (n1, n2)]
    if kind == "Dirichlet":
        return [d.Dirichlet(a(np.ones(n))) for n in (n1, n2)]
    if kind == "MultivariateNormal":
        return [d.MultivariateNormal(a(np.zeros(n)), scale_tril=a(np.eye(n))) for n in (n1, n2)]
    if kind == "OneHotCategorical":
        return [d.OneHotCategorical(logits=a(np.zeros(n))) for n in (n1, n2)]
    assert kind == "to_event"
    return [d.Normal(a(np.zeros(n)), 1.0).to_event(1) for n in (n1, n2)]


@pytest.mark.parametrize(
    "kind",
    [
        "Categorical",
        "OneHotCategorical",
        "Multinomial",
        "Dirichlet",
        "MultivariateNormal",
        "to_event",
    ],
)
@pytest.mark.parametrize("sizes", [(1, 4), (3, 4)], ids=["broadcastable", "not-broadcastable"])
def test_members_of_different_event_sizes_are_refused(S, kind, sizes):
    if kind == "OneHotCategorical" and not S.torch:
        pytest.skip("NumPyro has no OneHotCategorical")
    dists = _mismatched(S, kind, *sizes)
    with pytest.raises(ValueError, match="event s") as info:
        S.pool(dists, [0.5, 0.5])
    msg = str(info.value)
    assert f"({sizes[0]},)" in msg and f"({sizes[1]},)" in msg, msg
    assert "member 1" in msg


# --- low-rank Gaussians dominated by their low-rank part --------------------------


def _dominated_lowrank(S, seed=0, n=4, rank=2, ratio=1e6):
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(n, rank)) * np.sqrt(ratio) / np.sqrt(rank)
    return S.dist.LowRankMultivariateNormal(S.a(rng.normal(size=n)), S.a(factor), S.a(np.ones(n)))


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("weights", [(0.3, 0.7), (1.0, 0.0), (0.0, 1.0)])
def test_dominated_lowrank_pooled_with_itself_is_itself(S, weights):
    d = _dominated_lowrank(S)
    p = S.pool([d, d], list(weights))
    cov = S.np(d.cov_factor) @ S.np(d.cov_factor).T + np.diag(S.np(d.cov_diag))  # exact, in float64
    assert _rel(S.np(p.covariance_matrix), cov) < 1e-4
    assert _rel(S.np(p.loc), S.np(d.loc)) < 1e-6
    y = d.sample((8,)) if S.torch else d.sample(jax.random.PRNGKey(0), (8,))
    # the member in its own square-root form scores as the pool does; in float32
    # both are closer to the exact density than the member's Woodbury log_prob
    own = S.dist.MultivariateNormal(d.loc, scale_tril=d.scale_tril)
    np.testing.assert_allclose(S.np(p.log_prob(y)), S.np(own.log_prob(y)), rtol=1e-4)
    exact = scipy.stats.multivariate_normal(S.np(d.loc), cov).logpdf(S.np(y))
    assert (
        np.abs(S.np(p.log_prob(y)) - exact).max()
        <= np.abs(S.np(d.log_prob(y)) - exact).max() + 1e-3 * np.abs(exact).max()
    )


def test_dominated_lowrank_pool_of_two_matches_float64(S):
    # ratio 1e3: at 1e4 float32 gives 2.5e-4, the error of the libraries' own float32
    # scale_tril of each member (pooling their exact factors rounded to float32: 3e-7)
    ds = [_dominated_lowrank(S, seed=s, ratio=1e3) for s in (1, 2)]
    w = [0.35, 0.65]
    p = S.pool(ds, w)
    covs = [S.np(d.cov_factor) @ S.np(d.cov_factor).T + np.diag(S.np(d.cov_diag)) for d in ds]
    precision = sum(wk * np.linalg.inv(c) for wk, c in zip(w, covs))
    cov = np.linalg.inv(precision)
    loc = cov @ sum(wk * np.linalg.solve(c, S.np(d.loc)) for wk, c, d in zip(w, covs, ds))
    assert _rel(S.np(p.covariance_matrix), cov) < 1e-4
    assert _rel(S.np(p.loc), loc) < 1e-4


def test_lowrank_and_full_rank_members_pool_together(S):
    lr = _dominated_lowrank(S, ratio=10.0)
    full = S.dist.MultivariateNormal(S.a(np.zeros(4)), scale_tril=S.a(np.eye(4) * 2.0))
    p = S.pool([lr, full], [0.5, 0.5])
    cov_lr = S.np(lr.cov_factor) @ S.np(lr.cov_factor).T + np.diag(S.np(lr.cov_diag))
    cov = np.linalg.inv(0.5 * np.linalg.inv(cov_lr) + 0.5 * np.eye(4) / 4.0)
    assert _rel(S.np(p.covariance_matrix), cov) < 1e-4


# --- weights -------------------------------------------------------------------------


def test_slightly_negative_weights_are_projected_onto_the_simplex(S):
    d = S.dist.Gamma(S.a([1e6, 0.5]), S.a([1.0, 2.0]))
    a, b = S.dist.Gamma(d.concentration[0], d.rate[0]), S.dist.Gamma(d.concentration[1], d.rate[1])
    p = S.pool([a, b], [-5e-6, 1 + 5e-6])  # inside the tolerance; unprojected: concentration -4.5
    assert S.np(p.concentration) == pytest.approx(0.5, rel=1e-6)
    assert S.np(p.rate) == pytest.approx(2.0, rel=1e-6)


# --- boundary parameters ---------------------------------------------------------------


def test_poisson_rate_zero_drops_out_at_weight_zero_and_wins_otherwise(S):
    zero, two = S.dist.Poisson(S.a(0.0)), S.dist.Poisson(S.a(2.0))
    assert S.np(S.pool([zero, two], [0.0, 1.0]).rate) == pytest.approx(2.0, rel=1e-6)
    assert S.np(S.pool([zero, two], [0.5, 0.5]).rate) == 0.0
    pairs = S.pairs(S.dist.Poisson(S.a([0.0, 2.0, 3.0])), S.a(1.0), S.index([1, 2, 0]))
    np.testing.assert_allclose(S.np(pairs.rate), [0.0, 2.0, 3.0], rtol=1e-6)


def test_boundary_gradient_stays_finite():
    # weight 0 on a member of rate 0: d/dw of w * log(0) would be 0 * inf = NaN without the double where
    rate = torch.tensor([0.0, 2.0], dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    p = pyro_mixup.log_linear_pool([pd.Poisson(rate[0]), pd.Poisson(rate[1])], [lam, 1 - lam])
    p.log_prob(torch.tensor(3.0, dtype=torch.float64)).backward()
    assert torch.isfinite(lam.grad) and torch.isfinite(rate.grad[1]) and rate.grad[1] != 0

    def f(lam, rates):
        q = pmn.log_linear_pool([nd.Poisson(rates[0]), nd.Poisson(rates[1])], [lam, 1 - lam])
        return q.log_prob(3.0)

    g_lam, g_rate = jax.grad(f, argnums=(0, 1))(0.0, jnp.array([0.0, 2.0]))
    assert np.isfinite(g_lam) and np.isfinite(g_rate[1]) and g_rate[1] != 0


def test_numpyro_zero_probabilities_stay_zero(S):
    if S.torch:
        pytest.skip("torch clamps probabilities away from 0 itself")
    zeroed = nd.Categorical(probs=S.a([0.0, 0.5, 0.5]))
    other = nd.Categorical(probs=S.a([0.2, 0.3, 0.5]))
    p = pmn.log_linear_pool([zeroed, other], [0.5, 0.5])
    probs = S.np(p.probs)
    assert probs[0] == 0.0 and np.isclose(probs.sum(), 1.0) and np.all(probs[1:] > 0)
    np.testing.assert_allclose(
        S.np(pmn.log_linear_pool([zeroed, other], [0.0, 1.0]).probs), S.np(other.probs), rtol=1e-6
    )

    multi = nd.Multinomial(4, probs=S.a([0.0, 0.5, 0.5]))
    counts = S.a([0.0, 2.0, 2.0])
    self_pool = pmn.log_linear_pool([multi, multi], [0.3, 0.7])
    assert S.np(self_pool.log_prob(counts)) == pytest.approx(S.np(multi.log_prob(counts)), rel=1e-5)
    assert (
        S.np(self_pool.log_prob(S.a([1.0, 1.0, 2.0]))) < -1e3
    )  # the zero class stays (all but) impossible

    stuck = nd.NegativeBinomialProbs(3.0, S.a(0.0))  # all mass at 0
    live = nd.NegativeBinomialProbs(3.0, S.a(0.5))
    assert S.np(pmn.log_linear_pool([stuck, live], [0.5, 0.5]).log_prob(S.a(0.0))) == pytest.approx(
        0.0, abs=1e-5
    )
    k = S.a(2.0)
    assert S.np(pmn.log_linear_pool([stuck, live], [0.0, 1.0]).log_prob(k)) == pytest.approx(
        S.np(live.log_prob(k)), rel=1e-5
    )


def test_infinite_logits_of_certain_outcomes(S):
    # a logit of -inf is a probability 0: kept, and the pool scores without NaN
    d = S.dist.Categorical(
        logits=S.a([-np.inf, 0.0, 1.0]), validate_args=False
    )  # NumPyro refuses -inf
    e = S.dist.Categorical(logits=S.a([0.0, 0.0, 0.0]))
    p = S.pool([d, e], [0.5, 0.5])
    lp = S.np(p.log_prob(S.index([0, 1, 2])))
    assert lp[0] < -1e3 and np.all(np.isfinite(lp[1:]))
    assert np.exp(lp[1:]).sum() == pytest.approx(1.0, rel=1e-5)


def test_disjoint_supports_are_refused(S):
    certain = S.dist.Bernoulli(logits=S.a(np.inf), validate_args=False)
    impossible = S.dist.Bernoulli(logits=S.a(-np.inf), validate_args=False)
    with pytest.raises(ValueError, match="supports do not overlap"):
        S.pool([certain, impossible], [0.5, 0.5])


# --- NaN and inf parameters ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_parameters_are_refused_with_the_member_index(S, bad):
    good = S.dist.Normal(S.a(0.0), S.a(1.0))
    broken = S.dist.Normal(S.a([0.0, bad]), S.a(1.0), validate_args=False)
    with pytest.raises(
        ValueError, match=r"member 2 \(Normal\) has (NaN|inf) in its loc \(at index \(1,\)\)"
    ):
        S.pool([good, good, broken], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=r"the distribution \(Normal\) has (NaN|inf) in its loc"):
        S.pairs(broken, S.a(0.5), S.index([1, 0]))


def test_overflowing_pool_is_refused_not_half_nan(S):
    tiny = 1e-30 if S.dtype == "float32" else 1e-200  # precision 1/scale**2 overflows
    ds = [S.dist.Normal(S.a(0.0), S.a(tiny)), S.dist.Normal(S.a(1.0), S.a(1.0))]
    with pytest.raises(ValueError, match=r"pooling Normal members gave a non-finite .*float64"):
        S.pool(ds, [0.5, 0.5])


def test_nan_check_is_skipped_under_jit():
    # traced values cannot be looked at: pooling under jit still works
    f = jax.jit(
        lambda loc: pmn.log_linear_pool([nd.Normal(loc, 1.0), nd.Normal(0.0, 2.0)], [0.5, 0.5]).loc
    )
    assert np.isfinite(float(f(1.0)))


# --- extreme logits -------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["NegativeBinomial", "Geometric"])
@pytest.mark.parametrize("logit", [-500.0, -120.0, -100.0, 100.0, 120.0, 500.0])
def test_extreme_logits_pool_with_themselves_exactly(S, family, logit):
    if family == "NegativeBinomial" and not S.torch and S.dtype == "float32" and logit > 80:
        pytest.skip(
            "NumPyro's own NegativeBinomialLogits is invalid there in float32 (its Gamma rate exp(-logits) is 0)"
        )
    d = (
        S.negbin(S.a(3.0), logits=S.a(logit))
        if family == "NegativeBinomial"
        else S.geometric(S.a(logit))
    )
    k = S.a([0.0, 1.0, 3.0, 10.0])
    lp = S.np(d.log_prob(k))
    for w in ([0.5, 0.5], [1.0, 0.0], [0.1, 0.9]):
        p = S.pool([d, d], w)
        assert np.isfinite(S.np(p.logits))
        np.testing.assert_allclose(S.np(p.log_prob(k)), lp, rtol=10 * S.eps, atol=10 * S.eps)


def test_extreme_logits_pool_between_members(S):
    ds = [S.geometric(S.a(-120.0)), S.geometric(S.a(-110.0))]
    p = S.pool(ds, [0.5, 0.5])
    # softplus(l) = exp(l) here, so the pool averages the success probabilities: log((e^-120 + e^-110) / 2)
    expected = np.logaddexp(-120.0, -110.0) - np.log(2.0)
    assert S.np(p.logits) == pytest.approx(expected, rel=1e-6)


# --- half precision ---------------------------------------------------------------------------


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["torch", "jax"])
def test_half_precision_is_refused_with_a_way_out(name, half):
    S = Side(name, "float32")
    if name == "torch":
        dt = getattr(torch, half)
        ds = [
            pd.Gamma(torch.tensor(2.0, dtype=dt), torch.tensor(1.0, dtype=dt)),
            pd.Gamma(torch.tensor(3.0, dtype=dt), torch.tensor(1.0, dtype=dt)),
        ]
        lam = torch.tensor([0.3, 0.7], dtype=dt)
        batch = pd.Normal(torch.zeros(3, dtype=dt), torch.ones(3, dtype=dt))
    else:
        dt = getattr(jnp, half)
        ds = [
            nd.Gamma(jnp.asarray(2.0, dt), jnp.asarray(1.0, dt)),
            nd.Gamma(jnp.asarray(3.0, dt), jnp.asarray(1.0, dt)),
        ]
        lam = jnp.asarray([0.3, 0.7], dt)
        batch = nd.Normal(jnp.zeros(3, dt), jnp.ones(3, dt))
    with pytest.raises(ValueError, match=f"{half}.*float32"):
        S.pool(ds, [lam[0], lam[1]])
    with pytest.raises(ValueError, match=f"{half}.*float32"):
        S.pairs(batch, 0.5, S.index([1, 2, 0]))


# --- fixed parameters -------------------------------------------------------------------------


def test_equal_fixed_parameters_are_compared_up_to_rounding(S):
    summed = S.a(0.1) + S.a(0.2)
    assert S.np(summed) != S.np(S.a(0.3)) or S.dtype == "float32"  # float64: 0.30000000000000004
    a, b = S.negbin(summed, probs=S.a(0.5)), S.negbin(S.a(0.3), probs=S.a(0.4))
    p = S.pool([a, b], [0.5, 0.5])
    assert S.np(p.total_count) == pytest.approx(0.3, rel=1e-6)
    with pytest.raises(ValueError, match="equal total_count"):
        S.pool([a, S.negbin(S.a(0.3001), probs=S.a(0.4))], [0.5, 0.5])
    counts = S.a([0.3, 0.1 + 0.2, 4.0])
    S.pairs(S.negbin(counts, probs=S.a([0.5, 0.4, 0.3])), S.a(0.5), S.index([1, 0, 2]))
    # whole counts compare exactly: in float32, 8 ulps of 2e6 would span a whole count
    big, bigger = (
        S.negbin(S.a(2_000_000.0), probs=S.a(0.5)),
        S.negbin(S.a(2_000_001.0), probs=S.a(0.5)),
    )
    with pytest.raises(ValueError, match="equal total_count"):
        S.pool([big, bigger], [0.5, 0.5])


# --- messages name the user's class ------------------------------------------------------------


def test_numpyro_messages_name_the_users_class():
    bad = nd.BernoulliProbs(jnp.nan, validate_args=False)
    with pytest.raises(ValueError) as info:
        pmn.log_linear_pool([nd.BernoulliProbs(0.5), bad], [0.5, 0.5])
    msg = str(info.value)
    assert "member 1 (BernoulliProbs)" in msg and "BernoulliLogits" not in msg
    with pytest.raises(ValueError) as info:
        pmn.log_linear_pool(
            [nd.Categorical(probs=jnp.ones(2) / 2), nd.Categorical(probs=jnp.ones(3) / 3)],
            [0.5, 0.5],
        )
    assert "CategoricalProbs" in str(info.value) and "CategoricalLogits" not in str(info.value)
    with pytest.raises(ValueError) as info:
        pmn.log_linear_pool([nd.Normal(0.0, 1e-30), nd.Normal(0.0, 1.0)], [0.5, 0.5])
    assert "Normal members" in str(info.value)
