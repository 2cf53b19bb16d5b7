"""The handlers, on both backends from one file (the ``backend`` fixture): traces
checked against hand computations in NumPy, real SVI with the usual ELBOs and
guides, Predictive, MCMC, and every refusal."""

import numpy as np
import pytest
import scipy.stats as st
from backends import harness

N = 6
LAM = 0.3
PERM = np.array([3, 0, 5, 1, 2, 4])
RNG = np.random.default_rng(0)
X1 = RNG.normal(size=N).astype(np.float32)
X = RNG.normal(size=(N, 3)).astype(np.float32)
Y = RNG.normal(size=N).astype(np.float32)
COUNTS = RNG.poisson(2.0, size=N).astype(np.float32)
LABELS = RNG.integers(0, 3, size=N)


def _pool_normal(loc, scale, lam, perm):
    t = 1 / scale**2
    tt = lam * t + (1 - lam) * t[perm]
    return (lam * t * loc + (1 - lam) * t[perm] * loc[perm]) / tt, 1 / np.sqrt(tt)


def _log_softmax(a):
    a = a - a.max(-1, keepdims=True)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


# --- small models, written once ----------------------------------------------------


def normal_model(B):
    def model(x, y=None):
        with B.plate("data", x.shape[0]):
            return B.sample("y", B.dist.Normal(2 * x, 0.5 + abs(x)), obs=y)

    return model


def poisson_model(B):
    def model(x, y=None):
        with B.plate("data", x.shape[0]):
            return B.sample("y", B.dist.Poisson(B.ops.exp(0.3 * x)), obs=y)

    return model


def categorical_model(B):
    def model(x, y=None):
        with B.plate("data", x.shape[0]):
            return B.sample("y", B.dist.Categorical(logits=B.ops.stack([x, -x, x**2], -1)), obs=y)

    return model


def _normal_params():
    return 2 * X1, 0.5 + np.abs(X1)


# --- ProbMix at the likelihood, checked by hand ------------------------------------


@pytest.mark.parametrize("shift", [1, 3])
def test_a_cyclic_perm_takes_the_roll_path_and_equals_the_hand_pool(backend, shift):
    # a fixed perm that is a cyclic shift is applied as a roll (no gather); same numbers
    B = backend
    perm = np.roll(np.arange(N), -shift)  # partner of i is i + shift
    tr = B.trace(B.probmix(normal_model(B), lam=LAM, perm=perm), B.array(X1), B.array(Y))
    m, s = _pool_normal(*_normal_params(), LAM, perm)
    y_mix = LAM * Y + (1 - LAM) * Y[perm]
    np.testing.assert_allclose(B.np(tr["y"].value), y_mix, rtol=1e-6)
    np.testing.assert_allclose(
        B.np(tr["y"].log_prob), st.norm(m, s).logpdf(y_mix), rtol=1e-5, atol=1e-6
    )


def test_normal_mixed_target_equals_hand_pool(backend):
    B = backend
    tr = B.trace(B.probmix(normal_model(B), lam=LAM, perm=PERM), B.array(X1), B.array(Y))
    m, s = _pool_normal(*_normal_params(), LAM, PERM)
    y_mix = LAM * Y + (1 - LAM) * Y[PERM]
    np.testing.assert_allclose(B.np(tr["y"].value), y_mix, rtol=1e-6)
    np.testing.assert_allclose(
        B.np(tr["y"].log_prob), st.norm(m, s).logpdf(y_mix), rtol=1e-5, atol=1e-6
    )


