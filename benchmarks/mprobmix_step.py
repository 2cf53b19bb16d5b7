"""Where an M-ProbMix training step of the UCI benchmark spends its time.

Times one gradient step of the benchmark's loss (``pyro_mixup.bench.train_numpyro``:
MLP 128-32, 16 features, ``--splits`` splits vmapped, batch ``--batch``), jitted,
for ERM, ProbMix and M-ProbMix as the benchmark trains them (NumPyro handlers),
and for M-ProbMix written by hand with its pieces taken out one at a time:

- ``hand``: the pooled Gaussian embedding and its reparameterised draw, with the
  partner rows gathered by a random permutation (what the handler does);
- ``hand, no noise``: the same with the Gaussian draw replaced by a constant;
- ``hand, roll``: partner = the batch rolled by half (a slice, no gather);
- ``hand, roll, no noise``: both.

    python benchmarks/mprobmix_step.py               # 20 splits x 256 rows, like naval/kin8nm

Variants are interleaved (``--repeats`` rounds of ``--steps`` calls each); the
median and minimum milliseconds per step are printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from pyro_mixup.bench import train_numpyro as T
from pyro_mixup.bench.methods import METHODS


def hand_loss(roll: bool, noise: bool, batch: int):
    perm = jnp.asarray(np.random.default_rng(0).permutation(batch))

    def partner(a):
        return jnp.roll(a, batch // 2, axis=0) if roll else a[perm]

    def loss(p, k, x, y):
        lam = 0.3
        h = jax.nn.relu(x @ p["w0"] + p["b0"])
        s = jax.nn.softplus(p["emb_a"] * h + p["emb_c"]) + T.EMBED_MIN_SCALE
        prec = 1.0 / s**2
        prec_j, h_j = partner(prec), partner(h)
        pooled_prec = lam * prec + (1 - lam) * prec_j
        mean = (lam * prec * h + (1 - lam) * prec_j * h_j) / pooled_prec
        eps = jax.random.normal(k, mean.shape) if noise else jnp.full(mean.shape, 0.1)
        z = mean + eps / jnp.sqrt(pooled_prec)
        mu, sigma = T._head(p, z, 3)
        return -nd.Normal(mu, sigma).log_prob(y).mean()

    return loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    S, B, D = args.splits, args.batch, args.features
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((S, B, D)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((S, B)), jnp.float32)
    keys = jnp.stack([jax.random.key(i, impl=T.PRNG_IMPL) for i in range(S)])

    variants = {}
    for name in ("erm", "probmix", "m-probmix"):
        m = METHODS[name]
        loss = T.make_batch_loss(m, 0.5, 0.0, 3, "handlers")
        params = jax.vmap(lambda k, m=m: T.init_params(k, D, (128, 32), m.embedding))(keys)
        variants[f"{name} (handlers)"] = (jax.jit(jax.vmap(jax.value_and_grad(
            lambda p, k, x, y, loss=loss: loss(p, k, x, y, None)))), params)
    params = jax.vmap(lambda k: T.init_params(k, D, (128, 32), True))(keys)
    for label, roll, noise in [("hand", False, True), ("hand, no noise", False, False),
                               ("hand, roll", True, True), ("hand, roll, no noise", True, False)]:
        variants[f"m-probmix {label}"] = (jax.jit(jax.vmap(jax.value_and_grad(hand_loss(roll, noise, B)))), params)

    for fn, p in variants.values():  # compile
        jax.block_until_ready(fn(p, keys, x, y))
    times = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, (fn, p) in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                out = fn(p, keys, x, y)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    base = np.median(times["erm (handlers)"])
    print(f"{S} splits x {B} rows x {D} features, MLP 128-32, gradient step (ms), {args.repeats} x {args.steps} steps")
    print(f"{'variant':34s} {'median':>8s} {'min':>8s} {'/ ERM':>6s}")
    for name, ts in times.items():
        print(f"{name:34s} {np.median(ts):8.2f} {np.min(ts):8.2f} {np.median(ts) / base:6.2f}")


if __name__ == "__main__":
    main()
