"""The experiments' shared modules: the registry, the metrics, the record store."""

import json

import numpy as np
import pytest
import scipy.stats as st

from pyro_mixup.experiments import metrics
from pyro_mixup.experiments.methods import METHODS, parse_methods, partner_table, wrap
from pyro_mixup.experiments.results import RecordStore


def test_gaussian_scores_against_scipy_and_a_calibrated_forecast():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=4000), np.exp(rng.normal(size=4000) * 0.3)
    y = mu + sigma * rng.normal(size=4000)
    s = metrics.gaussian_scores(mu, sigma, y, y_scale=3.0)
    assert s["test_nll"] == pytest.approx(
        -st.norm(mu, sigma).logpdf(y).mean() + np.log(3.0), rel=1e-9
    )
    assert s["test_rmse"] == pytest.approx(3.0 * np.sqrt(np.mean((mu - y) ** 2)))
    assert s["coverage_90"] == pytest.approx(0.9, abs=0.015)  # calibrated by construction
    assert s["pit_mean"] == pytest.approx(0.5, abs=0.015)
    # the same NLL under jax.numpy (what the trainer's validation uses)
    import jax.numpy as jnp

    assert float(
        metrics.gaussian_nll(jnp.asarray(mu), jnp.asarray(sigma), jnp.asarray(y), xp=jnp)
    ) == pytest.approx(float(metrics.gaussian_nll(mu, sigma, y)), rel=1e-5)
    assert (
        pytest.approx(-st.norm(0, 1).logpdf(rng.normal(size=200000)).mean(), abs=0.01)
        == metrics.CONSTANT_PREDICTOR_NLL
    )


def test_coverage_counts_the_edges():
    assert metrics.coverage([0.0, 1.0, 2.0], 0.0, 1.0) == pytest.approx(2 / 3)


def test_record_store_resumes_replaces_and_refuses_garbage(tmp_path):
    path = tmp_path / "r.json"
    store = RecordStore(str(path), ("method", "split"))
    store.add([{"method": "erm", "split": 0, "v": 1}, {"method": "erm", "split": 1, "v": 2}])
    store.add([{"method": "erm", "split": 1, "v": 3}])  # same key: replaced, not duplicated
    again = RecordStore(str(path), ("method", "split"))
    assert sorted(r["v"] for r in again.records) == [1, 3]
    assert again.has({"method": "erm", "split": 0}) and not again.has({"method": "mix", "split": 0})
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RecordStore(str(path), ("method",))
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="list of records"):
        RecordStore(str(path), ("method",))


def test_the_registry_wraps_for_both_backends_and_refuses_what_it_cannot_do():
    import pyro_mixup.numpyro.handlers as NH
    import pyro_mixup.pyro.handlers as PH

    def model(x, y=None):
        pass

    assert wrap(model, "erm", backend="pyro", alpha=0.5) is model
    m_probmix = wrap(
        model, "m-probmix", backend="numpyro", alpha=0.5
    )  # NumPyro's handler is the messenger
    assert isinstance(m_probmix, NH.ProbMixMessenger) and m_probmix.core.options.at == "z"
    m_mix = wrap(model, "m-mix", backend="pyro", alpha=0.25).mixup_handler
    assert isinstance(m_mix, PH.MixupMessenger) and (
        m_mix.core.options.at,
        m_mix.core.options.alpha,
    ) == ("h", 0.25)
    model.embedding = False
    with pytest.raises(ValueError, match="embedding variant"):
        wrap(model, "m-probmix", backend="pyro")
    with pytest.raises(ValueError, match="backend"):
        wrap(model, "probmix", backend="jax")
    assert parse_methods("all") == [m for m in METHODS if METHODS[m].in_default_set]
    x = np.random.default_rng(0).normal(size=(12, 2))
    assert partner_table(METHODS["lock-mix"], x).candidates.shape == (12, 5)
    assert partner_table(METHODS["probmix"], x) is None
    with pytest.raises(ValueError, match="continuous label"):
        partner_table(METHODS["cmixup-probmix"], x, np.arange(12))


def test_mixture_scores_against_scipy():
    import scipy.stats as st
    from scipy.optimize import brentq

    means = np.array([[0.0, 1.0, -2.0], [1.5, 1.0, 3.0]])
    stds = np.array([[1.0, 0.5, 2.0], [0.3, 0.5, 1.0]])
    y = np.array([0.7, 1.2, 0.0])
    comp = [st.norm(means[k], stds[k]) for k in range(2)]
    density = 0.5 * (comp[0].pdf(y) + comp[1].pdf(y))
    cdf = 0.5 * (comp[0].cdf(y) + comp[1].cdf(y))
    s = metrics.mixture_scores(means, stds, y, y_scale=2.0)
    assert s["test_nll"] == pytest.approx(-np.log(density).mean() + np.log(2.0), rel=1e-10)
    assert s["pit_mean"] == pytest.approx(cdf.mean(), rel=1e-10)
    assert s["test_rmse"] == pytest.approx(
        2.0 * np.sqrt(np.mean((means.mean(0) - y) ** 2)), rel=1e-10
    )
    assert s["coverage_90"] == pytest.approx(np.mean((cdf >= 0.05) & (cdf <= 0.95)))
    for q in (0.025, 0.5, 0.975):
        want = [
            brentq(lambda v, i=i: 0.5 * (comp[0].cdf(v)[i] + comp[1].cdf(v)[i]) - q, -50, 50)  # noqa: B023
            for i in range(3)
        ]
        np.testing.assert_allclose(metrics.mixture_quantile(means, stds, q), want, atol=1e-8)
    # one component: the Gaussian scores
    g = metrics.gaussian_scores(means[0], stds[0], y, y_scale=2.0)
    assert g["test_nll"] == pytest.approx(-comp[0].logpdf(y).mean() + np.log(2.0), rel=1e-10)