def test_normal_expected_target_equals_hand_pool(backend):
    B = backend
    tr = B.trace(
        B.probmix(normal_model(B), lam=LAM, perm=PERM, target="expected"), B.array(X1), B.array(Y)
    )
    m, s = _pool_normal(*_normal_params(), LAM, PERM)
    expected = LAM * st.norm(m, s).logpdf(Y) + (1 - LAM) * st.norm(m, s).logpdf(Y[PERM])
    np.testing.assert_allclose(B.np(tr["y"].log_prob), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(B.np(tr["y"].value), Y)  # the expected target keeps the data


def test_poisson_expected_target_is_the_default(backend):
    B = backend
    tr = B.trace(B.probmix(poisson_model(B), lam=LAM, perm=PERM), B.array(X1), B.array(COUNTS))
    rate = np.exp(LAM * 0.3 * X1 + (1 - LAM) * 0.3 * X1[PERM])
    expected = LAM * st.poisson(rate).logpmf(COUNTS) + (1 - LAM) * st.poisson(rate).logpmf(
        COUNTS[PERM]
    )
    np.testing.assert_allclose(B.np(tr["y"].log_prob), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="target='expected'"):
        B.trace(
            B.probmix(poisson_model(B), lam=LAM, perm=PERM, target="mixed"),
            B.array(X1),
            B.array(COUNTS),
        )


def test_categorical_expected_and_soft_label_targets(backend):
    B = backend
    logits = np.stack([X1, -X1, X1**2], -1)
    pooled = _log_softmax(LAM * logits + (1 - LAM) * logits[PERM])
    rows = np.arange(N)
    tr = B.trace(B.probmix(categorical_model(B), lam=LAM, perm=PERM), B.array(X1), B.array(LABELS))
    expected = LAM * pooled[rows, LABELS] + (1 - LAM) * pooled[rows, LABELS[PERM]]
    np.testing.assert_allclose(B.np(tr["y"].log_prob), expected, rtol=1e-5)
    # the paper's target: cross-entropy against the pool of beta-smoothed labels
    beta = 0.01
    tr = B.trace(
        B.probmix(categorical_model(B), lam=LAM, perm=PERM, target="mixed", beta=beta),
        B.array(X1),
        B.array(LABELS),
    )
    log_s = np.log(np.eye(3)[LABELS] + beta)
    soft = np.exp(_log_softmax(LAM * log_s + (1 - LAM) * log_s[PERM]))
    np.testing.assert_allclose(B.np(tr["y"].log_prob), (soft * pooled).sum(-1), rtol=1e-5)
    differ = LABELS[PERM] != LABELS  # with lam = 0.3 the smoothed pool leans to the partner's class
    assert differ.any() and (soft.argmax(-1)[differ] == LABELS[PERM][differ]).all()
    with pytest.raises(ValueError, match="beta > 0"):
        B.trace(
            B.probmix(categorical_model(B), lam=LAM, perm=PERM, target="mixed"),
            B.array(X1),
            B.array(LABELS),
        )


def test_label_smoothing_target_under_to_event(backend):
    B = backend
    logits = RNG.normal(size=(N, 2, 3)).astype(np.float32)
    labels = RNG.integers(0, 3, size=(N, 2))

    def model(y=None):
        with B.plate("data", N):
            B.sample("y", B.dist.Categorical(logits=B.array(logits)).to_event(1), obs=y)

    beta = 0.05
    tr = B.trace(B.probmix(model, lam=LAM, perm=PERM, target="mixed", beta=beta), B.array(labels))
    log_s = np.log(np.eye(3)[labels] + beta)
    soft = np.exp(_log_softmax(LAM * log_s + (1 - LAM) * log_s[PERM]))
    pooled = _log_softmax(LAM * logits + (1 - LAM) * logits[PERM])
    np.testing.assert_allclose(B.np(tr["y"].log_prob), (soft * pooled).sum((-1, -2)), rtol=1e-5)


def test_per_example_lam_and_sites_selection(backend):
    B = backend

    def two_sites(x, y=None, z=None):
        with B.plate("data", N):
            B.sample("y", B.dist.Normal(x, 1.0), obs=y)
            B.sample("z", B.dist.Normal(-x, 1.0), obs=z)

    lam = np.linspace(0.1, 1.0, N).astype(np.float32)
    tr = B.trace(
        B.probmix(two_sites, lam=lam, perm=PERM, sites=["y"]), B.array(X1), B.array(Y), B.array(Y)
    )
    np.testing.assert_allclose(B.np(tr["y"].fn.loc), lam * X1 + (1 - lam) * X1[PERM], rtol=1e-6)
    np.testing.assert_allclose(B.np(tr["y"].value), lam * Y + (1 - lam) * Y[PERM], rtol=1e-6)
    np.testing.assert_array_equal(B.np(tr["z"].value), Y)  # not selected: untouched
    assert type(tr["z"].fn) is B.dist.Normal


def test_alpha_zero_is_erm(backend):
    B = backend
    plain = B.log_density(normal_model(B), B.array(X1), B.array(Y))
    for seed in range(3):
        got = B.log_density(
            B.probmix(normal_model(B), alpha=0.0), B.array(X1), B.array(Y), seed=seed
        )
        assert got == pytest.approx(plain, rel=1e-6)


def test_impossible_values_stay_impossible_never_nan(backend):
    # a rate 0 (log-rate -inf) and a masked class (logit -inf) on the handlers' own path:
    # at lam = 1 exactly the plain model's value, otherwise finite (never 0 * -inf = NaN)
    B = backend
    rate = B.array([0.0, 2.0, 1.0])
    counts = B.array([0.0, 1.0, 3.0])
    logits = B.array([[0.0, 1.0, -np.inf], [0.5, 0.2, 0.0], [0.0, 0.0, 0.0]])
    labels = B.array([1, 2, 0], dtype=np.int32)

    def poisson(y):
        with B.plate("data", 3):
            B.sample("y", B.dist.Poisson(rate), obs=y)

    def categorical(y):
        with B.plate("data", 3):
            # NumPyro validates logits by default and rejects -inf: a masked class is meant here
            B.sample("y", B.dist.Categorical(logits=logits, validate_args=False), obs=y)

    for model, y in ((poisson, counts), (categorical, labels)):
        plain = B.log_density(model, y)
        for options in (dict(alpha=0.0), dict(lam=1.0, perm=[1, 2, 0])):
            assert B.log_density(B.probmix(model, **options), y) == pytest.approx(plain, rel=1e-5)
        assert not np.isnan(B.log_density(B.probmix(model, lam=0.3, perm=[1, 2, 0]), y))


def test_beta_jitter_is_gaussian_with_variance_beta(backend):
    B = backend
    n, beta = 4000, 0.25
    y = RNG.normal(size=n).astype(np.float32)
    perm = np.roll(np.arange(n), 1)

    def model(y=None):
        with B.plate("data", n):
            return B.sample("y", B.dist.Normal(0.0, 1.0), obs=y)

    v = B.np(
        B.trace(B.probmix(model, lam=LAM, perm=perm, beta=beta), B.array(y), seed=3)["y"].value
    )
    noise = v - (LAM * y + (1 - LAM) * y[perm])
    assert st.kstest(noise / np.sqrt(beta), "norm").pvalue > 1e-3


def test_beta_jitter_refused_on_bounded_support(backend):
    B = backend

    def model(y):
        with B.plate("data", N):
            B.sample("y", B.dist.Gamma(B.array(np.full(N, 2.0)), 3.0), obs=y)

    y = B.array(np.full(N, 0.01))
    with pytest.raises(ValueError, match="bounded support of Gamma"):
        B.trace(B.probmix(model, beta=0.1), y)
    assert np.isfinite(B.log_density(B.probmix(model, beta=0.0), y))


def test_lam_one_with_precisions_orders_of_magnitude_apart_is_exact(backend):
    # lam = 1 must give each example's own density, even next to a huge precision
    B = backend
    scale = np.array([1e-3, 10.0, 1e-3, 10.0, 1.0, 1.0], np.float32)
    loc = np.arange(N, dtype=np.float32)

    def model(y=None):
        with B.plate("data", N):
            return B.sample("y", B.dist.Normal(B.array(loc), B.array(scale)), obs=y)

    tr = B.trace(B.probmix(model, lam=1.0, perm=PERM), B.array(Y))
    np.testing.assert_allclose(B.np(tr["y"].fn.scale), scale, rtol=1e-5)
    np.testing.assert_allclose(B.np(tr["y"].fn.loc), loc, rtol=1e-5, atol=1e-5)


# --- masks, auxiliary sites, subsampling ---------------------------------------------


def test_masked_pairs_contribute_only_what_is_observed(backend):
    B = backend
    mask = np.array([True, False, True, True, True, False])
    y = Y.copy()
    y[~mask] = 99.0

    def model(x, y=None):
        with B.plate("data", N), B.mask(mask=B.array(mask, dtype=bool)):
            B.sample("y", B.dist.Normal(2 * x, 1.0), obs=y)

    m = LAM * 2 * X1 + (1 - LAM) * 2 * X1[PERM]
    expected = LAM * mask * st.norm(m, 1).logpdf(y) + (1 - LAM) * mask[PERM] * st.norm(m, 1).logpdf(
        y[PERM]
    )
    for_expected = B.probmix(model, lam=LAM, perm=PERM, target="expected")
    assert B.log_density(for_expected, B.array(X1), B.array(y)) == pytest.approx(
        expected.sum(), rel=1e-5
    )
    # the mixed target needs both members: pairs with a masked member drop out
    both = mask & mask[PERM]
    y_mix = LAM * y + (1 - LAM) * y[PERM]
    for_mixed = B.probmix(model, lam=LAM, perm=PERM, target="mixed")
    assert B.log_density(for_mixed, B.array(X1), B.array(y)) == pytest.approx(
        st.norm(m[both], 1).logpdf(y_mix[both]).sum(), rel=1e-5
    )


def test_obs_mask_factor_and_deterministic_sites(backend):
    # obs_mask= splits a site into observed / unobserved parts plus a masked-out
    # site; deterministic and factor sites carry no likelihood: only y is mixed.
    B = backend
    mask = np.array([True, False, True, True, True, True])

    def model(x, y):
        with B.plate("data", N):
            B.deterministic("double", 2 * x)
            B.factor("penalty", -(x**2))
            B.sample("y", B.dist.Normal(2 * x, 1.0), obs=y, obs_mask=B.array(mask, dtype=bool))

    tr = B.trace(B.probmix(model, lam=LAM, perm=PERM, target="expected"), B.array(X1), B.array(Y))
    m = LAM * 2 * X1 + (1 - LAM) * 2 * X1[PERM]
    expected = LAM * mask * st.norm(m, 1).logpdf(Y) + (1 - LAM) * mask[PERM] * st.norm(m, 1).logpdf(
        Y[PERM]
    )
    np.testing.assert_allclose(
        B.np(tr["y_observed"].log_prob) * 1.0, expected, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(B.np(tr["penalty"].log_prob), -(X1**2), rtol=1e-6)


def test_subsampling_keeps_the_plate_scale(backend):
    B = backend
    x = RNG.normal(size=100).astype(np.float32)

    def model(x, y):
        with B.plate("data", 100, subsample_size=10) as idx:
            B.sample("y", B.dist.Normal(2 * x[idx], 1.0), obs=y[idx])

    tr = B.trace(B.probmix(model, alpha=0.5), B.array(x), B.array(2 * x))
    assert float(tr["y"].scale) == pytest.approx(10.0)
    assert tuple(tr["y"].fn.batch_shape) == (10,)


# --- M-ProbMix and mixup, checked by hand ----------------------------------------------


def test_embed_fusion_draws_from_the_hand_pooled_embedding(backend):
    B = backend
    m = RNG.normal(size=(N, 2)).astype(np.float32)
    s = RNG.uniform(0.2, 2.0, size=(N, 2)).astype(np.float32)
    eps = RNG.normal(size=(N, 2)).astype(np.float32)
    seen = {}

    def model(y=None):
        with B.plate("data", N):
            seen["z"] = z = B.embed("h", B.dist.Normal(B.array(m), B.array(s)).to_event(1))
            B.sample("y", B.dist.Normal(z.sum(-1), 1.0), obs=y)

    tr = B.trace(
        B.fixed_embedding_noise(B.probmix(model, lam=LAM, perm=PERM, at="h"), eps), B.array(Y)
    )
    tau = s**-2
    tau_p = LAM * tau + (1 - LAM) * tau[PERM]
    loc_p = (LAM * tau * m + (1 - LAM) * tau[PERM] * m[PERM]) / tau_p
    np.testing.assert_allclose(B.np(seen["z"]), loc_p + eps / np.sqrt(tau_p), rtol=1e-5, atol=1e-5)
    assert list(tr) == ["y"]  # embed adds no site
    assert type(tr["y"].fn) is B.dist.Normal  # the likelihood is not pooled again
    np.testing.assert_allclose(B.np(tr["y"].value), LAM * Y + (1 - LAM) * Y[PERM], rtol=1e-6)


def test_latent_site_fusion_in_the_model(backend):
    B = backend

    def model(x):
        with B.plate("data", N):
            return B.sample("z", B.dist.Normal(x, 1.0 + abs(x)))

    tr = B.trace(B.probmix(model, lam=LAM, perm=PERM, at="z"), B.array(X1))
    m, s = _pool_normal(X1, 1.0 + np.abs(X1), LAM, PERM)
    np.testing.assert_allclose(B.np(tr["z"].fn.loc), m, rtol=1e-5)
    np.testing.assert_allclose(B.np(tr["z"].fn.scale), s, rtol=1e-5)


@pytest.mark.parametrize("where", ["x", "h"])
def test_mixup_replaces_the_mixable_tensor(backend, where):
    B = backend
    seen = {}
    w = np.ones((3, 2), np.float32)

    def model(x, y=None):
        with B.plate("data", N):
            x = B.mixable("x", x)
            h = B.mixable("h", B.ops.tanh(x @ B.array(w)))
            seen["x"], seen["h"] = x, h
            B.sample("y", B.dist.Normal(h.sum(-1), 1.0), obs=y)

    tr = B.trace(B.mixup(model, at=where, lam=LAM, perm=PERM), B.array(X), B.array(Y))
    if where == "x":
        np.testing.assert_allclose(B.np(seen["x"]), LAM * X + (1 - LAM) * X[PERM], rtol=1e-6)
    else:
        h = np.tanh(X @ w)
        np.testing.assert_array_equal(B.np(seen["x"]), X)
        np.testing.assert_allclose(B.np(seen["h"]), LAM * h + (1 - LAM) * h[PERM], rtol=1e-5)
    np.testing.assert_allclose(B.np(tr["y"].value), LAM * Y + (1 - LAM) * Y[PERM], rtol=1e-6)


def test_mixup_classification_is_the_usual_mixup_cross_entropy(backend):
    B = backend

    def model(x, y=None):
        with B.plate("data", N):
            x = B.mixable("x", x)
            B.sample("y", B.dist.Categorical(logits=x), obs=y)

    tr = B.trace(B.mixup(model, at="x", lam=LAM, perm=PERM), B.array(X), B.array(LABELS))
    logp = _log_softmax(LAM * X + (1 - LAM) * X[PERM])
    rows = np.arange(N)
    np.testing.assert_allclose(
        B.np(tr["y"].log_prob),
        LAM * logp[rows, LABELS] + (1 - LAM) * logp[rows, LABELS[PERM]],
        rtol=1e-5,
    )


def test_mixup_accepts_likelihoods_outside_the_registry(backend):
    # vanilla mixup mixes inputs and targets; it never pools, so StudentT is fine
    from pyro_mixup import UnsupportedDistributionError

    B = backend

    def model(x, y=None):
        with B.plate("data", N):
            x = B.mixable("x", x)
            B.sample("y", B.dist.StudentT(4.0, x.sum(-1), 1.0), obs=y)

    tr = B.trace(B.mixup(model, at="x", lam=LAM, perm=PERM), B.array(X), B.array(Y))
    np.testing.assert_allclose(B.np(tr["y"].value), LAM * Y + (1 - LAM) * Y[PERM], rtol=1e-6)
    with pytest.raises(UnsupportedDistributionError, match="StudentT"):
        B.trace(B.probmix(model), B.array(X), B.array(Y))


# --- the examples' dim: plates, dim=, event_dim= -------------------------------------


def test_embed_and_mixable_outside_any_plate_are_refused(backend):
    B = backend

    def mix_model(x, y=None):
        x = B.mixable("x", x)
        with B.plate("data", N):
            B.sample("y", B.dist.Normal(x.sum(-1), 1.0), obs=y)

    def embed_model(y=None):
        z = B.embed("z", B.dist.Normal(B.array(np.zeros((N, 2))), 1.0).to_event(1))
        with B.plate("data", N):
            B.sample("y", B.dist.Normal(z.sum(-1), 1.0), obs=y)

    with pytest.raises(ValueError, match="site 'x' is in no plate.*dim= to embed/mixable"):
        B.trace(B.mixup(mix_model, at="x", alpha=1.0), B.array(X), B.array(Y))
    with pytest.raises(ValueError, match="site 'z' is in no plate"):
        B.trace(B.probmix(embed_model, at="z"), B.array(Y))


def test_explicit_dim_pairs_along_the_examples(backend):
    B = backend
    seen = {}

    def model(x, y=None):
        x = B.mixable("x", x, dim=-1)  # (n, 3): examples along the rows
        seen["x"] = x
        with B.plate("data", N):
            B.sample("y", B.dist.Normal(x.sum(-1), 1.0), obs=y)

    B.trace(B.mixup(model, at="x", lam=LAM, perm=PERM), B.array(X), B.array(Y))
    np.testing.assert_allclose(B.np(seen["x"]), LAM * X + (1 - LAM) * X[PERM], rtol=1e-6)

    def wrong_dim(x, y=None):
        with B.plate("data", N):
            x = B.mixable("x", x, dim=-2)
            B.sample("y", B.dist.Normal(x.sum(-1), 1.0), obs=y)

    with pytest.raises(ValueError, match="dim=-2 but it is inside plate 'data'"):
        B.trace(B.mixup(wrong_dim, at="x", lam=LAM, perm=PERM), B.array(X), B.array(Y))


def test_image_like_mixable_needs_event_dim(backend):
    B = backend
    images = RNG.normal(size=(N, 2, N, N)).astype(np.float32)  # rows as many as examples
    seen = {}

    def model(x, event_dim=None, y=None):
        with B.plate("data", N):
            x = B.mixable("x", x, event_dim=event_dim)
            seen["x"] = x
            B.sample("y", B.dist.Normal(x.sum((-1, -2, -3)), 1.0), obs=y)

    with pytest.raises(ValueError, match="event_dim="):
        B.trace(B.mixup(model, at="x", lam=LAM, perm=PERM), B.array(images), None, B.array(Y))
    B.trace(B.mixup(model, at="x", lam=LAM, perm=PERM), B.array(images), 3, B.array(Y))
    np.testing.assert_allclose(
        B.np(seen["x"]), LAM * images + (1 - LAM) * images[PERM], rtol=1e-5, atol=1e-6
    )


def test_example_dim_must_match_the_plate(backend):
    B = backend

    def embed_model():
        with B.plate("d", 3):
            return B.embed("h", B.dist.Normal(B.array(np.zeros((1, 2))), 1.0).to_event(1))

    with pytest.raises(ValueError, match="has size 1 but plate 'd' has 3"):
        B.trace(B.probmix(embed_model, at="h", lam=0.5, perm=[1, 2, 0]))

    def mix_model():
        with B.plate("d", 3):
            return B.mixable("x", B.array(np.ones((1, 2))))

    with pytest.raises(ValueError, match="has size 1 but plate 'd' has 3"):
        B.trace(B.mixup(mix_model, at="x", lam=0.5, perm=[1, 2, 0]))


def test_no_plate_or_ambiguous_plates(backend):
    B = backend

    def no_plate(x, y):
        B.sample("y", B.dist.Normal(x, 1.0).to_event(1), obs=y)

    with pytest.raises(ValueError, match="in no plate"):
        B.trace(B.probmix(no_plate), B.array(X1), B.array(X1))

    def two_plates(x, y):
        with B.plate("a", 2, dim=-2), B.plate("b", N, dim=-1):
            B.sample("y", B.dist.Normal(x, 1.0), obs=y)

    y2 = B.array(np.stack([X1, X1]))
    with pytest.raises(ValueError, match="several plates"):
        B.trace(B.probmix(two_plates), B.array(X1), y2)
    tr = B.trace(B.probmix(two_plates, plate="b", lam=LAM, perm=PERM), B.array(X1), y2)
    np.testing.assert_allclose(
        B.np(tr["y"].value), np.stack([LAM * X1 + (1 - LAM) * X1[PERM]] * 2), rtol=1e-6
    )
    with pytest.raises(ValueError, match="not inside plate 'c'"):
        B.trace(B.probmix(two_plates, plate="c"), B.array(X1), y2)


# --- networks under SVI ------------------------------------------------------------------

D_IN, H = 3, 16
_W = np.random.default_rng(1)
W1 = (_W.normal(size=(D_IN, H)) * 0.5).astype(np.float32)
W2 = (_W.normal(size=(H, 2)) * 0.5).astype(np.float32)


def net_model(B, *, bayesian=False, embedded=False, mix_at=None):
    """An MLP 3-16-2 with a Gaussian head; ``bayesian``: a Normal prior on the
    output layer (a BNN head for autoguides)."""

    def model(x, y=None):
        w1, b1 = B.param("w1", W1), B.param("b1", np.zeros(H))
        if bayesian:
            w2 = B.sample("w2", B.dist.Normal(B.array(np.zeros((H, 2))), 1.0).to_event(2))
            b2 = B.sample("b2", B.dist.Normal(B.array(np.zeros(2)), 1.0).to_event(1))
        else:
            w2, b2 = B.param("w2", W2), B.param("b2", np.zeros(2))
        with B.plate("data", x.shape[-2]):
            if mix_at == "x":
                x = B.mixable("x", x)
            h = x @ w1 + b1
            if embedded:
                h = B.embed("h", B.dist.Normal(h, 0.1 + B.softplus(h)).to_event(1))
            if mix_at == "h":
                h = B.mixable("h", h)
            # explicit batching so that vectorised particles (batched weights) broadcast
            out = B.ops.tanh(h) @ w2 + b2[..., None, :]
            return B.sample("y", B.dist.Normal(out[..., 0], B.softplus(out[..., 1]) + 1e-3), obs=y)

    return model


def _data(n=64, seed=0):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, D_IN)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 * g.normal(size=n)).astype(np.float32)
    return x, y


