"""The NumPyro handlers (issue 4): probmix, mixup, embed, mixable.

Real NumPyro inference throughout (traces, log_density, SVI, Predictive, MCMC);
every expected value is computed by hand in numpy.
"""

import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.stats as st
from jax import random
from numpyro.handlers import seed, trace
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoDelta, AutoDiagonalNormal, AutoNormal
from numpyro.infer.util import log_density
from numpyro.primitives import Messenger

from pyro_mixup.errors import UnsupportedDistributionError
from pyro_mixup.numpyro import embed, mixable
from pyro_mixup.numpyro._scoring import HashStream, beta_symmetric
from pyro_mixup.numpyro.handlers import mixup, probmix
from pyro_mixup.pairing import NearestNeighbourPairing

N = 6
LAM = 0.3
PERM = np.array([3, 0, 5, 1, 2, 4])
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, 2)).astype(np.float32)
LOC = RNG.normal(size=N).astype(np.float32)
SCALE = RNG.uniform(0.5, 2.0, size=N).astype(np.float32)
Y = RNG.normal(size=N).astype(np.float32)


def _normal_model(loc=LOC, scale=SCALE):
    def model(y=None):
        with numpyro.plate("data", N):
            return numpyro.sample("y", dist.Normal(jnp.asarray(loc), jnp.asarray(scale)), obs=y)

    return model


def _pool_normal(loc, scale, lam, perm):
    t = 1 / scale**2
    tt = lam * t + (1 - lam) * t[perm]
    m = (lam * t * loc + (1 - lam) * t[perm] * loc[perm]) / tt
    return m, 1 / np.sqrt(tt)


def _logp(model, *args, **kwargs):
    return float(log_density(model, args, kwargs, {})[0])


# --- imports -------------------------------------------------------------------


def test_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['pyro'] = None\n"
        "import pyro_mixup.numpyro as pmn\n"
        "from pyro_mixup.numpyro import embed, mixable, handlers, probmix, mixup\n"
        "import numpyro.distributions as d\n"
        "p = pmn.log_linear_pool([d.Normal(125., 13.5), d.Normal(-125., 13.5)], [0.8, 0.2])\n"
        "assert abs(float(-p.log_prob(80.)) - 3.59) < 5e-3\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --- the likelihood and its target, by hand ---------------------------------------


def test_normal_mixed_target_equals_hand_pool():
    m, s = _pool_normal(LOC, SCALE, LAM, PERM)
    y_mix = LAM * Y + (1 - LAM) * Y[PERM]
    expected = st.norm(m, s).logpdf(y_mix).sum()
    got = _logp(probmix(_normal_model(), lam=LAM, perm=PERM), jnp.asarray(Y))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    tr = trace(probmix(_normal_model(), lam=LAM, perm=PERM)).get_trace(jnp.asarray(Y))
    np.testing.assert_allclose(tr["y"]["value"], y_mix, rtol=1e-6)


def test_normal_expected_target_equals_hand_pool():
    m, s = _pool_normal(LOC, SCALE, LAM, PERM)
    expected = (LAM * st.norm(m, s).logpdf(Y) + (1 - LAM) * st.norm(m, s).logpdf(Y[PERM])).sum()
    got = _logp(probmix(_normal_model(), lam=LAM, perm=PERM, target="expected"), jnp.asarray(Y))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_per_example_lam():
    lam = np.linspace(0.1, 0.9, N).astype(np.float32)
    m, s = _pool_normal(LOC, SCALE, lam, PERM)
    y_mix = lam * Y + (1 - lam) * Y[PERM]
    got = _logp(probmix(_normal_model(), lam=lam, perm=PERM), jnp.asarray(Y))
    np.testing.assert_allclose(got, st.norm(m, s).logpdf(y_mix).sum(), rtol=1e-5)


def test_beta_jitter_on_the_mixed_target():
    n, beta = 4000, 0.25
    y = jnp.asarray(RNG.normal(size=n).astype(np.float32))
    perm = np.roll(np.arange(n), 1)

    def model(y=None):
        with numpyro.plate("data", n):
            return numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    v = np.asarray(trace(seed(probmix(model, lam=LAM, perm=perm, beta=beta), 3)).get_trace(y)["y"]["value"])
    noise = v - (LAM * np.asarray(y) + (1 - LAM) * np.asarray(y)[perm])
    assert st.kstest(noise / np.sqrt(beta), "norm").pvalue > 1e-3


