"""pyro_mixup.diagnostics.to_inference_data on real Pyro / NumPyro inference:
the log-likelihood group against independent per-observation computations,
the handler guard, NetCDF round trips, az.loo / az.compare on the output."""

import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from scipy import stats

from pyro_mixup import diagnostics
from pyro_mixup.diagnostics import HandlerLeakError, to_inference_data, unwrap
from pyro_mixup.handlers import mixup, probmix
from pyro_mixup.primitives import mixable

X = torch.linspace(-2.0, 2.0, 24)
Y = 1.5 * X + 0.3 * torch.randn(24, generator=torch.Generator().manual_seed(1))
W_OLS = float((X * Y).sum() / (X * X).sum())  # ~1.63 for this noise draw


def linreg(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 2.0))
    s = pyro.sample("s", dist.LogNormal(-1.0, 0.5))
    h = mixable("x", x)
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(w * h, s), obs=y)


@pytest.fixture(autouse=True)
def _fresh():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


def _fit_pyro(model, steps=150):
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(steps):
        svi.step(X, Y)
    return guide


def _independent_loglik(w, s, x, y):
    """log N(y_i | w x_i, s) for every draw and observation, with scipy."""
    w, s = np.asarray(w).reshape(-1, 1), np.asarray(s).reshape(-1, 1)
    return stats.norm.logpdf(np.asarray(y)[None, :], loc=w * np.asarray(x)[None, :], scale=s)


# --- Pyro ----------------------------------------------------------------------


def test_pyro_guide_groups_dims_and_loglik_match_independent_computation():
    guide = _fit_pyro(linreg)
    idata = to_inference_data(linreg, guide, X, Y, num_samples=60)
    assert set(idata.groups()) >= {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
    }
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "data")
    assert idata.log_likelihood["y"].shape == (1, 60, 24)
    assert idata.posterior["w"].shape == (1, 60)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "data")
    np.testing.assert_allclose(idata.observed_data["y"].values, Y.numpy())
    w = idata.posterior["w"].values.ravel()
    s = idata.posterior["s"].values.ravel()
    expected = _independent_loglik(w, s, X, Y)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected, rtol=1e-5, atol=1e-5)
    # the posterior is the fitted one, not the prior N(0, 2): w concentrates at the OLS slope
    assert abs(w.mean() - W_OLS) < 0.15 and w.std() < 0.3


def test_pyro_seeding_is_reproducible_and_leaves_global_rng_alone():
    guide = _fit_pyro(linreg, steps=20)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = to_inference_data(linreg, guide, X, Y, num_samples=10, rng_seed=7)
    after = torch.rand(1)
    b = to_inference_data(linreg, guide, X, Y, num_samples=10, rng_seed=7)
    assert torch.equal(before, after)
    np.testing.assert_array_equal(a.posterior["w"].values, b.posterior["w"].values)


def test_pyro_samples_dict_with_chains():
    w = torch.tensor([[1.0, 1.2, 1.4], [1.6, 1.8, 2.0]])  # 2 chains x 3 draws
    s = torch.full((2, 3), 0.5)
    idata = to_inference_data(linreg, {"w": w, "s": s}, X, Y, group_by_chain=True)
    assert idata.posterior["w"].shape == (2, 3)
    np.testing.assert_allclose(idata.posterior["w"].values, w.numpy())
    expected = _independent_loglik(w.reshape(-1), s.reshape(-1), X, Y).reshape(2, 3, -1)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, expected, rtol=1e-5, atol=1e-5)
    assert idata.posterior.attrs["inference"] == "samples"


def test_pyro_multidim_plates_and_event_dims_are_named():
    def model(x, y=None):
        b = pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("groups", 2, dim=-2):
            g = pyro.sample("g", dist.Normal(0.0, 1.0))
            with pyro.plate("data", x.shape[-1], dim=-1):
                return pyro.sample("y", dist.Normal(g + b[:, None] * x, 1.0), obs=y)

    x = torch.randn(2, 5)
    y = torch.randn(2, 5)
    guide = AutoNormal(model)
    guide(x, y)
    idata = to_inference_data(model, guide, x, y, num_samples=4)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "groups", "data")
    assert idata.posterior["g"].dims == ("chain", "draw", "groups", "g_dim_0")
    assert idata.posterior["b"].dims == ("chain", "draw", "b_dim_0")
    g = idata.posterior["g"].values[0, :, :, 0]  # draws x groups
    b = idata.posterior["b"].values[0]  # draws x 2
    exp = stats.norm.logpdf(y.numpy()[None], g[:, :, None] + b[:, :, None] * x.numpy()[None], 1.0)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], exp, rtol=1e-5, atol=1e-5)


def test_deterministic_sites_go_to_posterior():
    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        pyro.deterministic("w2", 2 * w)
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)

    idata = to_inference_data(model, {"w": torch.tensor([0.5, 1.0])}, X, Y)
    np.testing.assert_allclose(idata.posterior["w2"].values.ravel(), [1.0, 2.0])
    assert "w2" not in idata.log_likelihood


