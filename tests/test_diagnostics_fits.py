"""to_inference_data right for any fit (issue 12, item 2), on real Pyro / NumPyro inference:
only latent sites carry over to the test data, subsampled plates score every test row in
order, MCMC's sample_stats and log-likelihood match ArviZ's own converters, the test-set log
predictive density, and the refusals."""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import pyro
import pyro.distributions as dist
import pytest
import torch
from numpyro.infer import MCMC as NMCMC
from numpyro.infer import NUTS as NNUTS
from scipy import stats

from pyro_mixup.diagnostics import log_predictive_density, test_metrics, to_inference_data

N = 24
_rng = np.random.default_rng(3)
X_TRAIN = np.linspace(-2.0, 2.0, N).astype(np.float32)
Y_TRAIN = (1.5 * X_TRAIN + 0.3 * _rng.normal(size=N)).astype(np.float32)
# a test set of the SAME size: training-time per-row values would broadcast onto it without a word
X_TEST = _rng.uniform(-3.0, 3.0, size=N).astype(np.float32)
Y_TEST = (1.5 * X_TEST + 0.3 * _rng.normal(size=N)).astype(np.float32)


def _scipy_loglik(w, s, x, y):
    """log N(y_i | w x_i, s) per draw and row, independently of Pyro / NumPyro."""
    w, s = np.asarray(w, np.float64).reshape(-1, 1), np.asarray(s, np.float64).reshape(-1, 1)
    return stats.norm.logpdf(
        np.asarray(y, np.float64)[None], w * np.asarray(x, np.float64)[None], s
    )


@pytest.fixture(autouse=True)
def _fresh():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


# --- NumPyro models ------------------------------------------------------------------------


def np_linreg(x, y=None):
    w = numpyro.sample("w", nd.Normal(0.0, 2.0))
    s = numpyro.sample("s", nd.LogNormal(-1.0, 0.5))
    with numpyro.plate("data", x.shape[0]):
        return numpyro.sample("y", nd.Normal(w * x, s), obs=y)


def np_linreg_mu(x, y=None):
    w = numpyro.sample("w", nd.Normal(0.0, 2.0))
    s = numpyro.sample("s", nd.LogNormal(-1.0, 0.5))
    with numpyro.plate("data", x.shape[0]):
        mu = numpyro.deterministic("mu", w * x)
        return numpyro.sample("y", nd.Normal(mu, s), obs=y)


def np_linreg_subsampled(x, y=None, batch=5):
    w = numpyro.sample("w", nd.Normal(0.0, 2.0))
    s = numpyro.sample("s", nd.LogNormal(-1.0, 0.5))
    with numpyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        return numpyro.sample("y", nd.Normal(w * x[idx], s), obs=None if y is None else y[idx])


EXTRA_FIELDS = (
    "diverging",
    "energy",
    "potential_energy",
    "adapt_state.step_size",
    "num_steps",
    "accept_prob",
)


def _np_mcmc(model, chains=2):
    mcmc = NMCMC(
        NNUTS(model),
        num_warmup=60,
        num_samples=40,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(
        jax.random.PRNGKey(0), jnp.asarray(X_TRAIN), jnp.asarray(Y_TRAIN), extra_fields=EXTRA_FIELDS
    )
    return mcmc


@pytest.fixture(scope="module")
def np_mcmc_mu():
    return _np_mcmc(np_linreg_mu)


def test_numpyro_mcmc_with_deterministic_mu_scores_the_test_rows(np_mcmc_mu):
    """MCMC's samples hold the training-time mu (24 rows, like the test set): it is dropped
    and recomputed at x_test, so the log-likelihood is that of the test rows."""
    assert np_mcmc_mu.get_samples()["mu"].shape == (80, N)  # the premise: mu is in the samples
    idata = to_inference_data(np_linreg_mu, np_mcmc_mu, jnp.asarray(X_TEST), jnp.asarray(Y_TEST))
    w, s = idata.posterior["w"].values.ravel(), idata.posterior["s"].values.ravel()
    expected = _scipy_loglik(w, s, X_TEST, Y_TEST)
    ll = idata.log_likelihood["y"].values.reshape(80, N)
    np.testing.assert_allclose(ll, expected, rtol=1e-5, atol=1e-5)
    # the posterior's mu is the test-time one; the training-time mu would score other means
    np.testing.assert_allclose(
        idata.posterior["mu"].values.reshape(80, N), w[:, None] * X_TEST[None], rtol=1e-5, atol=1e-5
    )
    mu_train = np.asarray(np_mcmc_mu.get_samples()["mu"])
    s_col = s[:, None]
    stale = stats.norm.logpdf(Y_TEST[None], mu_train, s_col)
    assert np.abs(stale - expected).max() > 1.0


def test_numpyro_samples_with_observed_y_of_the_same_length_are_not_reused(np_mcmc_mu):
    """Predictive's output holds a y of training length: it must not replace the test y."""
    samples = dict(np_mcmc_mu.get_samples())
    samples["y"] = jnp.broadcast_to(jnp.asarray(Y_TRAIN), (80, N))
    idata = to_inference_data(np_linreg_mu, samples, jnp.asarray(X_TEST), jnp.asarray(Y_TEST))
    np.testing.assert_allclose(idata.observed_data["y"].values, Y_TEST)
    w, s = idata.posterior["w"].values.ravel(), idata.posterior["s"].values.ravel()
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values[0],
        _scipy_loglik(w, s, X_TEST, Y_TEST),
        rtol=1e-5,
        atol=1e-5,
    )