def test_poisson_expected_target_is_default():
    rate = RNG.uniform(0.5, 4.0, size=N)
    counts = RNG.poisson(3.0, size=N).astype(np.float32)

    def model(y=None):
        with numpyro.plate("data", N):
            numpyro.sample("y", dist.Poisson(jnp.asarray(rate, jnp.float32)), obs=y)

    pooled = np.exp(LAM * np.log(rate) + (1 - LAM) * np.log(rate[PERM]))
    expected = (LAM * st.poisson(pooled).logpmf(counts) + (1 - LAM) * st.poisson(pooled).logpmf(counts[PERM])).sum()
    np.testing.assert_allclose(_logp(probmix(model, lam=LAM, perm=PERM), jnp.asarray(counts)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="outside its support"):
        _logp(probmix(model, lam=LAM, perm=PERM, target="mixed"), jnp.asarray(counts))


def _categorical_model(logits):
    def model(y=None):
        with numpyro.plate("data", N):
            numpyro.sample("y", dist.Categorical(logits=jnp.asarray(logits)), obs=y)

    return model


def _log_softmax(a):
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


def test_categorical_expected_and_soft_label_targets():
    logits = RNG.normal(size=(N, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0, 2])
    pooled = _log_softmax(LAM * logits + (1 - LAM) * logits[PERM])
    rows = np.arange(N)
    expected = (LAM * pooled[rows, labels] + (1 - LAM) * pooled[rows, labels[PERM]]).sum()
    got = _logp(probmix(_categorical_model(logits), lam=LAM, perm=PERM), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # "mixed": cross-entropy against the log-linear pool of beta-smoothed labels
    beta = 0.01
    log_s = np.log(np.eye(3)[labels] + beta)
    soft = np.exp(LAM * log_s + (1 - LAM) * log_s[PERM])
    soft /= soft.sum(-1, keepdims=True)
    expected = (soft * pooled).sum()
    got = _logp(probmix(_categorical_model(logits), lam=LAM, perm=PERM, target="mixed", beta=beta), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="beta > 0"):
        _logp(probmix(_categorical_model(logits), lam=LAM, perm=PERM, target="mixed"), jnp.asarray(labels))


def test_masked_pairs_contribute_only_what_is_observed():
    mask = np.array([True, True, False, True, True, True])

    def model(y=None):
        with numpyro.plate("data", N), numpyro.handlers.mask(mask=jnp.asarray(mask)):
            numpyro.sample("y", dist.Normal(jnp.asarray(LOC), jnp.asarray(SCALE)), obs=y)

    m, s = _pool_normal(LOC, SCALE, LAM, PERM)
    both = mask & mask[PERM]
    expected = (LAM * st.norm(m, s).logpdf(Y) * mask + (1 - LAM) * st.norm(m, s).logpdf(Y[PERM]) * mask[PERM]).sum()
    got = _logp(probmix(model, lam=LAM, perm=PERM, target="expected"), jnp.asarray(Y))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    y_mix = LAM * Y + (1 - LAM) * Y[PERM]
    got = _logp(probmix(model, lam=LAM, perm=PERM), jnp.asarray(Y))
    np.testing.assert_allclose(got, (st.norm(m, s).logpdf(y_mix) * both).sum(), rtol=1e-5)


def test_subsampling_keeps_the_scale():
    size = 24

    def model(y):
        with numpyro.plate("data", size, subsample_size=N) as idx:
            numpyro.sample("y", dist.Normal(jnp.asarray(LOC), jnp.asarray(SCALE)), obs=y[idx])

    y_full = jnp.asarray(RNG.normal(size=size).astype(np.float32))
    tr = trace(seed(probmix(model, lam=LAM, perm=PERM), 0)).get_trace(y_full)
    assert tr["y"]["scale"] == size / N
    idx = np.asarray(tr["data"]["value"])
    yb = np.asarray(y_full)[idx]
    m, s = _pool_normal(LOC, SCALE, LAM, PERM)
    expected = size / N * st.norm(m, s).logpdf(LAM * yb + (1 - LAM) * yb[PERM]).sum()
    np.testing.assert_allclose(_logp(seed(probmix(model, lam=LAM, perm=PERM), 0), y_full), expected, rtol=1e-5)


def test_obs_mask_factor_and_deterministic_sites():
    # obs_mask= splits a site into y_observed (masked) and y_unobserved (latent);
    # factor sites and deterministic sites carry no likelihood of examples.
    mask = np.array([True, False, True, True, True, False])

    def model(y):
        with numpyro.plate("data", N):
            numpyro.deterministic("double", 2 * jnp.asarray(LOC))
            numpyro.sample("y", dist.Normal(jnp.asarray(LOC), jnp.asarray(SCALE)), obs=y, obs_mask=jnp.asarray(mask))
        numpyro.factor("penalty", -1.0)

    tr = trace(seed(probmix(model, lam=LAM, perm=PERM, target="expected"), 0)).get_trace(jnp.asarray(Y))
    m, s = _pool_normal(LOC, SCALE, LAM, PERM)
    expected = LAM * mask * st.norm(m, s).logpdf(Y) + (1 - LAM) * mask[PERM] * st.norm(m, s).logpdf(Y[PERM])
    site = tr["y_observed"]
    np.testing.assert_allclose(site["fn"].log_prob(site["value"]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tr["double"]["value"], 2 * LOC)
    assert float(tr["penalty"]["fn"].log_prob(tr["penalty"]["value"])) == -1.0
    assert type(tr["y_unobserved"]["fn"]).__name__ == "MaskedDistribution"  # latent: untouched
    with pytest.raises(ValueError, match="named no sample site"):
        trace(seed(probmix(model, lam=LAM, perm=PERM, sites=["y_observed", "nope"]), 0)).get_trace(jnp.asarray(Y))


# --- M-ProbMix: fusion at a latent site and at an embed layer -------------------------


def test_latent_site_fusion_is_the_hand_pool():
    def model(y=None):
        with numpyro.plate("data", N):
            z = numpyro.sample("z", dist.Normal(jnp.asarray(LOC), jnp.asarray(SCALE)))
            return numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    tr = trace(seed(probmix(model, at="z", lam=LAM, perm=PERM), 1)).get_trace(jnp.asarray(Y))
    m, s = _pool_normal(LOC, SCALE, LAM, PERM)
    np.testing.assert_allclose(tr["z"]["fn"].loc, m, rtol=1e-5)
    np.testing.assert_allclose(tr["z"]["fn"].scale, s, rtol=1e-5)
    # downstream: scored on the mixed target, not pooled again
    np.testing.assert_allclose(tr["y"]["fn"].loc, tr["z"]["value"], rtol=1e-6)
    np.testing.assert_allclose(tr["y"]["value"], LAM * Y + (1 - LAM) * Y[PERM], rtol=1e-6)


def test_embed_draws_from_the_pooled_embedding():
    loc = RNG.normal(size=(N, 3)).astype(np.float32)
    scale = RNG.uniform(0.5, 1.5, size=(N, 3)).astype(np.float32)
    key = random.key(7)

    def model():
        with numpyro.plate("data", N):
            return embed("h", dist.Normal(jnp.asarray(loc), jnp.asarray(scale)).to_event(1), rng_key=key)

    z = probmix(model, at="h", lam=LAM, perm=PERM)()
    t = 1 / scale**2
    tt = LAM * t + (1 - LAM) * t[PERM]
    m = (LAM * t * loc + (1 - LAM) * t[PERM] * loc[PERM]) / tt
    eps = np.asarray(random.normal(key, (N, 3)))
    np.testing.assert_allclose(z, m + eps / np.sqrt(tt), rtol=1e-4, atol=1e-5)
    # unwrapped: the plain reparameterised draw, and no site in the trace's sample sites
    z0 = model()
    np.testing.assert_allclose(z0, loc + scale * eps, rtol=1e-5, atol=1e-5)
    tr = trace(seed(model, 0)).get_trace()
    assert all(site["type"] != "sample" for site in tr.values())


# --- mixup baselines ------------------------------------------------------------------


def test_mixup_at_inputs_and_hidden():
    w = np.array([1.5, -0.5], dtype=np.float32)

    def model(x, y=None):
        x = mixable("x", x)
        h = mixable("h", jnp.tanh(x))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Normal(h @ jnp.asarray(w), 1.0), obs=y)

    x_mix = LAM * X + (1 - LAM) * X[PERM]
    y_mix = LAM * Y + (1 - LAM) * Y[PERM]
    tr = trace(mixup(model, at="x", lam=LAM, perm=PERM)).get_trace(jnp.asarray(X), jnp.asarray(Y))
    np.testing.assert_allclose(tr["y"]["fn"].loc, np.tanh(x_mix) @ w, rtol=1e-5)
    np.testing.assert_allclose(tr["y"]["value"], y_mix, rtol=1e-6)
    h_mix = LAM * np.tanh(X) + (1 - LAM) * np.tanh(X)[PERM]
    tr = trace(mixup(model, at="h", lam=LAM, perm=PERM)).get_trace(jnp.asarray(X), jnp.asarray(Y))
    np.testing.assert_allclose(tr["y"]["fn"].loc, h_mix @ w, rtol=1e-5)


def test_mixup_classification_uses_the_float_weight_with_integer_labels():
    logits = RNG.normal(size=(N, 3)).astype(np.float32)
    labels = jnp.asarray([0, 2, 1, 1, 0, 2])
    lp = _log_softmax(logits)
    rows = np.arange(N)

    def model(y=None):
        mixable("x", jnp.zeros((N, 1)))
        with numpyro.plate("data", N):
            numpyro.sample("y", dist.Categorical(logits=jnp.asarray(logits)), obs=y)

    got = _logp(mixup(model, at="x", lam=LAM, perm=PERM), labels)
    lab = np.asarray(labels)
    np.testing.assert_allclose(got, (LAM * lp[rows, lab] + (1 - LAM) * lp[rows, lab[PERM]]).sum(), rtol=1e-5)


# --- randomness -------------------------------------------------------------------------


def _jitted_value(model_fn):
    @jax.jit
    def f(key):
        return trace(seed(model_fn, key)).get_trace(jnp.asarray(Y))["y"]["value"]

    return f


def test_random_draws_under_jit_are_fresh_per_key_and_reproducible():
    f = _jitted_value(probmix(_normal_model(), alpha=0.5))
    a, b, a2 = f(random.key(0)), f(random.key(1)), f(random.key(0))
    np.testing.assert_array_equal(a, a2)
    assert not np.allclose(a, b)
    # every value is lam * y_i + (1 - lam) * y_j for one lam and a permutation j
    for v in (a, b):
        assert next(_all_candidates(np.asarray(v)), None) is not None


def _all_candidates(v):
    """Recover (lam, perm) from mixed values y~ (brute force over partners of item 0)."""
    for j in range(N):
        lam = 1.0 if Y[0] == Y[j] else (v[0] - Y[j]) / (Y[0] - Y[j])
        if not 0 <= lam <= 1:
            continue
        # every other item must have a partner giving the same lam
        partners = []
        for i in range(N):
            d = np.abs(lam * Y[i] + (1 - lam) * Y - v[i])
            k = int(np.argmin(d))
            if d[k] > 1e-4:
                break
            partners.append(k)
        else:
            if sorted(partners) == list(range(N)):
                yield partners


def test_rng_key_argument_and_no_key_error():
    model = _normal_model()
    tr1 = trace(probmix(model, rng_key=random.key(3))).get_trace(jnp.asarray(Y))
    tr2 = trace(probmix(model, rng_key=random.key(3))).get_trace(jnp.asarray(Y))
    np.testing.assert_array_equal(tr1["y"]["value"], tr2["y"]["value"])
    with pytest.raises(ValueError, match="numpyro.handlers.seed or pass rng_key="):
        trace(probmix(model)).get_trace(jnp.asarray(Y))


def test_beta_sampler_matches_jax_beta():
    for a in (0.05, 0.4, 1.0, 3.0):
        ours = np.asarray(beta_symmetric(random.key(1), a, (40_000,)))
        ref = np.asarray(random.beta(random.key(2), a, a, (40_000,)))
        assert st.ks_2samp(ours, ref).pvalue > 1e-3, a
        # the tails, on the log scale
        assert st.ks_2samp(np.log(np.minimum(ours, 1 - ours) + 1e-30),
                           np.log(np.minimum(ref, 1 - ref) + 1e-30)).pvalue > 1e-3, a


def test_hash_stream_permutations_are_uniform():
    perms = jax.vmap(lambda k: HashStream(k).permutation(5))(random.split(random.key(0), 12_000))
    perms = np.asarray(perms)
    assert all(sorted(p) == list(range(5)) for p in perms[:200])
    # every one of the 120 permutations, in equal proportion
    codes = perms @ (5 ** np.arange(5))
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 120
    assert st.chisquare(counts).pvalue > 1e-3
    # a permutation of a length that is not a power of two, and big
    p = np.asarray(HashStream(random.key(5)).permutation(1000))
    assert sorted(p.tolist()) == list(range(1000))


def test_shift_and_table_pairings():
    def pairs(pairing, key):
        tr = trace(seed(probmix(_normal_model(), lam=1.0, pairing=pairing, target="expected"), key)).get_trace(jnp.asarray(Y))
        return np.asarray(tr["y"]["fn"].perm.index)

    p = pairs("shift", 0)
    assert len({(p[i] - i) % N for i in range(N)}) == 1  # one cyclic shift
    table = NearestNeighbourPairing(X, k=2)
    for key in range(5):
        p = pairs(table, key)
        assert all(p[i] in table.candidates[i] for i in range(N))


# --- model and guide share the draw -----------------------------------------------------


class _Record(Messenger):
    """Records the (pooled) loc of site z as the handler below it left it, via a
    debug callback (works under jit and grad)."""

    def __init__(self, fn, tag, store):
        super().__init__(fn)
        self.tag, self.store = tag, store

    def postprocess_message(self, msg):
        if msg["type"] == "sample" and msg["name"] == "z":
            jax.debug.callback(lambda v: self.store.setdefault(self.tag, []).append(np.asarray(v)), msg["fn"].loc)


M_LOC = np.arange(N, dtype=np.float32)


def _latent_model(x, y=None):
    with numpyro.plate("data", N):
        z = numpyro.sample("z", dist.Normal(jnp.asarray(M_LOC), 1.0))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=y)


def _latent_guide(x, y=None):
    a = numpyro.param("a", 1.0)
    with numpyro.plate("data", N):
        # an amortised guide: q(z_i | x_i); loc equals the prior's loc, times a = 1
        numpyro.sample("z", dist.Normal(a * jnp.asarray(M_LOC) + 0.0 * x[:, 0], 1.0))


@pytest.mark.parametrize("form", ["with", "functional"])
def test_model_and_guide_share_one_draw_per_update(form):
    store = {}
    svi = SVI(_Record(_latent_model, "model", store), _Record(_latent_guide, "guide", store),
              numpyro.optim.Adam(1e-9), Trace_ELBO())
    state = svi.init(random.key(0), jnp.asarray(X), jnp.asarray(Y))
    store.clear()
    if form == "with":
        @jax.jit
        def step(state):
            with probmix(alpha=0.7, at="z"):
                return svi.update(state, jnp.asarray(X), jnp.asarray(Y))
    else:
        step = jax.jit(probmix(svi.update, alpha=0.7, at="z"))
        step = (lambda f: lambda s: f(s, jnp.asarray(X), jnp.asarray(Y)))(step)
    for _ in range(3):
        state, loss = step(state)
    jax.block_until_ready(loss)
    model_locs, guide_locs = store["model"], store["guide"]
    assert len(model_locs) == len(guide_locs) == 3
    for m, g in zip(model_locs, guide_locs):
        np.testing.assert_allclose(m, g, rtol=1e-5, atol=1e-5)  # same lam and partners
        assert not np.allclose(m, M_LOC)  # and something was pooled
    assert not np.allclose(model_locs[0], model_locs[1])  # a fresh draw each update


def test_wrapping_model_and_guide_separately_draws_twice():
    store = {}
    svi = SVI(_Record(probmix(_latent_model, alpha=0.7, at="z"), "model", store),
              _Record(probmix(_latent_guide, alpha=0.7, at="z"), "guide", store),
              numpyro.optim.Adam(1e-9), Trace_ELBO())
    state = svi.init(random.key(0), jnp.asarray(X), jnp.asarray(Y))
    store.clear()
    state, loss = jax.jit(svi.update)(state, jnp.asarray(X), jnp.asarray(Y))
    jax.block_until_ready(loss)
    assert not np.allclose(store["model"][0], store["guide"][0])


# --- inference: Predictive, SVI with autoguides, networks, MCMC ---------------------------------


def _regression(x, y=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    with numpyro.plate("data", x.shape[0]):
        return numpyro.sample("y", dist.Normal(x @ w, s), obs=y)


XR = jnp.asarray(RNG.normal(size=(32, 2)).astype(np.float32))
YR = XR @ jnp.array([1.0, -2.0]) + 0.1 * jnp.asarray(RNG.normal(size=32).astype(np.float32))


def test_predictive_on_a_wrapped_model_is_unchanged():
    post = {"w": jnp.ones((4, 2)), "s": jnp.full((4,), 0.5)}
    a = Predictive(_regression, post)(random.key(2), XR)
    b = Predictive(probmix(_regression, alpha=0.4), post)(random.key(2), XR)
    np.testing.assert_array_equal(a["y"], b["y"])
    assert a["y"].shape == (4, 32)


@pytest.mark.parametrize(
    "guide_cls,elbo",
    [(AutoNormal, Trace_ELBO()), (AutoDelta, Trace_ELBO()), (AutoDiagonalNormal, TraceMeanField_ELBO())],
)
def test_svi_with_autoguides_learns(guide_cls, elbo):
    model = probmix(_regression, alpha=0.4)
    svi = SVI(model, guide_cls(model), numpyro.optim.Adam(0.05), elbo)
    res = svi.run(random.key(0), 250, XR, YR, progress_bar=False)
    assert res.losses[-50:].mean() < res.losses[:50].mean() - 10
    loc = res.params.get("w_auto_loc", res.params.get("auto_loc"))
    # mixup of a linear model with a linear target keeps the least-squares weights
    np.testing.assert_allclose(np.asarray(loc)[:2], [1.0, -2.0], atol=0.3)


def _mlp_model(x, y=None, hidden=16):
    from jax.example_libraries import stax

    net = numpyro.module("net", stax.serial(stax.Dense(hidden), stax.Tanh, stax.Dense(2)), (x.shape[0], x.shape[1]))
    x = mixable("x", x)
    out = net(x)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(out[:, 0], jax.nn.softplus(out[:, 1]) + 1e-3), obs=y)


def _embed_model(x, y=None):
    w1 = numpyro.param("w1", lambda k: random.normal(k, (2, 8)) * 0.5)
    v1 = numpyro.param("v1", lambda k: random.normal(k, (2, 8)) * 0.1)
    w2 = numpyro.param("w2", lambda k: random.normal(k, (8,)) * 0.3)
    with numpyro.plate("data", x.shape[0]):
        z = embed("h", dist.Normal(jnp.tanh(x @ w1), jax.nn.softplus(x @ v1) + 1e-3).to_event(1))
        numpyro.sample("y", dist.Normal(z @ w2, 0.5), obs=y)


@pytest.mark.parametrize(
    "name,wrap,model",
    [
        ("probmix", lambda m: probmix(m, alpha=0.4), _mlp_model),
        ("m-probmix embed", lambda m: probmix(m, alpha=0.4, at="h"), _embed_model),
        ("mix", lambda m: mixup(m, alpha=0.4, at="x"), _mlp_model),
        ("probmix shift per-example", lambda m: probmix(m, alpha=0.4, pairing="shift", per_example=True), _mlp_model),
    ],
)
def test_short_svi_run_decreases_the_loss(name, wrap, model):
    svi = SVI(wrap(model), lambda x, y=None: None, numpyro.optim.Adam(0.03), Trace_ELBO())
    state = svi.init(random.key(0), XR, YR)
    update = jax.jit(svi.update)
    losses = []
    for _ in range(200):
        state, loss = update(state, XR, YR)
        losses.append(loss)
    losses = np.asarray(jnp.stack(losses))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-30:]) < np.mean(losses[:30]) - 5, name