HANDLERS = {
    "probmix": ({}, lambda B, m: B.probmix(m, alpha=0.4)),
    "probmix-expected": ({}, lambda B, m: B.probmix(m, alpha=0.4, target="expected")),
    "probmix-shift": ({}, lambda B, m: B.probmix(m, alpha=0.4, pairing="shift")),
    "m-probmix": ({"embedded": True}, lambda B, m: B.probmix(m, alpha=0.4, at="h")),
    "mix": ({"mix_at": "x"}, lambda B, m: B.mixup(m, alpha=0.4, at="x")),
    "m-mix": ({"mix_at": "h"}, lambda B, m: B.mixup(m, alpha=0.4, at="h")),
}


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_svi_loss_decreases(backend, name):
    B = backend
    kw, wrap = HANDLERS[name]
    x, y = _data()
    svi = B.svi(wrap(B, net_model(B, **kw)), None, lr=0.02)
    losses = [svi.step(B.array(x), B.array(y)) for _ in range(150)]
    assert np.isfinite(losses).all() and np.mean(losses[-10:]) < np.mean(losses[:10]) - 10


@pytest.mark.parametrize(
    "guide,elbo",
    [
        ("AutoNormal", "trace"),
        ("AutoDelta", "trace"),
        ("AutoDiagonalNormal", "trace"),
        ("AutoNormal", "meanfield"),
        ("AutoNormal", "particles"),
        ("AutoDiagonalNormal", "vectorized"),
    ],
)
def test_bnn_with_autoguides_and_elbos(backend, guide, elbo):
    B = backend
    model = net_model(B, bayesian=True)
    kw = {
        "particles": {"num_particles": 2},
        "vectorized": {"num_particles": 3, "vectorize_particles": True},
    }
    if elbo == "vectorized" and B.name == "pyro":
        kw["vectorized"]["max_plate_nesting"] = 1
    x, y = _data()
    svi = B.svi(
        B.probmix(model, alpha=0.4),
        B.autoguide(guide, model),
        lr=0.03,
        elbo=B.elbo("meanfield" if elbo == "meanfield" else "trace", **kw.get(elbo, {})),
    )
    losses = [svi.step(B.array(x), B.array(y)) for _ in range(60)]
    assert np.isfinite(losses).all() and np.mean(losses[-10:]) < np.mean(losses[:10])