def test_numpyro_mcmc_loglik_and_sample_stats_equal_az_from_numpyro(np_mcmc_mu):
    """With test data = training data the log-likelihood is az.from_numpyro's (and
    numpyro.infer.log_likelihood's): there the training-time mu is the test-time one (a model
    without deterministic sites: test_diagnostics.py::test_numpyro_mcmc_object_with_chains).
    sample_stats are carried over under ArviZ's names, so az.summary and az.plot_energy work
    as on az.from_numpyro."""
    mcmc = np_mcmc_mu
    idata = to_inference_data(np_linreg_mu, mcmc, jnp.asarray(X_TRAIN), jnp.asarray(Y_TRAIN))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = az.from_numpyro(mcmc)
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values, ref.log_likelihood["y"].values, rtol=1e-5, atol=1e-5
    )
    direct = numpyro.infer.log_likelihood(
        np_linreg_mu, mcmc.get_samples(), jnp.asarray(X_TRAIN), jnp.asarray(Y_TRAIN)
    )["y"]
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values.reshape(80, N), np.asarray(direct), rtol=1e-5, atol=1e-5
    )
    assert (
        set(idata.sample_stats.data_vars)
        == set(ref.sample_stats.data_vars)
        >= {"diverging", "energy", "lp", "step_size", "tree_depth", "n_steps", "acceptance_rate"}
    )
    for name in ref.sample_stats.data_vars:
        assert idata.sample_stats[name].dims == ("chain", "draw")
        np.testing.assert_array_equal(
            idata.sample_stats[name].values, ref.sample_stats[name].values
        )
    for name in ("w", "s", "mu"):
        np.testing.assert_allclose(
            idata.posterior[name].values, ref.posterior[name].values, rtol=1e-6
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = az.summary(idata), az.summary(ref)
        import matplotlib

        matplotlib.use("Agg")
        az.plot_energy(idata)
    assert set(ours.index) == set(theirs.index) >= {"s", "w"}
    np.testing.assert_allclose(ours.loc[theirs.index, "r_hat"], theirs["r_hat"])


def test_numpyro_subsampled_plate_scores_every_test_row_in_order():
    """Each draw scores all 24 rows (not 5 random ones) in order: equal to the unsubsampled model."""
    w = jnp.linspace(1.0, 2.0, 6)
    s = jnp.linspace(0.2, 0.5, 6)
    x, y = jnp.asarray(X_TEST), jnp.asarray(Y_TEST)
    sub = to_inference_data(np_linreg_subsampled, {"w": w, "s": s}, x, y)
    plain = to_inference_data(np_linreg, {"w": w, "s": s}, x, y)
    assert sub.log_likelihood["y"].shape == (1, 6, N)
    np.testing.assert_allclose(
        sub.log_likelihood["y"].values, plain.log_likelihood["y"].values, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        sub.log_likelihood["y"].values[0], _scipy_loglik(w, s, X_TEST, Y_TEST), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(sub.observed_data["y"].values, Y_TEST)


def test_numpyro_subsampled_model_with_a_guide_scores_every_row():
    """The guide path too (Predictive draws the latents; the model scores all rows). The guide's
    initial parameters stand in for a fitted one: what is checked is the scoring, not the fit."""
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    guide = AutoNormal(np_linreg_subsampled)
    svi = SVI(np_linreg_subsampled, guide, numpyro.optim.Adam(0.05), Trace_ELBO())
    params = svi.get_params(
        svi.init(jax.random.PRNGKey(0), jnp.asarray(X_TRAIN), jnp.asarray(Y_TRAIN))
    )
    idata = to_inference_data(
        np_linreg_subsampled,
        guide,
        jnp.asarray(X_TEST),
        jnp.asarray(Y_TEST),
        params=params,
        num_samples=30,
    )
    w, s = idata.posterior["w"].values.ravel(), idata.posterior["s"].values.ravel()
    assert idata.log_likelihood["y"].shape == (1, 30, N) and np.std(w) > 0
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values[0],
        _scipy_loglik(w, s, X_TEST, Y_TEST),
        rtol=1e-5,
        atol=1e-5,
    )


# --- Pyro models ---------------------------------------------------------------------------


def linreg(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 2.0))
    s = pyro.sample("s", dist.LogNormal(-1.0, 0.5))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(w * x, s), obs=y)