def test_mcmc_with_fixed_draws_targets_the_pooled_posterior():
    # y_i ~ N(mu, 1) with a flat-ish prior: under ProbMix with lam, perm fixed the
    # pooled likelihood is N(mu, 1) at the mixed targets, so E[mu] = mean(y~) (nearly).
    y = jnp.asarray(RNG.normal(3.0, 1.0, size=N).astype(np.float32))

    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 100.0))
        with numpyro.plate("data", N):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    mcmc = MCMC(NUTS(probmix(model, lam=LAM, perm=PERM)), num_warmup=150, num_samples=300, progress_bar=False)
    mcmc.run(random.key(0), y)
    y_mix = LAM * np.asarray(y) + (1 - LAM) * np.asarray(y)[PERM]
    # the mixed targets have the same mean as y for a permutation; check the spread instead
    mu = np.asarray(mcmc.get_samples()["mu"])
    assert abs(mu.mean() - y_mix.mean()) < 0.25
    # and the potential is deterministic under random draws (NumPyro's fixed default key)
    mcmc = MCMC(NUTS(probmix(model, alpha=0.5)), num_warmup=30, num_samples=30, progress_bar=False)
    mcmc.run(random.key(1), y)
    assert np.isfinite(np.asarray(mcmc.get_samples()["mu"])).all()