# --- the guard: the log-likelihood comes from the plain model ------------------


def test_wrapped_models_score_pooled_densities_so_the_guard_matters():
    """Premise of the guard: a wrapped model's trace reports a different density."""
    data = {"w": torch.tensor(1.5), "s": torch.tensor(0.3)}
    plain = poutine.trace(poutine.condition(linreg, data)).get_trace(X, Y)
    wrapped = poutine.trace(poutine.condition(probmix(linreg, lam=0.3), data)).get_trace(X, Y)
    lp_plain = plain.nodes["y"]["fn"].log_prob(plain.nodes["y"]["value"])
    lp_wrapped = wrapped.nodes["y"]["fn"].log_prob(wrapped.nodes["y"]["value"])
    assert not torch.allclose(lp_plain, lp_wrapped)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: probmix(m, lam=0.3),
        lambda m: probmix(m, alpha=0.5, target="expected"),
        lambda m: mixup(m, at="x", lam=0.3),
        lambda m: probmix(mixup(m, at="x", lam=0.2), lam=0.3),
    ],
    ids=["probmix", "probmix-expected", "mixup", "nested"],
)
def test_outer_wrappers_are_stripped(wrap):
    samples = {"w": torch.tensor([1.0, 1.5]), "s": torch.tensor([0.4, 0.3])}
    wrapped = wrap(linreg)
    assert unwrap(wrapped) is linreg
    a = to_inference_data(wrapped, samples, X, Y)
    b = to_inference_data(linreg, samples, X, Y)
    np.testing.assert_array_equal(a.log_likelihood["y"].values, b.log_likelihood["y"].values)
    np.testing.assert_allclose(
        a.log_likelihood["y"].values[0],
        _independent_loglik(samples["w"], samples["s"], X, Y),
        rtol=1e-5,
    )


def test_other_handlers_are_not_stripped():
    scaled = poutine.scale(linreg, scale=2.0)
    assert unwrap(scaled) is scaled


@pytest.mark.parametrize(
    "handler",
    [
        lambda: probmix(lam=0.3),
        lambda: mixup(at="x", lam=0.3),
        lambda: probmix(alpha=1.0, target="expected"),
    ],
    ids=["probmix", "mixup", "probmix-expected"],
)
def test_enclosing_handler_is_refused(handler):
    samples = {"w": torch.tensor([1.0]), "s": torch.tensor([0.4])}
    with pytest.raises(HandlerLeakError, match="pyro_mixup handler"), handler():
        to_inference_data(linreg, samples, X, Y)


def test_handler_inside_the_model_is_refused():
    def sneaky(x, y=None):
        with probmix(lam=0.3):
            return linreg(x, y)

    with pytest.raises(HandlerLeakError):
        to_inference_data(sneaky, {"w": torch.tensor([1.0]), "s": torch.tensor([0.4])}, X, Y)


def test_guide_trained_under_handler_gives_plain_loglik():
    """Train with ProbMix, diagnose with the same wrapped model object: the
    log-likelihood is still the plain model's at the guide's draws."""
    guide = AutoNormal(linreg)
    svi = SVI(probmix(linreg, alpha=0.5), guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(50):
        svi.step(X, Y)
    idata = to_inference_data(probmix(linreg, alpha=0.5), guide, X, Y, num_samples=20)
    w, s = idata.posterior["w"].values.ravel(), idata.posterior["s"].values.ravel()
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values[0], _independent_loglik(w, s, X, Y), rtol=1e-5, atol=1e-5
    )


# --- ArviZ on the output ----------------------------------------------------------


def test_netcdf_round_trip(tmp_path):
    guide = _fit_pyro(linreg, steps=30)
    idata = to_inference_data(linreg, guide, X, Y, num_samples=25)
    path = diagnostics.save(idata, tmp_path / "run.nc")
    back = diagnostics.load(path)
    for group in ("posterior", "posterior_predictive", "log_likelihood", "observed_data"):
        a, b = idata[group], back[group]
        assert set(a.data_vars) == set(b.data_vars)
        for v in a.data_vars:
            assert a[v].dims == b[v].dims
            np.testing.assert_array_equal(a[v].values, b[v].values)
    assert back.posterior.attrs["backend"] == "pyro"