def linreg_mu(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 2.0))
    s = pyro.sample("s", dist.LogNormal(-1.0, 0.5))
    with pyro.plate("data", len(x)):
        mu = pyro.deterministic("mu", w * x)
        return pyro.sample("y", dist.Normal(mu, s), obs=y)


def linreg_subsampled(x, y=None, batch=5):
    w = pyro.sample("w", dist.Normal(0.0, 2.0))
    s = pyro.sample("s", dist.LogNormal(-1.0, 0.5))
    with pyro.plate("data", len(x), subsample_size=batch) as idx:
        return pyro.sample("y", dist.Normal(w * x[idx], s), obs=None if y is None else y[idx])


def _t(a):
    return torch.as_tensor(a)


def test_pyro_predictive_samples_with_training_mu_and_y_score_the_test_rows():
    """Predictive on the training inputs returns w, s, mu and y, all of it a posterior's
    'samples'; mu and y are training rows of the test set's length: dropped, recomputed."""
    from pyro.infer import SVI, Predictive, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    guide = AutoNormal(linreg_mu)
    svi = SVI(linreg_mu, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(50):
        svi.step(_t(X_TRAIN), _t(Y_TRAIN))
    samples = Predictive(linreg_mu, guide=guide, num_samples=30)(_t(X_TRAIN))
    assert {"w", "s", "mu", "y"} <= set(samples) and samples["mu"].shape[-1] == N
    idata = to_inference_data(linreg_mu, samples, _t(X_TEST), _t(Y_TEST))
    assert idata.posterior["w"].shape == (
        1,
        30,
    )  # Predictive's [draw, 1] is the scalar site's shape
    w, s = samples["w"].numpy().ravel(), samples["s"].numpy().ravel()
    expected = _scipy_loglik(w, s, X_TEST, Y_TEST)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(idata.observed_data["y"].values, Y_TEST)
    np.testing.assert_allclose(
        idata.posterior["mu"].values[0], w[:, None] * X_TEST[None], rtol=1e-5, atol=1e-5
    )
    stale = stats.norm.logpdf(Y_TEST[None], samples["mu"].reshape(30, N).numpy(), s[:, None])
    assert np.abs(stale - expected).max() > 1.0


def test_pyro_subsampled_plate_scores_every_test_row_in_order():
    """24 rows in chunks of 5 (the last chunk overlaps): equal to the unsubsampled model."""
    w, s = torch.linspace(1.0, 2.0, 6), torch.linspace(0.2, 0.5, 6)
    sub = to_inference_data(linreg_subsampled, {"w": w, "s": s}, _t(X_TEST), _t(Y_TEST))
    plain = to_inference_data(linreg, {"w": w, "s": s}, _t(X_TEST), _t(Y_TEST))
    assert sub.log_likelihood["y"].shape == (1, 6, N) and sub.log_likelihood["y"].dims == (
        "chain",
        "draw",
        "data",
    )
    np.testing.assert_allclose(
        sub.log_likelihood["y"].values, plain.log_likelihood["y"].values, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        sub.log_likelihood["y"].values[0], _scipy_loglik(w, s, X_TEST, Y_TEST), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(sub.observed_data["y"].values, Y_TEST)
    assert sub.posterior_predictive["y"].shape == (1, 6, N)


def test_pyro_subsampled_plate_with_a_deterministic_and_event_dims():
    """Rows joined along the plate's axis also for a deterministic and a 2-d event site."""

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=4) as idx:
            mu = pyro.deterministic("mu", x[idx] * w, event_dim=1)
            return pyro.sample(
                "y", dist.Normal(mu, 0.5).to_event(1), obs=None if y is None else y[idx]
            )

    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
    w = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
    idata = to_inference_data(model, {"w": w}, x, y)
    np.testing.assert_allclose(
        idata.posterior["mu"].values[0], (w[:, None, :] * x[None]).numpy(), rtol=1e-6
    )
    expected = stats.norm.logpdf(y.numpy()[None], (w[:, None, :] * x[None]).numpy(), 0.5).sum(-1)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected, rtol=1e-5, atol=1e-5)