# --- errors ------------------------------------------------------------------------------


def test_error_paths():
    def student(y=None):
        with numpyro.plate("data", N):
            numpyro.sample("y", dist.StudentT(3.0, jnp.asarray(LOC), 1.0), obs=y)

    with pytest.raises(UnsupportedDistributionError, match="StudentT"):
        _logp(probmix(student, lam=LAM, perm=PERM), jnp.asarray(Y))
    with pytest.raises(ValueError, match="named no site"):
        _logp(probmix(_normal_model(), lam=LAM, perm=PERM, at="nope"), jnp.asarray(Y))
    with pytest.raises(ValueError, match="named no site"):
        _logp(mixup(_normal_model(), lam=LAM, perm=PERM, at="x"), jnp.asarray(Y))

    def one(y=None):
        with numpyro.plate("data", 1):
            numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="batch of size 1"):
        _logp(seed(probmix(one), 0), jnp.zeros(1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        probmix(_normal_model(), lam=1.5)
    with pytest.raises(ValueError, match="length"):
        _logp(probmix(_normal_model(), lam=LAM, perm=[1, 0]), jnp.asarray(Y))
    with pytest.raises(ValueError, match="permutation"):
        probmix(_normal_model(), perm=[0, 0, 1, 2, 3, 4])

    def no_plate(y=None):
        numpyro.sample("y", dist.Normal(jnp.asarray(LOC), 1.0).to_event(1), obs=y)

    with pytest.raises(ValueError, match="in no plate"):
        _logp(probmix(no_plate, lam=LAM, perm=PERM), jnp.asarray(Y))

    def two_plates(y=None):
        with numpyro.plate("a", 2, dim=-2), numpyro.plate("b", N):
            numpyro.sample("y", dist.Normal(jnp.asarray(LOC), 1.0), obs=y)

    with pytest.raises(ValueError, match="several plates"):
        _logp(probmix(two_plates, lam=LAM, perm=PERM), jnp.broadcast_to(jnp.asarray(Y), (2, N)))
    # ...and plate= resolves it
    got = _logp(probmix(two_plates, lam=LAM, perm=PERM, plate="b"), jnp.broadcast_to(jnp.asarray(Y), (2, N)))
    assert np.isfinite(got)
    with pytest.raises(ValueError, match="at="):
        mixup(_normal_model(), at=None)
    with pytest.raises(ValueError, match="alpha"):
        probmix(_normal_model(), alpha=-1.0)
    with pytest.raises(ValueError, match="target"):
        probmix(_normal_model(), target="both")


def test_lam_one_with_precisions_orders_of_magnitude_apart_is_exact():
    # lam = 1 keeps each example's own density: b + lam * (a - b) would give a
    # precision of 0 here in float32 (an infinite scale, a NaN loc)
    loc = jnp.asarray([0.5, -1.0, 2.0, 0.0])
    scale = jnp.asarray([1e-3, 8.0, 1e-3, 9.0])

    def model():
        with numpyro.plate("data", 4):
            return embed("h", dist.Normal(loc, scale), rng_key=random.key(0))

    tr = trace(probmix(model, at="h", lam=1.0, perm=[1, 0, 3, 2])).get_trace()
    pooled = tr["h"]["args"][0]
    np.testing.assert_allclose(pooled.loc, loc, rtol=1e-6)
    np.testing.assert_allclose(pooled.scale, scale, rtol=1e-6)


# --- docs and examples -------------------------------------------------------------------

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_docs_page_example_runs_as_printed():
    block = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "numpyro.md").read_text(), flags=re.S)[0]
    namespace = {}
    exec(compile(block, "docs/numpyro.md", "exec"), namespace)
    assert np.isfinite(float(namespace["loss"]))