def test_loo_and_compare_run_on_the_output():
    guide = _fit_pyro(linreg)
    good = to_inference_data(linreg, guide, X, Y, num_samples=100)
    bad = to_inference_data(
        linreg,
        {"w": torch.full((100,), -1.0) + 0.05 * torch.randn(100), "s": torch.full((100,), 0.3)},
        X,
        Y,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(good, pointwise=True)
        cmp = az.compare({"good": good, "bad": bad})
    assert loo.n_data_points == 24
    assert np.asarray(loo.pareto_k).shape == (24,)
    assert list(cmp.index) == ["good", "bad"]
    assert cmp.loc["bad", "elpd_diff"] > 10


def test_test_metrics_are_log_mean_exp_and_interval_coverage():
    samples = {"w": torch.tensor([1.4, 1.5, 1.6]), "s": torch.tensor([0.3, 0.3, 0.3])}
    idata = to_inference_data(linreg, samples, X, Y)
    m = diagnostics.test_metrics(idata)
    ll = _independent_loglik(samples["w"], samples["s"], X, Y)
    expected = -np.mean(np.log(np.mean(np.exp(ll), axis=0)))
    assert m["nll"] == pytest.approx(expected, rel=1e-6)
    assert 0.0 <= m["coverage"] <= 1.0 and m["num_draws"] == 3 and m["num_obs"] == 24
    assert len(m["pit"]) == 24


def test_errors():
    with pytest.raises(ValueError, match="y_test"):
        to_inference_data(linreg, {"w": torch.tensor([1.0])}, X, None)
    with pytest.raises(ValueError, match="backend"):
        to_inference_data(linreg, {"w": torch.tensor([1.0])}, X, Y, backend="stan")


# --- NumPyro ---------------------------------------------------------------------


def _np_model(x, y=None):
    import numpyro
    import numpyro.distributions as nd

    w = numpyro.sample("w", nd.Normal(0.0, 2.0))
    s = numpyro.sample("s", nd.LogNormal(-1.0, 0.5))
    with numpyro.plate("data", x.shape[0]):
        return numpyro.sample("y", nd.Normal(w * x, s), obs=y)


def test_numpyro_guide_and_params():
    import jax
    from numpyro.infer import SVI as NSVI
    from numpyro.infer import Trace_ELBO as NTrace
    from numpyro.infer.autoguide import AutoNormal as NAutoNormal
    from numpyro.optim import Adam

    x, y = jax.numpy.asarray(X.numpy()), jax.numpy.asarray(Y.numpy())
    guide = NAutoNormal(_np_model)
    res = NSVI(_np_model, guide, Adam(0.05), NTrace()).run(
        jax.random.PRNGKey(0), 300, x, y, progress_bar=False
    )
    idata = to_inference_data(_np_model, guide, x, y, params=res.params, num_samples=40)
    assert idata.posterior.attrs["backend"] == "numpyro"
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "data")
    w, s = idata.posterior["w"].values.ravel(), idata.posterior["s"].values.ravel()
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values[0], _independent_loglik(w, s, X, Y), rtol=1e-4, atol=1e-4
    )
    assert abs(w.mean() - W_OLS) < 0.15
    # the (guide, params) pair form gives the same draws
    idata2 = to_inference_data(_np_model, (guide, res.params), x, y, num_samples=40)
    np.testing.assert_array_equal(idata.posterior["w"].values, idata2.posterior["w"].values)


def test_numpyro_mcmc_object_with_chains():
    import jax
    from numpyro.infer import MCMC, NUTS

    x, y = jax.numpy.asarray(X.numpy()), jax.numpy.asarray(Y.numpy())
    mcmc = MCMC(
        NUTS(_np_model),
        num_warmup=100,
        num_samples=50,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(1), x, y)
    idata = to_inference_data(_np_model, mcmc, x, y)
    assert idata.posterior["w"].shape == (2, 50)
    w = idata.posterior["w"].values.reshape(-1)
    s = idata.posterior["s"].values.reshape(-1)
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values.reshape(100, -1),
        _independent_loglik(w, s, X, Y),
        rtol=1e-4,
        atol=1e-4,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert az.loo(idata).n_data_points == 24
        ref = az.from_numpyro(mcmc)
    # a model without deterministic sites, test data = training data: ArviZ's own converter agrees
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values, ref.log_likelihood["y"].values, rtol=1e-5, atol=1e-5
    )
    # MCMC run with the default extra_fields records divergences only
    assert list(idata.sample_stats.data_vars) == ["diverging"] and idata.sample_stats[
        "diverging"
    ].shape == (2, 50)
    np.testing.assert_array_equal(
        idata.sample_stats["diverging"].values, ref.sample_stats["diverging"].values
    )


def test_numpyro_handler_guard():
    import jax.numpy as jnp

    import pyro_mixup.numpyro.handlers as handlers

    x, y = jnp.asarray(X.numpy()), jnp.asarray(Y.numpy())
    samples = {"w": jnp.array([1.0, 1.5]), "s": jnp.array([0.4, 0.3])}
    wrapped = handlers.probmix(_np_model, lam=0.3)
    assert unwrap(wrapped) is _np_model
    a = to_inference_data(wrapped, samples, x, y)
    np.testing.assert_allclose(
        a.log_likelihood["y"].values[0],
        _independent_loglik(samples["w"], samples["s"], X, Y),
        rtol=1e-4,
    )
    with pytest.raises(HandlerLeakError), handlers.probmix(lam=0.3):
        to_inference_data(_np_model, samples, x, y)