def test_pyro_mcmc_loglik_and_sample_stats_equal_az_from_pyro():
    from pyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(linreg), num_samples=40, warmup_steps=40, disable_progbar=True)
    mcmc.run(_t(X_TRAIN), _t(Y_TRAIN))
    idata = to_inference_data(linreg, mcmc, _t(X_TRAIN), _t(Y_TRAIN))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = az.from_pyro(mcmc)
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values, ref.log_likelihood["y"].values, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(
        idata.sample_stats["diverging"].values, ref.sample_stats["diverging"].values
    )
    assert idata.posterior["w"].shape == (1, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sorted(az.summary(idata).index) == ["s", "w"]


# --- the test-set log predictive density ----------------------------------------------------


def test_log_predictive_density_is_per_row_log_mean_exp_over_all_draws():
    w = torch.tensor([[1.3, 1.5, 1.7], [1.4, 1.6, 1.2]])  # 2 chains x 3 draws
    s = torch.tensor([[0.3, 0.4, 0.5], [0.35, 0.3, 0.6]])
    idata = to_inference_data(linreg, {"w": w, "s": s}, _t(X_TEST), _t(Y_TEST), group_by_chain=True)
    lpd = log_predictive_density(idata)
    # by hand: the predictive density is the average of the 6 densities, then its log
    dens = stats.norm.pdf(
        Y_TEST[None].astype(np.float64),
        w.reshape(-1, 1).double().numpy() * X_TEST[None],
        s.reshape(-1, 1).double().numpy(),
    )
    per_row = np.log(dens.mean(axis=0))
    np.testing.assert_allclose(lpd.per_row, per_row, rtol=1e-5)
    assert lpd.total == pytest.approx(per_row.sum(), rel=1e-5)
    assert lpd.mean == pytest.approx(per_row.mean(), rel=1e-5) and lpd.num_draws == 6
    assert test_metrics(idata)["nll"] == pytest.approx(-lpd.mean)
    # not the mean log density (a different quantity, lower by Jensen)
    assert lpd.total > np.log(dens).mean(axis=0).sum() + 1e-3


def test_log_predictive_density_refuses_nan_and_ambiguous_sites():
    import xarray as xr

    ll = np.zeros((1, 2, 3))
    ll[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        log_predictive_density(
            {"log_likelihood": xr.Dataset({"y": (("chain", "draw", "data"), ll)})}
        )
    two = xr.Dataset(
        {"a": (("chain", "draw"), np.zeros((1, 2))), "b": (("chain", "draw"), np.zeros((1, 2)))}
    )
    with pytest.raises(ValueError, match="var_name"):
        log_predictive_density({"log_likelihood": two})


# --- refusals ------------------------------------------------------------------------------


def test_samples_with_an_unknown_site_or_a_missing_latent_are_refused():
    with pytest.raises(ValueError, match=r"sites \['wrong'\] that the model does not have"):
        to_inference_data(
            linreg,
            {"w": torch.ones(2), "s": torch.ones(2), "wrong": torch.ones(2)},
            _t(X_TEST),
            _t(Y_TEST),
        )
    with pytest.raises(ValueError, match=r"no draws for the latent sites \['s'\]"):
        to_inference_data(linreg, {"w": torch.ones(2)}, _t(X_TEST), _t(Y_TEST))
    with pytest.raises(ValueError, match=r"no draws for the latent sites \['s'\]"):
        to_inference_data(np_linreg, {"w": jnp.ones(2)}, jnp.asarray(X_TEST), jnp.asarray(Y_TEST))
    with pytest.raises(ValueError, match="same number of draws"):
        to_inference_data(linreg, {"w": torch.ones(2), "s": torch.ones(3)}, _t(X_TEST), _t(Y_TEST))


@pytest.mark.parametrize("side", ["pyro", "numpyro"])
def test_a_local_latent_of_training_length_is_refused_on_other_rows(side):
    """One z per training row cannot score other rows: refused, also when the sizes agree."""
    if side == "pyro":

        def model(x, y=None):
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                return pyro.sample("y", dist.Normal(z * x, 1.0), obs=y)

        samples, x, y = {"z": torch.zeros(3, N)}, _t(X_TEST[:10]), _t(Y_TEST[:10])
    else:

        def model(x, y=None):
            with numpyro.plate("data", x.shape[0]):
                z = numpyro.sample("z", nd.Normal(0.0, 1.0))
                return numpyro.sample("y", nd.Normal(z * x, 1.0), obs=y)

        samples, x, y = {"z": jnp.zeros((3, N))}, jnp.asarray(X_TEST[:10]), jnp.asarray(Y_TEST[:10])
    as_array = _t if side == "pyro" else jnp.asarray
    x_same, y_same = as_array(X_TEST), as_array(Y_TEST)  # as many rows as z has values
    with pytest.raises(ValueError, match=r"latent sites \['z'\] have one value per row"):
        to_inference_data(
            model, samples, x_same, y_same
        )  # quietly row i of one set with row i of the other
    # the training rows themselves (LOO): carried over, and scored as the model says
    idata = to_inference_data(model, samples, x_same, y_same, same_rows=True)
    expected = -0.5 * np.log(2 * np.pi) - 0.5 * np.asarray(Y_TEST) ** 2  # z = 0: y ~ N(0, 1)
    np.testing.assert_allclose(
        np.asarray(idata.log_likelihood["y"])[0, 0], expected, rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match=r"'z' have shape \(24,\) per draw .* shape \(10,\)"):
        to_inference_data(model, samples, x, y, same_rows=True)


def test_pyro_local_latent_in_a_subsampled_plate_and_two_subsampled_plates_are_refused():
    def local(x, y=None):
        with pyro.plate("data", len(x), subsample_size=4) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            return pyro.sample("y", dist.Normal(z * x[idx], 1.0), obs=None if y is None else y[idx])

    with pytest.raises(
        ValueError, match=r"latent sites \['z'\] sit in the subsampled plate 'data'"
    ):
        to_inference_data(local, {"z": torch.zeros(2, 4)}, _t(X_TEST), _t(Y_TEST))

    def crossed(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with (
            pyro.plate("rows", x.shape[0], subsample_size=2, dim=-2) as i,
            pyro.plate("cols", x.shape[1], subsample_size=2, dim=-1) as j,
        ):
            return pyro.sample(
                "y", dist.Normal(w * x[i][:, j], 1.0), obs=None if y is None else y[i][:, j]
            )

    with pytest.raises(ValueError, match=r"plates \['cols', 'rows'\] all subsample"):
        to_inference_data(crossed, {"w": torch.zeros(2)}, torch.ones(4, 3), torch.ones(4, 3))


@pytest.mark.parametrize("side", ["pyro", "numpyro"])
def test_a_guide_that_leaves_a_latent_to_its_prior_is_refused(side):
    """A latent the guide does not draw would be drawn from its prior at every draw (an
    enumerated discrete latent, typically): refused, not scored conditionally on noise."""
    if side == "pyro":

        def model(x, y=None):
            w = pyro.sample("w", dist.Normal(0.0, 1.0))
            s = pyro.sample("s", dist.HalfNormal(1.0))
            with pyro.plate("data", len(x)):
                return pyro.sample("y", dist.Normal(w * x, s), obs=y)

        def guide(x, y=None):
            pyro.sample("w", dist.Normal(pyro.param("w_loc", torch.tensor(1.0)), 0.1))

        pyro.clear_param_store()
        guide(_t(X_TEST))
        kwargs = {}
        x, y = _t(X_TEST), _t(Y_TEST)
    else:

        def model(x, y=None):
            w = numpyro.sample("w", nd.Normal(0.0, 1.0))
            s = numpyro.sample("s", nd.HalfNormal(1.0))
            with numpyro.plate("data", x.shape[0]):
                return numpyro.sample("y", nd.Normal(w * x, s), obs=y)

        def guide(x, y=None):
            numpyro.sample("w", nd.Normal(numpyro.param("w_loc", 1.0), 0.1))

        kwargs = {"params": {"w_loc": jnp.array(1.0)}}
        x, y = jnp.asarray(X_TEST), jnp.asarray(Y_TEST)
    with pytest.raises(ValueError, match=r"guide draws no value for the latent sites \['s'\]"):
        to_inference_data(model, guide, x, y, num_samples=5, **kwargs)
