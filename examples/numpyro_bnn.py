"""A Bayesian neural network in NumPyro trained with SVI + ProbMix.

Weights have ``numpyro.sample`` priors; the guide is an ``AutoNormal``; the
model is wrapped, unchanged, with ``probmix``. Data: the paper's toy
regression (y = x^3 + N(0, 9), x ~ U(-4, 4)), tested in and out of the
training range. Runs in well under a minute on a CPU.

    python examples/numpyro_bnn.py [--steps 2000] [--alpha 0.5]
"""

import argparse

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from pyro_mixup.numpyro.handlers import probmix

HIDDEN = 32


def bnn(x, y=None):
    """Heteroscedastic Gaussian BNN 1-32-2 with N(0, 1) priors on all weights."""

    def layer(name, n_in, n_out):
        w = numpyro.sample(f"{name}_w", dist.Normal(0.0, 1.0).expand([n_in, n_out]).to_event(2))
        b = numpyro.sample(f"{name}_b", dist.Normal(0.0, 1.0).expand([n_out]).to_event(1))
        return w, b

    w1, b1 = layer("l1", x.shape[1], HIDDEN)
    w2, b2 = layer("l2", HIDDEN, 2)
    out = jnp.tanh(x @ w1 + b1) @ w2 + b2
    with numpyro.plate("data", x.shape[0]):
        return numpyro.sample("y", dist.Normal(out[:, 0], jax.nn.softplus(out[:, 1]) + 1e-2), obs=y)


def toy_data(key, n, lo, hi):
    kx, ky = random.split(key)
    x = random.uniform(kx, (n, 1), minval=lo, maxval=hi)
    return x, x[:, 0] ** 3 + 3.0 * random.normal(ky, (n,))


def fit(model, x, y, steps, key):
    guide = AutoNormal(model, init_scale=0.05)
    svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    result = svi.run(
        key, steps, x, y, progress_bar=False
    )  # jit-compiled; a fresh lam and pairing each step
    return guide, result.params, result.losses


def predictive_nll(guide, params, x, y, scale, key):
    """-log of the posterior predictive density (mean over test points), in y's units."""
    post = guide.sample_posterior(key, params, sample_shape=(200,))
    from numpyro.infer.util import log_likelihood

    ll = log_likelihood(bnn, post, x, y / scale)["y"]  # (samples, points)
    lpd = jax.scipy.special.logsumexp(ll, 0) - jnp.log(ll.shape[0])
    return float(-(lpd - jnp.log(scale)).mean())


def main(steps=2000, alpha=0.5):
    x, y = toy_data(random.key(0), 100, -4, 4)
    x_in, y_in = toy_data(random.key(1), 200, -4, 4)
    x_out, y_out = toy_data(random.key(2), 200, 4, 5)
    scale = y.std()
    for name, model in [("erm", bnn), (f"probmix(alpha={alpha})", probmix(bnn, alpha=alpha))]:
        guide, params, losses = fit(model, x, y / scale, steps, random.key(3))
        nll_in = predictive_nll(guide, params, x_in, y_in, scale, random.key(4))
        nll_out = predictive_nll(guide, params, x_out, y_out, scale, random.key(4))
        print(
            f"{name:20s} ELBO loss {float(losses[:100].mean()):9.1f} -> {float(losses[-100:].mean()):8.1f}; "
            f"test NLL in range {nll_in:7.3f}, out of range {nll_out:8.3f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()
    main(args.steps, args.alpha)