def test_wrapped_model_under_vectorized_particles_with_expected_target(backend):
    # the particle plate sits outside probmix(model): the scored site gets expanded
    B = backend

    def model(x, y=None):
        w = B.sample("w", B.dist.Normal(0.0, 1.0))
        with B.plate("data", N):
            B.sample("y", B.dist.Poisson(B.ops.exp(w * x)), obs=y)

    def guide(x, y=None):
        B.sample("w", B.dist.Normal(B.param("m", 0.1), 0.5))

    kw = {"num_particles": 3, "vectorize_particles": True}
    if B.name == "pyro":
        kw["max_plate_nesting"] = 1
    svi = B.svi(B.probmix(model, alpha=0.5), guide, lr=0.05, elbo=B.elbo(**kw))
    assert all(np.isfinite(svi.step(B.array(X1), B.array(COUNTS))) for _ in range(3))


def test_predictive_without_observations_samples_as_the_plain_model(backend):
    B = backend

    def model(x, y=None):
        w = B.sample("w", B.dist.Normal(B.array(np.zeros(3)), 1.0).to_event(1))
        with B.plate("data", N):
            return B.sample("y", B.dist.Normal(x @ w, 0.5), obs=y)

    post = {"w": B.array(RNG.normal(size=(4, 3)))}
    plain = B.predictive(model, post, B.array(X), seed=7)
    wrapped = B.predictive(B.probmix(model, alpha=0.4), post, B.array(X), seed=7)
    np.testing.assert_array_equal(plain["y"], wrapped["y"])
    assert plain["y"].shape == (4, N)


