"""The NumPyro path of ``to_inference_data`` under ArviZ 1.x (``xarray.DataTree``), checked end to end.

ArviZ 1.x needs Python >= 3.12, so this runs in its own virtualenv, not in the
test suite's; ``tests/test_arviz1.py`` runs it when such an environment is there
(``make test-arviz1`` builds one). It needs only ``arviz>=1``, ``numpyro`` and
``jax`` (no torch): the package is imported from this checkout.

Run::

    python3.12 -m venv .venv-arviz1 && .venv-arviz1/bin/pip install 'arviz>=1' numpyro jax
    .venv-arviz1/bin/python tests/arviz1_check.py     # prints one line per check, then "ok"

Each check raises (non-zero exit) when it fails.
"""

import math
import os
import sys


def _normal_logpdf(y, mu, s):
    import numpy as np

    return -0.5 * ((y - mu) / s) ** 2 - np.log(s) - 0.5 * math.log(2 * math.pi)


def main():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import warnings

    import arviz as az
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as nd
    import xarray as xr
    from numpyro.infer import MCMC, NUTS

    from pyro_mixup.diagnostics import log_predictive_density, test_metrics, to_inference_data

    assert int(az.__version__.split(".")[0]) >= 1, f"needs ArviZ 1.x, found {az.__version__}"
    assert "torch" not in sys.modules, "the NumPyro path must not import torch"
    print(
        f"arviz {az.__version__}, numpyro {numpyro.__version__}, jax {jax.__version__}, python {sys.version.split()[0]}"
    )

    n = 24
    rng = np.random.default_rng(3)
    x_tr = np.linspace(-2, 2, n).astype(np.float32)
    y_tr = (1.5 * x_tr + 0.3 * rng.normal(size=n)).astype(np.float32)
    x_te = rng.uniform(-3, 3, size=n).astype(np.float32)  # same size as the training set
    y_te = (1.5 * x_te + 0.3 * rng.normal(size=n)).astype(np.float32)

    def model(x, y=None):
        w = numpyro.sample("w", nd.Normal(0.0, 2.0))
        s = numpyro.sample("s", nd.LogNormal(-1.0, 0.5))
        with numpyro.plate("data", x.shape[0]):
            mu = numpyro.deterministic("mu", w * x)
            return numpyro.sample("y", nd.Normal(mu, s), obs=y)

    def subsampled(x, y=None):
        w = numpyro.sample("w", nd.Normal(0.0, 2.0))
        s = numpyro.sample("s", nd.LogNormal(-1.0, 0.5))
        with numpyro.plate("data", x.shape[0], subsample_size=5) as idx:
            return numpyro.sample("y", nd.Normal(w * x[idx], s), obs=None if y is None else y[idx])

    fields = (
        "diverging",
        "energy",
        "potential_energy",
        "adapt_state.step_size",
        "num_steps",
        "accept_prob",
    )
    mcmc = MCMC(
        NUTS(model),
        num_warmup=60,
        num_samples=40,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), jnp.asarray(x_tr), jnp.asarray(y_tr), extra_fields=fields)

    # 1. test data = training data: the log-likelihood and sample_stats of ArviZ's own converter
    idata = to_inference_data(model, mcmc, jnp.asarray(x_tr), jnp.asarray(y_tr))
    assert isinstance(idata, xr.DataTree), type(idata)
    assert set(idata.children) == {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "sample_stats",
        "observed_data",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = az.from_numpyro(mcmc, log_likelihood=True)  # off by default in ArviZ 1.x
    diff = np.abs(idata["log_likelihood"]["y"].values - ref["log_likelihood"]["y"].values).max()
    assert diff <= 1e-5, diff
    print(f"log_likelihood == az.from_numpyro's: max abs diff {diff:.2e} (tolerance 1e-5)")
    ours, theirs = set(idata["sample_stats"].data_vars), set(ref["sample_stats"].data_vars)
    # ArviZ 1.x adds reached_max_tree_depth from NUTS's private max tree depth; everything else is carried
    assert theirs - ours <= {"reached_max_tree_depth"} and ours <= theirs, (ours, theirs)
    for name in ours:
        np.testing.assert_array_equal(
            idata["sample_stats"][name].values, ref["sample_stats"][name].values
        )
    print(f"sample_stats == az.from_numpyro's: {sorted(ours)}")
    summary = az.summary(idata, var_names=["w", "s"])
    assert {"w", "s"} <= set(summary.index), summary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings on 80 draws
        loo = az.loo(idata)
    print(f"az.summary and az.loo run (elpd_loo {float(loo.elpd):.2f})")

    # 2. a test set of the same size: the training-time mu is dropped, the test rows are scored
    idata = to_inference_data(model, mcmc, jnp.asarray(x_te), jnp.asarray(y_te))
    w = idata["posterior"]["w"].values.reshape(-1, 1)
    s = idata["posterior"]["s"].values.reshape(-1, 1)
    expected = _normal_logpdf(y_te[None].astype(np.float64), w * x_te[None], s)
    diff = np.abs(idata["log_likelihood"]["y"].values.reshape(80, n) - expected).max()
    assert diff <= 1e-4, diff
    print(
        f"deterministic mu recomputed on the test rows: max abs diff {diff:.2e} (tolerance 1e-4, float32)"
    )

    # 3. a subsampled plate scores every test row in order
    draws = {"w": jnp.linspace(1.0, 2.0, 6), "s": jnp.linspace(0.2, 0.5, 6)}
    sub = to_inference_data(subsampled, draws, jnp.asarray(x_te), jnp.asarray(y_te))
    expected = _normal_logpdf(
        y_te[None].astype(np.float64),
        np.asarray(draws["w"])[:, None] * x_te[None],
        np.asarray(draws["s"])[:, None],
    )
    got = sub["log_likelihood"]["y"].values[0]
    assert sub["log_likelihood"]["y"].shape == (1, 6, n)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    print(
        f"subsampled plate: all {n} rows in order, max abs diff {np.abs(got - expected).max():.2e} "
        "(tolerance rtol 1e-5, atol 1e-5; float32 against float64)"
    )

    # 4. the test log predictive density on a DataTree, against a hand computation
    lpd = log_predictive_density(sub)
    by_hand = np.log(np.exp(expected).mean(axis=0))
    assert np.allclose(lpd.per_row, by_hand, rtol=1e-5) and abs(lpd.total - by_hand.sum()) < 1e-4
    assert abs(test_metrics(sub)["nll"] + lpd.mean) < 1e-9
    print(f"log_predictive_density: total {lpd.total:.3f} == by hand {by_hand.sum():.3f}")
    print("ok")


if __name__ == "__main__":
    main()
