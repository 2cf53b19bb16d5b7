"""Overhead of the NumPyro handlers on a jitted SVI update.

Times ``jax.jit(svi.update)`` of a heteroscedastic Gaussian MLP 128-32 (8
features, batch 128, synthetic data, parameters via ``numpyro.param``, MAP with
an empty guide) with and without :func:`pyro_mixup.numpyro.handlers.probmix`
(default settings), interleaved: blocks of ``--block`` updates alternate
between the variants, ``--repeats`` times; prints the median (and minimum)
per-update time of each and the ratios to ERM.

    python benchmarks/overhead_numpyro.py                 # ERM vs probmix (defaults)
    python benchmarks/overhead_numpyro.py --all           # + every option worth timing

On a shared machine the minimum over blocks is the least noisy statistic;
both are printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.infer import SVI, Trace_ELBO
from numpyro.optim import Adam

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
        z = embed("z", dist.Normal(jax.nn.relu(x @ w1 + b1), jax.nn.softplus(x @ v1) + 1e-3).to_event(1))
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
    y = (np.sin(x[:, 0]) + x[:, 1] ** 2 + (0.1 + 0.2 * np.abs(x[:, 2])) * rng.normal(size=N)).astype(np.float32)
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
    p.add_argument("--block", type=int, default=200, help="updates per timed block")
    p.add_argument("--repeats", type=int, default=15, help="blocks per variant")
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
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (update, state) in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.block):
                state, loss = update(state, x, y)
            jax.block_until_ready(loss)
            wall[name].append((time.perf_counter() - t0) / args.block * 1e6)
            cpu[name].append((time.process_time() - c0) / args.block * 1e6)
            runs[name] = (update, state)
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()[0].platform}; "
          f"MLP {D}-{H1}-{H2}-2, batch {N}; {args.repeats} x {args.block} updates per variant, interleaved")
    print("per-update microseconds: wall clock (median, min over blocks) and process CPU time (median);")
    print("ratios are to ERM")
    print(f"{'variant':22s} {'wall med':>9s} {'wall min':>9s} {'cpu med':>8s} "
          f"{'ratio wall med':>15s} {'ratio wall min':>15s} {'ratio cpu med':>14s}")
    w0, m0, c0 = np.median(wall["erm"]), np.min(wall["erm"]), np.median(cpu["erm"])
    for name in runs:
        w, m, c = np.median(wall[name]), np.min(wall[name]), np.median(cpu[name])
        print(f"{name:22s} {w:9.1f} {m:9.1f} {c:8.1f} {w / w0:15.3f} {m / m0:15.3f} {c / c0:14.3f}")


if __name__ == "__main__":
    main()
