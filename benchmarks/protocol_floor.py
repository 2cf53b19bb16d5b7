"""The floor of the UCI protocol on this machine: its FLOPs over the rate this CPU
reaches on the protocol's own MLP.

FLOPs are counted from the shapes (a dense layer ``d_in -> d_out`` costs
``2 d_in d_out`` per row forward and twice that backward; every epoch trains on
``batches x batch size`` rows and evaluates the validation rows forward), for every
dataset, split, method and alpha of the protocol -- the embedding's noise and the
pooling are not counted, so the floor is that of ERM. The rate is the best this CPU
reaches on the same MLP, forward and backward, over a few shapes (members vmapped
x rows: the trainer's own 20 x 64 and 20 x 256, and larger ones where XLA's
matmuls run at full speed), each the best of ``--repeats`` calls: the most
favourable rate, hence the lowest floor.

    python benchmarks/protocol_floor.py --data-dir ../shared/data/uci            # one alpha
    python benchmarks/protocol_floor.py --alphas 6 --large-batch 256            # the 6-value grid
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import jax.numpy as jnp

from pyro_mixup.experiments import data as D
from pyro_mixup.experiments.nets_numpyro import GaussianMLP


def layer_macs(d_in: int, hidden=(128, 32)) -> int:
    sizes = [d_in, *hidden, 2]
    return sum(a * b for a, b in itertools.pairwise(sizes))


def protocol_flops(data_dir, alphas: int, batch_of, epochs=1000, splits=20, methods=10):
    """FLOPs of the protocol; ``batch_of(name, n_fit)`` gives the minibatch size."""
    total = {}
    for name in D.find_datasets(data_dir):
        ds = D.load_dataset(f"{data_dir}/{name}", name)
        s = D.make_split(ds, 0)
        n_fit, n_val, d = len(s.y_fit), len(s.y_val), s.x_fit.shape[1]
        b = batch_of(name, n_fit)
        rows = (n_fit // b) * b if b else n_fit
        per_epoch = 6 * rows * layer_macs(d) + 2 * n_val * layer_macs(d)
        trainings = splits * (1 + (methods - 1) * alphas)
        total[name] = per_epoch * epochs * trainings
    return total


RATE_SHAPES = ((20, 64), (20, 256), (20, 4096), (4, 4096), (1, 8192), (1, 16384))


def measured_rate(members=20, batch=4096, d=16, repeats=5) -> float:
    """GFLOP/s of forward + backward of the MLP, ``members`` vmapped."""
    net = GaussianMLP(d, (128, 32))
    params = jax.vmap(net.init)(jax.random.split(jax.random.PRNGKey(0), members))
    x = jnp.ones((members, batch, d))
    y = jnp.zeros((members, batch))

    def loss(p, x, y):
        mu, sigma = net.predict(p, x)
        return jnp.mean(jnp.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2)

    step = jax.jit(jax.vmap(jax.grad(loss)))
    jax.block_until_ready(step(params, x, y))
    best = min(_time(step, params, x, y) for _ in range(repeats))
    return 6 * members * batch * layer_macs(d) / best / 1e9


def _time(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default=D.default_data_dir())
    p.add_argument(
        "--alphas", type=int, default=1, help="alpha values per mixing method (default 1)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--large-batch", type=int, default=256, help="minibatch of kin8nm and naval (default 256)"
    )
    args = p.parse_args(argv)
    large = {"kin8nm", "naval-propulsion-plant"}
    flops = protocol_flops(
        args.data_dir,
        args.alphas,
        lambda name, n: args.large_batch if name in large else args.batch_size,
    )
    rates = {shape: measured_rate(*shape) for shape in RATE_SHAPES}
    (best_members, best_batch), rate = max(rates.items(), key=lambda kv: kv[1])
    total = sum(flops.values())
    print("| members x rows | GFLOP/s |\n|---|---|")
    for (m, b), r in rates.items():
        print(f"| {m} x {b} | {r:.1f} |")
    print()
    print("| dataset | TFLOP |\n|---|---|")
    for name, f in flops.items():
        print(f"| {name} | {f / 1e12:.1f} |")
    print(
        f"\ntotal {total / 1e12:.1f} TFLOP; best rate of this CPU on the MLP (fwd + bwd, "
        f"{best_members} members x {best_batch} rows): {rate:.1f} GFLOP/s; floor {total / rate / 1e9 / 60:.1f} min"
    )
    return dict(tflop=total / 1e12, gflops=rate, floor_minutes=total / rate / 1e9 / 60)


if __name__ == "__main__":
    main()