# --- one draw per entry, shared by model and guide -------------------------------------

M_LOC = np.arange(N, dtype=np.float32)


def latent_model(B):
    def model(x, y=None):
        with B.plate("data", N):
            z = B.sample("z", B.dist.Normal(B.array(M_LOC), 1.0))
            B.sample("y", B.dist.Normal(z, 1.0), obs=y)

    return model


def latent_guide(B):
    def guide(x, y=None):
        a = B.param("a", 1.0)
        with B.plate("data", N):
            # an amortised guide q(z_i | x_i) whose loc equals the prior's (a = 1)
            B.sample("z", B.dist.Normal(a * B.array(M_LOC) + 0.0 * x[:, 0], 1.0))

    return guide


def _locs(B, store, tag):
    return [B.np(d.loc) for d in store[tag]]


@pytest.mark.parametrize("form", ["with", "separately"])
def test_model_and_guide_pool_with_one_draw_per_step(backend, form):
    B = backend
    store = {}
    model = B.recorder(latent_model(B), store, "model", "z")
    guide = B.recorder(latent_guide(B), store, "guide", "z")
    around = None
    if form == "separately":  # the model adopts the draw of the guide whose fused z it replays
        model, guide = B.probmix(model, alpha=0.7, at="z"), B.probmix(guide, alpha=0.7, at="z")
    else:
        around = B.probmix(alpha=0.7, at="z")
    svi = B.svi(model, guide, lr=1e-9, around=around)
    for _ in range(3):
        svi.step(B.array(X), B.array(Y))
    model_locs, guide_locs = _locs(B, store, "model")[-3:], _locs(B, store, "guide")[-3:]
    for m, g in zip(model_locs, guide_locs):
        np.testing.assert_allclose(m, g, rtol=1e-5, atol=1e-5)  # the same lam and partners
        assert not np.allclose(m, M_LOC)  # and something was pooled
    assert not np.allclose(model_locs[0], model_locs[1])  # a fresh draw each step


def test_unwrapped_guide_at_a_fused_latent_is_refused(backend):
    from pyro_mixup import MixupUsageError

    B = backend
    svi = B.svi(B.probmix(latent_model(B), alpha=0.7, at="z"), latent_guide(B), lr=0.01)
    with pytest.raises(MixupUsageError, match="replayed from the guide.*was not fused"):
        svi.step(B.array(X), B.array(Y))


@pytest.mark.parametrize("jit", [False, True])
def test_a_wrapped_guide_with_an_unwrapped_model_is_refused(backend, jit):
    # the ELBO would compare a fused q(z|x) with an unfused p(z) and unmixed y
    from pyro_mixup import MixupUsageError

    B = backend
    svi = B.svi(latent_model(B), B.probmix(latent_guide(B), alpha=0.7, at="z"), lr=0.01, jit=jit)
    with pytest.raises(MixupUsageError, match="did not fuse it"):
        for _ in range(
            3
        ):  # seen when the guide is entered again (NumPyro: init, then the compiled update)
            svi.step(B.array(X), B.array(Y))
    both = B.svi(
        B.probmix(latent_model(B), alpha=0.7, at="z"),
        B.probmix(latent_guide(B), alpha=0.7, at="z"),
        jit=jit,
    )
    assert all(np.isfinite([both.step(B.array(X), B.array(Y)) for _ in range(3)]))


def test_a_failed_step_leaves_no_stale_guide_draw(backend):
    # the model raising once after the guide fused z must not make the next step look unwrapped
    B = backend
    fail = {"once": True}
    inner = latent_model(B)

    def model(x, y=None):
        if fail["once"]:
            fail["once"] = False
            raise RuntimeError("transient")
        return inner(x, y)

    svi = B.svi(
        B.probmix(model, alpha=0.7, at="z"),
        B.probmix(latent_guide(B), alpha=0.7, at="z"),
        jit=False,
    )
    with pytest.raises(RuntimeError, match="transient"):
        svi.step(B.array(X), B.array(Y))
    assert all(np.isfinite([svi.step(B.array(X), B.array(Y)) for _ in range(2)]))


