"""``probmix(at=<embed layer>, pooling="linear")``: z drawn from the lam-mixture of
the pair's embedding densities (the paper's ablation), in both backends.

Oracle: with two well-separated embedding densities, the share of draws that
land near the partner's is ``1 - lam``; the log-linear pool lands in between.
"""

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
from pyro_mixup.handlers import mixup, probmix
from pyro_mixup.numpyro.handlers import mixup as nmixup
from pyro_mixup.numpyro.handlers import probmix as nprobmix

LOC = [0.0, 10.0]


def pyro_draws(n, **options):
    def model():
        with pyro.plate("data", 2):
            return pyro_mixup.embed("z", pd.Normal(torch.tensor(LOC), 1.0))

    pyro.set_rng_seed(0)
    out = []
    for _ in range(n):
        with probmix(at="z", perm=torch.tensor([1, 0]), **options):
            out.append(model())
    return torch.stack(out).numpy()


def numpyro_draws(n, **options):
    def model():
        with numpyro.plate("data", 2):
            return pmn.embed("z", nd.Normal(jnp.asarray(LOC), 1.0))

    def one(key):
        with (
            numpyro.handlers.seed(rng_seed=key),
            nprobmix(at="z", perm=jnp.array([1, 0]), **options),
        ):
            return model()

    return np.asarray(jax.vmap(one)(jax.random.split(jax.random.PRNGKey(0), n)))


@pytest.mark.parametrize("draw", [pyro_draws, numpyro_draws])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_linear_pool_is_the_lam_mixture(draw, lam):
    z = draw(4000, lam=lam, pooling="linear")
    # example 0 (own density N(0, 1)) lands near its partner's (N(10, 1)) with probability 1 - lam
    assert np.mean(z[:, 0] > 5) == pytest.approx(1 - lam, abs=0.03)
    assert np.mean(z[:, 1] < 5) == pytest.approx(1 - lam, abs=0.03)
    near = np.where(z[:, 0] > 5, z[:, 0] - 10, z[:, 0])
    assert near.std() == pytest.approx(1.0, abs=0.06)  # each component keeps its own spread
    # the log-linear pool (the default) is one Gaussian in between, never bimodal
    if 0 < lam < 1:
        pooled = draw(2000, lam=lam)
        assert pooled[:, 0].mean() == pytest.approx(10 * (1 - lam), abs=0.1)


def test_linear_pool_gradient_reaches_the_partner():
    loc = torch.tensor(LOC, requires_grad=True)

    def model():
        with pyro.plate("data", 2):
            return pyro_mixup.embed("z", pd.Normal(loc, 1.0))

    with probmix(at="z", lam=0.0, perm=torch.tensor([1, 0]), pooling="linear"):
        z = model()
    z[1].backward()  # example 1 drew from example 0's density
    assert loc.grad.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_linear_pooling_refusals(backend):
    pm, mu = (probmix, mixup) if backend == "pyro" else (nprobmix, nmixup)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pm(at="z", pooling="geometric")
    with pytest.raises(ValueError, match="option of probmix\\(at="):
        pm(pooling="linear")
    with pytest.raises(ValueError, match="option of probmix\\(at="):
        mu(at="x", pooling="linear")


def test_linear_pooling_refuses_a_latent_sample_site():
    def model():
        with pyro.plate("data", 3):
            pyro.sample("w", pd.Normal(torch.zeros(3), 1.0))

    with (
        pytest.raises(ValueError, match="pooling='linear' draws an embed layer"),
        probmix(at="w", pooling="linear"),
    ):
        model()
