"""The marginal predictive over embeddings (and guide latents), both backends.

Oracles: a linear-Gaussian model whose marginal is known in closed form; the
mixture density integrated by quadrature; the mean-embedding shortcut, which the
marginal must equal when the embedding has no spread; the two backends against
each other on the same weights.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import pyro
import pyro.distributions as pd
import pytest
import torch

import pyro_mixup
from pyro_mixup import numpyro as pmn

RNG = np.random.default_rng(0)
W0, B0 = RNG.normal(size=(1, 16)).astype(np.float32), RNG.normal(size=16).astype(np.float32)
W1, B1 = (RNG.normal(size=(16, 2)) / 4).astype(np.float32), np.array([0.3, -1.0], np.float32)
SCALE_A = (RNG.normal(size=16) / 2).astype(np.float32)


def torch_net(x, y=None, spread=1.0):
    """An MLP with a stochastic embedding (ReLU mean, softplus scale) and a heteroscedastic head."""
    t = torch.as_tensor
    with pyro.plate("data", x.shape[0]):
        m = torch.relu(x @ t(W0) + t(B0))
        z = pyro_mixup.embed(
            "z", pd.Normal(m, spread * torch.nn.functional.softplus(t(SCALE_A) * m)).to_event(1)
        )
        out = z @ t(W1) + t(B1)
        return pyro.sample(
            "y", pd.Normal(out[..., 0], torch.nn.functional.softplus(out[..., 1])), obs=y
        )


def jax_net(x, y=None, spread=1.0):
    with numpyro.plate("data", x.shape[0]):
        m = jax.nn.relu(x @ W0 + B0)
        z = pmn.embed("z", nd.Normal(m, spread * jax.nn.softplus(SCALE_A * m)).to_event(1))
        out = z @ W1 + B1
        return numpyro.sample("y", nd.Normal(out[..., 0], jax.nn.softplus(out[..., 1])), obs=y)


X = np.linspace(-2, 2, 5, dtype=np.float32)[:, None]
Y = np.linspace(-1, 1, 5, dtype=np.float32)


def pyro_pred(*args, **kw):
    pyro.set_rng_seed(0)
    return pyro_mixup.marginal_predictive(torch_net, torch.as_tensor(X), *args, **kw)


def jax_pred(*args, **kw):
    return pmn.marginal_predictive(jax_net, jax.random.PRNGKey(0), jnp.asarray(X), *args, **kw)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_closed_form_marginal(backend):
    """z ~ N(2x, 0.5^2), y ~ N(3z, 1): y ~ N(6x, 9 * 0.25 + 1) exactly."""
    x, y = np.array([-1.0, 0.0, 2.0], np.float32), np.array([-5.0, 1.0, 11.0], np.float32)
    if backend == "pyro":

        def model(x, y=None):
            with pyro.plate("data", len(x)):
                z = pyro_mixup.embed("z", pd.Normal(2 * x, 0.5))
                return pyro.sample("y", pd.Normal(3 * z, 1.0), obs=y)

        pyro.set_rng_seed(1)
        p = pyro_mixup.marginal_predictive(
            model, torch.as_tensor(x), torch.as_tensor(y), num_draws=20000
        )
    else:

        def model(x, y=None):
            with numpyro.plate("data", len(x)):
                z = pmn.embed("z", nd.Normal(2 * x, 0.5))
                return numpyro.sample("y", nd.Normal(3 * z, 1.0), obs=y)

        p = pmn.marginal_predictive(
            model, jax.random.PRNGKey(1), jnp.asarray(x), jnp.asarray(y), num_draws=20000
        )
    var = 9 * 0.25 + 1
    exact = -0.5 * np.log(2 * np.pi * var) - 0.5 * (y - 6 * x) ** 2 / var
    np.testing.assert_allclose(np.asarray(p.log_density), exact, atol=0.03)
    np.testing.assert_allclose(np.asarray(p.mean), 6 * x, atol=0.05)
    np.testing.assert_allclose(np.asarray(p.variance), var, rtol=0.03)
    np.testing.assert_allclose(np.asarray(p.samples).var(0), var, rtol=0.05)
    assert p.num_draws == 20000 and p.site == "y" and p.embedding == "sample"


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_mixture_density_integrates_to_one(backend):
    grid = np.linspace(-15, 15, 6001, dtype=np.float32)
    values = np.repeat(grid[:, None], len(X), axis=1)  # a grid of y for every input, the same draws
    p = (
        pyro_pred(values=values, num_draws=300)
        if backend == "pyro"
        else jax_pred(values=values, num_draws=300)
    )
    density = np.exp(np.asarray(p.log_density, np.float64))
    assert density.shape == (len(grid), len(X))
    np.testing.assert_allclose(np.trapezoid(density, grid, axis=0), 1.0, atol=2e-3)
    # and its first two moments are the ones the laws of total expectation and variance give
    mean = np.trapezoid(density * grid[:, None], grid, axis=0)
    var = np.trapezoid(density * (grid[:, None] - mean) ** 2, grid, axis=0)
    np.testing.assert_allclose(mean, np.asarray(p.mean), atol=2e-3)
    np.testing.assert_allclose(var, np.asarray(p.variance), rtol=2e-3)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_no_spread_equals_the_mean_embedding(backend):
    run = pyro_pred if backend == "pyro" else jax_pred
    marginal = run(Y, num_draws=50, spread=1e-12)
    shortcut = run(Y, num_draws=3, embedding="mean")
    np.testing.assert_allclose(
        np.asarray(marginal.log_density), np.asarray(shortcut.log_density), atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(marginal.mean), np.asarray(shortcut.mean), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(marginal.variance), np.asarray(shortcut.variance), rtol=1e-5
    )
    # with spread the marginal is wider than the shortcut: the embedding noise adds variance
    wide = run(Y, num_draws=2000)
    assert (np.asarray(wide.variance) > np.asarray(shortcut.variance)).all()


def test_pyro_and_numpyro_agree():
    a, b = pyro_pred(Y, num_draws=20000), jax_pred(Y, num_draws=20000)
    np.testing.assert_allclose(np.asarray(a.log_density), np.asarray(b.log_density), atol=0.02)
    np.testing.assert_allclose(np.asarray(a.mean), np.asarray(b.mean), atol=0.03)
    np.testing.assert_allclose(np.asarray(a.variance), np.asarray(b.variance), rtol=0.05)
    shortcut_a, shortcut_b = (
        pyro_pred(Y, num_draws=1, embedding="mean"),
        jax_pred(Y, num_draws=1, embedding="mean"),
    )
    np.testing.assert_allclose(
        np.asarray(shortcut_a.log_density), np.asarray(shortcut_b.log_density), atol=1e-5
    )


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_guide_latents_are_marginalised(backend):
    """w ~ guide N(2, 0.5^2), y ~ N(w x, 1): the predictive is N(2x, 0.25 x^2 + 1)."""
    x = np.array([0.0, 1.0, 3.0], np.float32)
    if backend == "pyro":

        def model(x, y=None):
            w = pyro.sample("w", pd.Normal(0.0, 10.0))
            with pyro.plate("data", len(x)):
                return pyro.sample("y", pd.Normal(w * x, 1.0), obs=y)

        def guide(x, y=None):
            pyro.sample("w", pd.Normal(2.0, 0.5))

        pyro.set_rng_seed(2)
        p = pyro_mixup.marginal_predictive(model, torch.as_tensor(x), guide=guide, num_draws=20000)
    else:

        def model(x, y=None):
            w = numpyro.sample("w", nd.Normal(0.0, 10.0))
            with numpyro.plate("data", len(x)):
                return numpyro.sample("y", nd.Normal(w * x, 1.0), obs=y)

        def guide(x, y=None):
            loc = numpyro.param("loc", 0.0)
            numpyro.sample("w", nd.Normal(loc, 0.5))

        p = pmn.marginal_predictive(
            model,
            jax.random.PRNGKey(2),
            jnp.asarray(x),
            guide=guide,
            params={"loc": jnp.float32(2.0)},
            num_draws=20000,
        )
    assert p.log_density is None  # nothing observed, no values given
    np.testing.assert_allclose(np.asarray(p.mean), 2 * x, atol=0.05)
    np.testing.assert_allclose(np.asarray(p.variance), 0.25 * x**2 + 1, rtol=0.05)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_categorical_site_has_a_density_but_no_mean(backend):
    logits = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], np.float32)
    labels = np.repeat(np.arange(3)[:, None], 2, axis=1)  # every class for both rows
    if backend == "pyro":

        def model(y=None):
            with pyro.plate("data", 2):
                z = pyro_mixup.embed("z", pd.Normal(torch.as_tensor(logits), 1.0).to_event(1))
                return pyro.sample("y", pd.Categorical(logits=z), obs=y)

        p = pyro_mixup.marginal_predictive(model, values=torch.as_tensor(labels), num_draws=500)
    else:

        def model(y=None):
            with numpyro.plate("data", 2):
                z = pmn.embed("z", nd.Normal(jnp.asarray(logits), 1.0).to_event(1))
                return numpyro.sample("y", nd.Categorical(logits=z), obs=y)

        p = pmn.marginal_predictive(
            model, jax.random.PRNGKey(3), values=jnp.asarray(labels), num_draws=500
        )
    np.testing.assert_allclose(np.exp(np.asarray(p.log_density, np.float64)).sum(0), 1.0, atol=1e-5)
    assert set(np.unique(np.asarray(p.samples))) <= {0, 1, 2}
    with pytest.raises(ValueError, match="no mean and variance"):
        p.mean


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(num_draws=0), ValueError, "num_draws must be a positive int"),
        (dict(num_draws=2.5), ValueError, "num_draws must be a positive int"),
        (dict(embedding="median"), ValueError, "embedding must be 'sample'"),
        (dict(site="obs"), KeyError, "no sample site 'obs'.*'y'"),
    ],
)
def test_refusals(backend, options, error, match):
    with pytest.raises(error, match=match):
        (pyro_pred if backend == "pyro" else jax_pred)(**options)


def test_numpyro_mean_embedding_needs_no_key_but_a_draw_does():
    m = nd.Normal(jnp.ones((2, 3)), 1.0).to_event(1)
    with pmn.mean_embedding():
        z = pmn.embed("z", m, dim=-1)
    np.testing.assert_array_equal(np.asarray(z), 1.0)
    with numpyro.handlers.trace(), pytest.raises(ValueError, match="needs a PRNG key"):
        pmn.embed("z", m, dim=-1)


def test_pyro_mean_embedding_as_wrapper_and_context():
    x = torch.as_tensor(X)
    with pyro_mixup.mean_embedding():
        a = torch_net(x)
    tr = pyro.poutine.trace(pyro_mixup.mean_embedding(torch_net)).get_trace(x)
    b = tr.nodes["y"]["fn"].mean
    tr2 = pyro.poutine.trace(pyro_mixup.mean_embedding(torch_net)).get_trace(x)
    assert torch.equal(b, tr2.nodes["y"]["fn"].mean)  # deterministic: no embedding draw
    assert a.shape == (len(X),)
    assert not math.isnan(float(b.sum()))


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_a_wrapped_model_or_an_active_handler_predicts_the_plain_model(backend):
    """The training model (probmix(model)) is unwrapped; a `with probmix():` around the call is refused."""
    x = np.array([0.0, 10.0, 20.0], np.float32)
    if backend == "pyro":
        from pyro_mixup.handlers import probmix

        def model(x, y=None):
            with pyro.plate("data", len(x)):
                z = pyro_mixup.embed("z", pd.Normal(x, 0.01))
                return pyro.sample("y", pd.Normal(z, 1.0), obs=y)

        p = pyro_mixup.marginal_predictive(
            probmix(model, at="z"), torch.as_tensor(x), num_draws=200
        )
        with pytest.raises(RuntimeError, match="marginal_predictive outside"), probmix(at="z"):
            pyro_mixup.marginal_predictive(model, torch.as_tensor(x), num_draws=2)
    else:
        from pyro_mixup.numpyro.handlers import probmix

        def model(x, y=None):
            with numpyro.plate("data", len(x)):
                z = pmn.embed("z", nd.Normal(x, 0.01))
                return numpyro.sample("y", nd.Normal(z, 1.0), obs=y)

        p = pmn.marginal_predictive(
            probmix(model, at="z"), jax.random.PRNGKey(0), jnp.asarray(x), num_draws=200
        )
        with pytest.raises(RuntimeError, match="marginal_predictive outside"), probmix(at="z"):
            pmn.marginal_predictive(model, jax.random.PRNGKey(0), jnp.asarray(x), num_draws=2)
    np.testing.assert_allclose(
        np.asarray(p.mean), x, atol=0.2
    )  # unpaired: each row predicts itself


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_subsampled_plates_and_guide_latents_are_refused(backend):
    x = np.arange(6, dtype=np.float32)
    if backend == "pyro":

        def model(x, y=None):
            w = pyro.sample("w", pd.Normal(0.0, 1.0))
            with pyro.plate("data", len(x), subsample_size=2) as idx:
                return pyro.sample("y", pd.Normal(w * x[idx], 1.0), obs=y)

        def guide(x, y=None):
            pyro.sample("w", pd.Normal(0.0, 0.1))

        run = lambda **kw: pyro_mixup.marginal_predictive(
            model, torch.as_tensor(x), num_draws=2, **kw
        )
    else:

        def model(x, y=None):
            w = numpyro.sample("w", nd.Normal(0.0, 1.0))
            with numpyro.plate("data", len(x), subsample_size=2) as idx:
                return numpyro.sample("y", nd.Normal(w * x[idx], 1.0), obs=y)

        def guide(x, y=None):
            numpyro.sample("w", nd.Normal(0.0, 0.1))

        run = lambda **kw: pmn.marginal_predictive(
            model, jax.random.PRNGKey(0), jnp.asarray(x), num_draws=2, **kw
        )
    with pytest.raises(ValueError, match="subsamples 2 of 6 rows"):
        run()
    with pytest.raises(ValueError, match="takes its value from the guide"):
        run(guide=guide, site="w")


def test_pyro_masked_sites_score_as_numpyro_does():
    y = np.array([0.0, 40.0], np.float32)

    def model(y=None):
        with pyro.plate("data", 2), pyro.poutine.mask(mask=torch.tensor([True, False])):
            return pyro.sample("y", pd.Normal(torch.zeros(2), 1.0), obs=y)

    def nmodel(y=None):
        with numpyro.plate("data", 2), numpyro.handlers.mask(mask=jnp.array([True, False])):
            return numpyro.sample("y", nd.Normal(jnp.zeros(2), 1.0), obs=y)

    a = pyro_mixup.marginal_predictive(model, torch.as_tensor(y), num_draws=2).log_density
    b = pmn.marginal_predictive(
        nmodel, jax.random.PRNGKey(0), jnp.asarray(y), num_draws=2
    ).log_density
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert float(a[1]) == 0.0  # the masked row is not scored


def test_a_likelihood_without_moments_still_has_a_density():
    def model(y=None):
        with pyro.plate("data", 2):
            base = pd.Normal(torch.zeros(2), 1.0)
            return pyro.sample(
                "y", pd.TransformedDistribution(base, [pd.transforms.ExpTransform()]), obs=y
            )

    p = pyro_mixup.marginal_predictive(model, torch.tensor([1.0, 2.0]), num_draws=2)
    np.testing.assert_allclose(
        p.log_density.numpy(), pd.LogNormal(0.0, 1.0).log_prob(torch.tensor([1.0, 2.0])), rtol=1e-6
    )
    with pytest.raises(ValueError, match="no mean and variance"):
        p.mean