def test_a_wrapped_guide_under_traceenum_elbo_with_an_unwrapped_model_is_refused():
    # TraceEnum_ELBO runs the guide inside poutine.queue (a replay): still seen as the guide
    from pyro_mixup import MixupUsageError

    B = harness("pyro")
    B.reset()
    svi = B.svi(
        latent_model(B),
        B.probmix(latent_guide(B), alpha=0.7, at="z"),
        elbo=B.infer.TraceEnum_ELBO(max_plate_nesting=1),
    )
    with pytest.raises(MixupUsageError, match="did not fuse it"):
        for _ in range(3):
            svi.step(B.array(X), B.array(Y))


def test_pyro_autoguide_at_a_latent_says_why():
    # Pyro's AutoNormal draws the user's latent as a Delta of its own draw: not poolable
    # (NumPyro's AutoNormal samples each latent from its own Normal)
    from pyro_mixup import UnsupportedDistributionError

    B = harness("pyro")
    B.reset()
    model = latent_model(B)
    svi = B.svi(
        B.probmix(model, alpha=0.7, at="z"),
        B.probmix(B.autoguide("AutoNormal", model), alpha=0.7, at="z"),
    )
    with pytest.raises(UnsupportedDistributionError, match="autoguide.*write q\\(z\\|x\\) by hand"):
        svi.step(B.array(X), B.array(Y))


def test_separately_wrapped_guide_with_other_options_is_refused(backend):
    from pyro_mixup import MixupUsageError

    B = backend
    svi = B.svi(
        B.probmix(latent_model(B), alpha=0.7, at="z"), B.probmix(latent_guide(B), alpha=0.2, at="z")
    )
    with pytest.raises(MixupUsageError, match="other options"):
        svi.step(B.array(X), B.array(Y))


# --- compiled steps ------------------------------------------------------------------------


def test_compiled_step_draws_fresh_each_step(backend):
    B = backend
    x, y = _data()
    svi = B.svi(B.probmix(net_model(B), alpha=1.0), None, lr=0.0, jit=True)
    losses = [svi.step(B.array(x), B.array(y)) for _ in range(6)]
    assert len(set(np.round(losses, 5))) > 3  # lr = 0: only the draws change the loss
    erm = B.svi(net_model(B), None, lr=0.0, jit=True)
    assert len(set(np.round([erm.step(B.array(x), B.array(y)) for _ in range(3)], 5))) == 1


def test_handler_entered_outside_a_compiled_step_is_refused(backend):
    from pyro_mixup import MixupUsageError

    B = backend
    x, y = _data()
    svi = B.svi(net_model(B), None, lr=0.01, jit=True)
    with (
        pytest.raises(MixupUsageError, match="outside a compiled function"),
        B.probmix(alpha=1.0),
    ):
        svi.step(B.array(x), B.array(y))
    # compiled before the handler was entered: the step never runs the model again
    svi = B.svi(net_model(B), None, lr=0.01, jit=True)
    svi.step(B.array(x), B.array(y))
    with pytest.raises(MixupUsageError, match="saw no sample site"), B.probmix(alpha=1.0):
        svi.step(B.array(x), B.array(y))


def test_separately_wrapped_model_and_guide_under_a_compiled_step(backend):
    # M-ProbMix at a guide latent under JitTrace_ELBO / jax.jit: both wrapped, one draw
    B = backend
    store = {}
    model = B.probmix(B.recorder(latent_model(B), store, "model", "z"), alpha=0.7, at="z")
    guide = B.probmix(B.recorder(latent_guide(B), store, "guide", "z"), alpha=0.7, at="z")
    svi = B.svi(model, guide, lr=1e-9, jit=True)
    losses = [svi.step(B.array(X), B.array(Y)) for _ in range(4)]
    assert len(set(np.round(losses, 5))) > 2
    if B.name == "numpyro":  # the recorder sees every compiled step
        for m, g in zip(_locs(B, store, "model"), _locs(B, store, "guide")):
            np.testing.assert_allclose(m, g, rtol=1e-5, atol=1e-5)


# --- MCMC ------------------------------------------------------------------------------------


def regression_model(B):
    def model(x, y=None):
        w = B.sample("w", B.dist.Normal(B.array(np.zeros(3)), 1.0).to_event(1))
        with B.plate("data", x.shape[0]):
            return B.sample("y", B.dist.Normal(x @ w, 0.5), obs=y)

    return model


def test_mcmc_on_a_randomly_pooled_model_is_refused(backend):
    from pyro_mixup import MixupUsageError

    B = backend
    x, y = _data(16)
    with pytest.raises(MixupUsageError, match="MCMC is running it"):
        B.mcmc(
            B.probmix(regression_model(B), alpha=0.5),
            B.array(x),
            B.array(y),
            num_samples=2,
            warmup=2,
        )


def test_mcmc_with_fixed_draws_samples_the_pooled_posterior(backend):
    # y ~ N(x w, 0.5): the pooled likelihood at lam, perm is Gaussian in w, so the
    # posterior is the conjugate one of the mixed data (pooled N with mean x~ w)
    B = backend
    x, y = _data(16)
    perm = np.roll(np.arange(16), 3)
    samples = B.mcmc(
        B.probmix(regression_model(B), lam=0.3, perm=perm),
        B.array(x),
        B.array(y),
        num_samples=300,
        warmup=200,
    )
    xm, ym = 0.3 * x + 0.7 * x[perm], 0.3 * y + 0.7 * y[perm]
    precision = np.eye(3) + xm.T @ xm / 0.25
    mean = np.linalg.solve(precision, xm.T @ ym / 0.25)
    np.testing.assert_allclose(samples["w"].mean(0), mean, atol=0.05)


def test_mcmc_with_alpha_zero_is_plain_erm(backend):
    # alpha=0: lam = 1 and each example paired with itself, no random draw: MCMC is well defined
    B = backend
    x, y = _data(16)
    wrapped = B.probmix(regression_model(B), alpha=0.0)
    assert B.log_density(wrapped, B.array(x), B.array(y)) == pytest.approx(
        B.log_density(regression_model(B), B.array(x), B.array(y)), rel=1e-6
    )
    samples = B.mcmc(wrapped, B.array(x), B.array(y), num_samples=200, warmup=100)
    precision = np.eye(3) + x.T @ x / 0.25
    np.testing.assert_allclose(
        samples["w"].mean(0), np.linalg.solve(precision, x.T @ y / 0.25), atol=0.1
    )