# --- review fixes: to_event labels, bounded jitter, expanded targets, size checks --------


def test_label_smoothing_target_under_to_event():
    logits = random.normal(random.PRNGKey(0), (4, 2, 3))
    y = jnp.array([[0, 1], [2, 2], [1, 0], [0, 0]])
    perm = jnp.array([2, 0, 3, 1])
    lam, beta = 0.3, 0.05

    def model(y=None):
        with numpyro.plate("data", 4):
            numpyro.sample("y", dist.Categorical(logits=logits).to_event(1), obs=y)

    tr = trace(seed(probmix(model, lam=lam, perm=perm, target="mixed", beta=beta), 0)).get_trace(y)
    lp = tr["y"]["fn"].log_prob(y)
    log_s = jnp.log(jax.nn.one_hot(y, 3) + beta)
    soft = jax.nn.softmax(lam * log_s + (1 - lam) * log_s[perm], -1)
    pooled = jax.nn.log_softmax(lam * logits + (1 - lam) * logits[perm], -1)
    np.testing.assert_allclose(lp, (soft * pooled).sum((-1, -2)), rtol=1e-5, atol=1e-5)


def test_beta_jitter_refused_on_bounded_support():
    def model(y):
        with numpyro.plate("data", 4):
            numpyro.sample("y", dist.Gamma(jnp.full((4,), 2.0), 3.0), obs=y)

    with pytest.raises(ValueError, match="bounded support of Gamma"):
        seed(probmix(model, beta=0.1), 0)(jnp.full((4,), 0.01))


