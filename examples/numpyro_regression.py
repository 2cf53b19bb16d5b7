"""An unchanged, plain NumPyro regression model trained five ways under
``jax.jit``: ERM, ProbMix, M-ProbMix (via ``embed``), Mix and M-Mix (via
``mixable``). NumPyro twin of ``examples/pyro_regression.py``.

The model is an ordinary heteroscedastic Gaussian MLP with ``numpyro.param``
weights. The only additions are two markers, ``embed`` and ``mixable``, which
do nothing unless a handler names them, so the ERM run below trains exactly
the model as written.

    python examples/numpyro_regression.py [--steps 1000]
"""

import argparse

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.infer import SVI, Trace_ELBO

from pyro_mixup.numpyro import embed, mixable
from pyro_mixup.numpyro.handlers import mixup, probmix

HIDDEN = 64


def _weight(name, shape):
    return numpyro.param(name, lambda key: random.normal(key, shape) / jnp.sqrt(shape[0]))


def model(x, y=None):
    w_in, w_sc = _weight("w_in", (1, HIDDEN)), _weight("w_sc", (1, HIDDEN))
    b_in = numpyro.param("b_in", jnp.zeros(HIDDEN))
    w_h, b_h = _weight("w_h", (HIDDEN, 32)), numpyro.param("b_h", jnp.zeros(32))
    w_out, b_out = _weight("w_out", (32, 2)), numpyro.param("b_out", jnp.zeros(2))
    with numpyro.plate("data", x.shape[0]):
        x = mixable("x", x)  # vanilla mixup mixes here
        # a stochastic embedding layer: M-ProbMix pools these densities in pairs
        h = embed("h", dist.Normal(x @ w_in + b_in, jax.nn.softplus(x @ w_sc) + 1e-3).to_event(1))
        h = mixable("h", h)  # manifold mixup mixes here
        out = jax.nn.relu(jax.nn.relu(h) @ w_h + b_h) @ w_out + b_out
        return numpyro.sample("y", dist.Normal(out[:, 0], jax.nn.softplus(out[:, 1]) + 1e-3), obs=y)


def toy_data(key, n, lo, hi):
    kx, ky = random.split(key)
    x = random.uniform(kx, (n, 1), minval=lo, maxval=hi)
    return x, x[:, 0] ** 3 + 3.0 * random.normal(ky, (n,))  # the paper's toy: y = x^3 + N(0, 9)


def test_nll(params, x, y, scale):
    """Per-point NLL of the plain (unwrapped) model: mixup is a training-time regulariser."""
    from numpyro.handlers import seed, substitute, trace

    site = trace(seed(substitute(model, params), 0)).get_trace(x, y / scale)["y"]
    return float(-(site["fn"].log_prob(y / scale) - jnp.log(scale)).mean())


def main(steps=1000):
    x, y = toy_data(random.key(0), 100, -4, 4)
    x_test, y_test = toy_data(random.key(1), 200, -4, 4)
    scale = y.std()
    methods = {
        "erm": lambda m: m,
        "probmix": lambda m: probmix(m, alpha=0.5),
        "m-probmix": lambda m: probmix(m, alpha=0.5, at="h"),
        "mix": lambda m: mixup(m, alpha=0.5, at="x"),
        "m-mix": lambda m: mixup(m, alpha=0.5, at="h"),
    }
    results = {}
    for name, wrap in methods.items():
        svi = SVI(wrap(model), lambda x, y=None: None, numpyro.optim.Adam(0.01), Trace_ELBO())
        state = svi.init(random.key(2), x, y / scale)
        update = jax.jit(svi.update)  # a fresh lam and pairing every update
        for _ in range(steps):
            state, _loss = update(state, x, y / scale)
        results[name] = test_nll(svi.get_params(state), x_test, y_test, scale)
        print(f"{name:10s} test NLL per point: {results[name]:8.3f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    main(parser.parse_args().steps)