def test_pairing_under_an_enumerated_local_latent_is_refused(backend):
    # enumeration would give an example and its partner the same mixture component
    from pyro_mixup import MixupUsageError

    B = backend
    locs, w = B.array([-2.0, 3.0]), B.array([0.3, 0.7])

    def mixture(y, local=True):
        k = (
            B.sample("k", B.dist.Categorical(w), infer={"enumerate": "parallel"})
            if not local
            else None
        )
        with B.plate("data", len(Y)):
            if local:
                k = B.sample("k", B.dist.Categorical(w), infer={"enumerate": "parallel"})
            return B.sample("y", B.dist.Normal(locs[k], 1.0), obs=y)

    y = B.array(Y)
    with pytest.raises(MixupUsageError, match="enumerated local latent.*'k'"):
        B.enum_loss(B.probmix(mixture, lam=LAM, perm=PERM), y)
    # a global enumerated latent is shared by both members of every pair: pooled given it
    pooled = B.enum_loss(B.probmix(mixture, lam=LAM, perm=PERM), y, local=False)
    mixed, prec = (
        LAM * Y + (1 - LAM) * Y[PERM],
        1.0,
    )  # both members N(loc_k, 1): the pool is N(loc_k, 1)
    by_k = [
        np.log(p) + np.sum(-0.5 * np.log(2 * np.pi) - 0.5 * prec * (mixed - m) ** 2)
        for m, p in ((-2.0, 0.3), (3.0, 0.7))
    ]
    expected = -np.logaddexp(*by_k)
    assert pooled == pytest.approx(expected, rel=1e-5)


def test_condition_outside_the_handler_is_refused(backend):
    # the handler would see y as a latent and leave it unpaired: quietly plain ERM
    from pyro_mixup import MixupUsageError

    B = backend

    def model(x):
        with B.plate("data", N):
            return B.sample("y", B.dist.Normal(2 * x, 1.0))

    outside = B.condition(B.probmix(model, lam=LAM, perm=PERM), data={"y": B.array(Y)})
    with pytest.raises(MixupUsageError, match="observed by a handler outside probmix"):
        B.log_density(outside, B.array(X1))
    inside = B.probmix(B.condition(model, data={"y": B.array(Y)}), lam=LAM, perm=PERM)
    assert np.isfinite(B.log_density(inside, B.array(X1)))


def test_mcmc_on_a_model_with_a_local_latent_and_fixed_draws_runs(backend):
    # Pyro's MCMC conditions the model on its latents (a condition outside the handler):
    # that is inference, not a user's condition, and must not be refused
    B = backend
    samples = B.mcmc(
        B.probmix(latent_model(B), lam=LAM, perm=PERM),
        B.array(X),
        B.array(Y),
        num_samples=30,
        warmup=20,
    )
    assert samples["z"].shape == (30, N) and np.all(np.isfinite(samples["z"]))


# --- conditioning inside the wrapper ----------------------------------------------------------


def test_conditioned_latents_are_not_data(backend):
    B = backend

    def model(x, y=None):
        s = B.sample("s", B.dist.HalfNormal(1.0))
        with B.plate("data", N):
            return B.sample("y", B.dist.Normal(2 * x, s), obs=y)

    conditioned = B.condition(model, data={"s": B.array(0.7)})
    tr = B.trace(B.probmix(conditioned, lam=LAM, perm=PERM), B.array(X1), B.array(Y))
    assert float(B.np(tr["s"].value)) == pytest.approx(0.7)  # left alone
    np.testing.assert_allclose(B.np(tr["y"].value), LAM * Y + (1 - LAM) * Y[PERM], rtol=1e-6)


def test_an_observation_given_by_condition_is_data(backend):
    # the Pyro tutorials' idiom: observe through condition instead of obs=
    B = backend
    with_obs = B.log_density(
        B.probmix(normal_model(B), lam=LAM, perm=PERM), B.array(X1), B.array(Y)
    )
    conditioned = B.condition(normal_model(B), data={"y": B.array(Y)})
    assert B.log_density(B.probmix(conditioned, lam=LAM, perm=PERM), B.array(X1)) == pytest.approx(
        with_obs, rel=1e-6
    )


def test_only_conditioned_sites_outside_plates_is_refused(backend):
    B = backend

    def model():
        return B.sample("y", B.dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="found no observation to pair.*conditioned"):
        B.trace(B.probmix(B.condition(model, data={"y": B.array(1.0)}), alpha=0.5))


# --- handler objects: reuse, nesting ---------------------------------------------------------


def test_a_handler_reused_for_another_model_keeps_no_state(backend):
    B = backend

    def real_support(y=None):
        with B.plate("data", N):
            B.sample(
                "y",
                B.dist.TransformedDistribution(
                    B.dist.Normal(0.0, 1.0), [B.dist.transforms.AffineTransform(1.0, 2.0)]
                ),
                obs=y,
            )

    def positive_support(y=None):
        with B.plate("data", N):
            B.sample(
                "y",
                B.dist.TransformedDistribution(
                    B.dist.Normal(0.0, 1.0), [B.dist.transforms.ExpTransform()]
                ),
                obs=y,
            )

    handler = B.probmix(alpha=0.5, beta=0.1, target="mixed")
    pos = B.array(np.abs(Y) + 0.1)
    with handler:
        B.trace(real_support, pos)
    with pytest.raises(ValueError, match="bounded support"), handler:
        B.trace(positive_support, pos)


def test_a_handler_nested_in_itself_is_refused(backend):
    from pyro_mixup import MixupUsageError

    B = backend
    h = B.probmix(lam=LAM, perm=PERM)
    with pytest.raises((MixupUsageError, ValueError), match="nested in itself|twice"), h:
        B.trace(h(normal_model(B)), B.array(X1), B.array(Y))


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "array"])
def test_zero_dimensional_array_options_are_accepted(backend, kind):
    B = backend
    val = np.float32(0.4) if kind == "numpy" else B.array(np.float32(0.4))
    tr = B.trace(
        B.probmix(
            normal_model(B),
            alpha=val,
            beta=B.array(0.0) if kind == "array" else np.float64(0.0),
            per_example=np.bool_(False),
        ),
        B.array(X1),
        B.array(Y),
    )
    assert np.isfinite(B.np(tr["y"].log_prob)).all()


