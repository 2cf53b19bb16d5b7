"""Overhead of the NumPyro handlers on a jitted SVI update.

Times ``jax.jit(svi.update)`` of a heteroscedastic Gaussian MLP 128-32 (8
features, batch 128, synthetic data, parameters via ``numpyro.param``, MAP with
an empty guide) with and without :func:`pyro_mixup.numpyro.handlers.probmix`
(default settings), interleaved (``benchmarks/timing.py``: ``--repeats``
rounds of ``--block`` updates per variant in random order); prints the median
process CPU time per update and the median over rounds of each variant's time
relative to ERM's in the same round, with its quartiles.

    python benchmarks/overhead_numpyro.py                 # ERM vs probmix (defaults)
    python benchmarks/overhead_numpyro.py --all           # + every option worth timing
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.infer import SVI, Trace_ELBO
from numpyro.optim import Adam
from timing import interleaved, print_table, summary

from pyro_mixup.numpyro import embed, mixable
from pyro_mixup.numpyro.handlers import mixup, probmix

N, D, H1, H2 = 128, 8, 128, 32


def _init(shape):
    return lambda key: random.normal(key, shape) / np.sqrt(shape[0])


def net(x):
    w1 = numpyro.param("w1", _init((D, H1)))
    b1 = numpyro.param("b1", jnp.zeros(H1))
    w2 = numpyro.param("w2", _init((H1, H2)))
    b2 = numpyro.param("b2", jnp.zeros(H2))
    w3 = numpyro.param("w3", _init((H2, 2)))
    b3 = numpyro.param("b3", jnp.zeros(2))
    h = jax.nn.relu(x @ w1 + b1)
    h = jax.nn.relu(h @ w2 + b2)
    out = h @ w3 + b3
    return out[:, 0], jax.nn.softplus(out[:, 1]) + 1e-3


def model(x, y=None):
    loc, scale = net(x)
    with numpyro.plate("data", x.shape[0]):
        return numpyro.sample("y", dist.Normal(loc, scale), obs=y)


def model_embed(x, y=None):
    """M-ProbMix: a Gaussian embedding after the first layer."""
    w1 = numpyro.param("w1", _init((D, H1)))
    b1 = numpyro.param("b1", jnp.zeros(H1))
    v1 = numpyro.param("v1", _init((D, H1)))
    w2 = numpyro.param("w2", _init((H1, H2)))
    b2 = numpyro.param("b2", jnp.zeros(H2))
    w3 = numpyro.param("w3", _init((H2, 2)))
    b3 = numpyro.param("b3", jnp.zeros(2))
    with numpyro.plate("data", x.shape[0]):
        z = embed(
            "z", dist.Normal(jax.nn.relu(x @ w1 + b1), jax.nn.softplus(x @ v1) + 1e-3).to_event(1)
        )
        h = jax.nn.relu(z @ w2 + b2)
        out = h @ w3 + b3
        return numpyro.sample("y", dist.Normal(out[:, 0], jax.nn.softplus(out[:, 1]) + 1e-3), obs=y)


def model_mixable(x, y=None):
    return model(mixable("x", x, dim=-1), y)


def guide(x, y=None):
    pass


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = (
        np.sin(x[:, 0]) + x[:, 1] ** 2 + (0.1 + 0.2 * np.abs(x[:, 2])) * rng.normal(size=N)
    ).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


VARIANTS = {
    "erm": lambda: model,
    "probmix": lambda: probmix(model, alpha=1.0),
}
EXTRA = {
    "probmix_alpha0.4": lambda: probmix(model, alpha=0.4),
    "probmix_shift": lambda: probmix(model, pairing="shift"),
    "probmix_per_example": lambda: probmix(model, per_example=True),
    "probmix_expected": lambda: probmix(model, target="expected"),
    "probmix_beta0.01": lambda: probmix(model, beta=0.01),
    "m_probmix_embed": lambda: probmix(model_embed, at="z"),
    "erm_embed": lambda: model_embed,
    "mixup_inputs": lambda: mixup(model_mixable, at="x"),
    # diagnostics: the cost of pooling alone (no draws), of each draw alone
    "probmix_fixed": lambda: probmix(model, lam=0.3, perm=np.roll(np.arange(N), 1)),
    "probmix_alpha0_shift": lambda: probmix(model, alpha=0.0, pairing="shift"),
    "probmix_alpha0": lambda: probmix(model, alpha=0.0),
    "probmix_fixedperm": lambda: probmix(model, perm=np.roll(np.arange(N), 1)),
}


def make_update(m, x, y):
    svi = SVI(m, guide, Adam(5e-3), Trace_ELBO())
    state = svi.init(random.key(0), x, y)
    update = jax.jit(svi.update)
    state, loss = update(state, x, y)
    jax.block_until_ready(loss)
    return update, state


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--block", type=int, default=10, help="updates per variant and round")
    p.add_argument(
        "--repeats", type=int, default=400, help="rounds (each runs every variant, in random order)"
    )
    p.add_argument("--all", action="store_true", help="also time the other options")
    p.add_argument("--only", nargs="*", default=None, help="time only these variants (plus erm)")
    args = p.parse_args(argv)

    x, y = data()
    variants = dict(VARIANTS)
    if args.all:
        variants.update(EXTRA)
    if args.only:
        variants = {k: v for k, v in {**VARIANTS, **EXTRA}.items() if k == "erm" or k in args.only}
    runs = {name: make_update(build(), x, y) for name, build in variants.items()}
    last = {}

    def stepper(name):
        def step():
            update, state = runs[name]
            state, last["loss"] = update(state, x, y)
            runs[name] = (update, state)

        return step

    times = interleaved(
        {name: stepper(name) for name in runs},
        args.repeats,
        args.block,
        clock=time.perf_counter_ns,
        finish=lambda: jax.block_until_ready(last["loss"]),
    )
    result = summary(times)
    print_table(
        result,
        f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()[0].platform}; jitted SVI "
        f"update, MLP {D}-{H1}-{H2}-2, batch {N}; {args.repeats} rounds of {args.block} updates per variant",
    )
    return result


if __name__ == "__main__":
    main()