def test_expected_target_expands_under_vectorised_particles():
    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", len(x)):
            numpyro.sample("y", dist.Poisson(jnp.exp(w * x)), obs=y)

    x, y = jnp.array([0.5, -1.0, 2.0, 0.1]), jnp.array([1.0, 0.0, 4.0, 1.0])
    tr = trace(seed(probmix(model, lam=0.5, perm=[2, 0, 3, 1]), 0)).get_trace(x, y)
    expanded = tr["y"]["fn"].expand((3, 4))
    assert expanded.batch_shape == (3, 4)
    np.testing.assert_allclose(expanded.log_prob(y)[1], tr["y"]["fn"].log_prob(y), rtol=1e-6)


def test_error_example_dim_not_matching_plate():
    def embed_model():
        with numpyro.plate("d", 3):
            return embed("h", dist.Normal(jnp.zeros((1, 2)), 1.0).to_event(1))

    with pytest.raises(ValueError, match="has size 1 but plate 'd' has 3"):
        seed(probmix(embed_model, at="h", lam=0.5, perm=[1, 2, 0]), 0)()

    def mix_model():
        with numpyro.plate("d", 3):
            return mixable("x", jnp.ones((1, 2)))

    with pytest.raises(ValueError, match="has size 1 but plate 'd' has 3"):
        seed(mixup(mix_model, at="x", lam=0.5, perm=[1, 2, 0]), 0)()


def test_mixup_accepts_wrapped_likelihoods_outside_the_registry():
    def model(x, y=None):
        x = mixable("x", x)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.StudentT(4.0, x, 1.0).to_event(1), obs=y)

    x, y = jnp.ones((4, 2)), jnp.arange(8.0).reshape(4, 2)
    perm = jnp.array([2, 0, 3, 1])
    tr = trace(seed(mixup(model, at="x", lam=0.3, perm=perm), 0)).get_trace(x, y)
    np.testing.assert_allclose(tr["y"]["value"], 0.3 * y + 0.7 * y[perm], rtol=1e-6)