def test_bad_options_are_refused_at_construction(backend):
    B = backend
    m = normal_model(B)
    for kwargs, pattern in [
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": "1"}, "alpha"),
        ({"beta": -0.1}, "beta"),
        ({"target": "mean"}, "target"),
        ({"pairing": "random"}, "pairing"),
        ({"sites": "y"}, "sites"),
        ({"per_example": 1}, "per_example"),
        ({"lam": 1.5}, r"lam must lie in \[0, 1\]"),
        ({"lam": -0.2}, r"lam must lie in \[0, 1\]"),
        ({"lam": float("nan")}, r"lam must lie in \[0, 1\]"),
        ({"perm": [0, 0, 1, 2]}, "permutation"),
        ({"perm": [1.0, 0.0, 2.0]}, "integer"),
        ({"perm": np.array([1.7, 0.2, 2.0])}, "integer"),
        ({"lam": [0.1, 0.2], "perm": [1, 2, 0]}, "lam has 2 values but perm has length 3"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            B.probmix(m, **kwargs)
    with pytest.raises((ValueError, TypeError), match="at="):
        B.mixup(m)


def test_rng_key(backend):
    B = backend
    if B.name == "pyro":
        with pytest.raises(ValueError, match="rng_key is a NumPyro option"):
            B.probmix(normal_model(B), rng_key=0)
        return
    key = B.jax.random.key(3)
    a = B.handlers.trace(B.probmix(normal_model(B), rng_key=key)).get_trace(B.array(X1), B.array(Y))
    b = B.handlers.trace(B.probmix(normal_model(B), rng_key=key)).get_trace(B.array(X1), B.array(Y))
    np.testing.assert_array_equal(a["y"]["value"], b["y"]["value"])
    with pytest.raises(ValueError, match="rng_key must be a JAX PRNG key"):
        B.probmix(normal_model(B), rng_key=0)
    with pytest.raises(ValueError, match="numpyro.handlers.seed or pass rng_key="):
        B.handlers.trace(B.probmix(normal_model(B))).get_trace(B.array(X1), B.array(Y))


def test_runtime_errors(backend):
    from pyro_mixup import UnsupportedDistributionError

    B = backend

    def student(x, y):
        with B.plate("data", N):
            B.sample("y", B.dist.StudentT(3.0, x, 1.0), obs=y)

    with pytest.raises(UnsupportedDistributionError, match="StudentT"):
        B.trace(B.probmix(student, alpha=1.0), B.array(X1), B.array(Y))
    with pytest.raises(ValueError, match="at='nope' named no site"):
        B.trace(B.probmix(normal_model(B), at="nope"), B.array(X1), B.array(Y))
    with pytest.raises(ValueError, match="at='nope' named no site"):
        B.trace(B.mixup(normal_model(B), at="nope"), B.array(X1), B.array(Y))
    with pytest.raises(ValueError, match=r"sites=\['yy'\] named no sample site"):
        B.trace(B.probmix(normal_model(B), sites=["yy"]), B.array(X1), B.array(Y))
    with pytest.raises(ValueError, match="batch of size 1"):
        B.trace(B.probmix(normal_model(B)), B.array(X1[:1]), B.array(Y[:1]))
    with pytest.raises(ValueError, match="perm has length 6 but the batch has 5"):
        B.trace(B.probmix(normal_model(B), perm=PERM), B.array(X1[:5]), B.array(Y[:5]))


# --- pairing tables, end to end -----------------------------------------------------------------


def _partners(B, pairing, seed):
    """The partner of each example, read off a mixup of the identity matrix."""
    eye = np.eye(N, dtype=np.float32)
    seen = {}

    def model(x):
        with B.plate("data", N):
            seen["x"] = B.mixable("x", x)

    B.trace(B.mixup(model, at="x", lam=0.25, pairing=pairing), B.array(eye), seed=seed)
    return (B.np(seen["x"]) - 0.25 * eye).argmax(1)  # 0.75 at each example's partner


def test_table_and_shift_pairings(backend):
    from pyro_mixup.pairing import NearestNeighbourPairing

    B = backend
    points = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    table = NearestNeighbourPairing(points, k=2)
    seen = set()
    for seed in range(12):
        p = _partners(B, table, seed)
        assert all(p[i] in table.candidates[i] for i in range(N))
        seen.add(tuple(p))
        s = _partners(B, "shift", seed)
        assert len({(s[i] - i) % N for i in range(N)}) == 1  # one cyclic shift
    assert len(seen) > 1
    with pytest.raises(ValueError, match="covers 6 examples but the batch has 4"):
        B.trace(
            B.mixup(lambda x: B.mixable("x", x, dim=-1), at="x", pairing=table), B.array(np.eye(4))
        )


# --- the paper's section 4 reductions, as properties of the handlers ---------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hst  # noqa: E402


@given(
    lam=hst.floats(0, 1),
    seed=hst.integers(0, 1000),
    head=hst.sampled_from(["normal", "categorical"]),
)
@settings(max_examples=20, deadline=None)
def test_linear_probmix_is_vanilla_mixup(lam, seed, head):
    # Thm 4.3 / 4.4: pooling homoscedastic Gaussians (or categoricals) with linear
    # means (logits) is the model at the mixed input
    from backends import harness

    for B in (harness("pyro"), harness("numpyro")):
        g = np.random.default_rng(seed)
        x, w = g.normal(size=(N, 3)).astype(np.float32), g.normal(size=(3, 4)).astype(np.float32)
        y = g.normal(size=N).astype(np.float32) if head == "normal" else g.integers(0, 4, size=N)
        perm = g.permutation(N)

        def model(x, y=None):
            with B.plate("data", N):  # noqa: B023
                x = B.mixable("x", x)  # noqa: B023
                out = x @ B.array(w)  # noqa: B023
                d = (
                    B.dist.Normal(out[:, 0] + 0.7, 0.8)  # noqa: B023
                    if head == "normal"
                    else B.dist.Categorical(logits=out)  # noqa: B023
                )
                B.sample("y", d, obs=y)  # noqa: B023

        a = B.log_density(B.probmix(model, lam=lam, perm=perm), B.array(x), B.array(y))
        c = B.log_density(B.mixup(model, at="x", lam=lam, perm=perm), B.array(x), B.array(y))
        assert a == pytest.approx(c, abs=1e-3, rel=1e-4)


@given(lam=hst.floats(0, 1), seed=hst.integers(0, 1000))
@settings(max_examples=15, deadline=None)
def test_homoscedastic_m_probmix_is_manifold_mixup(lam, seed):
    # section 4: M-ProbMix with homoscedastic embeddings pools the means like manifold mixup
    from backends import harness

    B = harness("pyro")
    g = np.random.default_rng(seed)
    x, y = g.normal(size=(N, 3)).astype(np.float32), g.normal(size=N).astype(np.float32)
    w1, w2 = g.normal(size=(3, 5)).astype(np.float32), g.normal(size=5).astype(np.float32)
    perm = g.permutation(N)

    def model(x, y=None):
        with B.plate("data", N):
            m = B.mixable("m", B.ops.tanh(x @ B.array(w1)))
            z = B.embed("h", B.dist.Normal(m, 0.3).to_event(1))
            B.sample("y", B.dist.Normal(z @ B.array(w2), 1.0), obs=y)

    a = B.log_density(
        B.probmix(model, at="h", lam=lam, perm=perm), B.array(x), B.array(y), seed=seed
    )
    c = B.log_density(B.mixup(model, at="m", lam=lam, perm=perm), B.array(x), B.array(y), seed=seed)
    assert a == pytest.approx(c, abs=1e-3, rel=1e-4)
