"""Per-epoch cost of each method inside the NumPyro trainer's own scan, as a ratio to ERM.

Each method's trainer (:func:`pyro_mixup.experiments.train_numpyro.build`) is
compiled first, then every method is timed in turn, ``--repeats`` rounds
interleaved, on the same splits; a timed call trains ``--epochs`` epochs of all
splits (vmapped) with validation, as ``bench uci`` does. Reported: the median
milliseconds per epoch and the ratio to ERM.

    python benchmarks/epoch_cost.py --dataset naval-propulsion-plant --splits 0-19 --epochs 50
    python benchmarks/epoch_cost.py --prng unsafe_rbg ...   # the other generator, for comparison

Also reported: the floor of an M-ProbMix epoch set by its embedding noise alone --
a scan of one epoch's steps that only draws the Gaussian noise of the embedding
(members x batch x width normals per step, the generator of ``--prng``) -- as
milliseconds and as ``1 + noise / ERM epoch``, the ratio no M-ProbMix epoch can
go below while it draws fresh noise with that generator.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from pyro_mixup.experiments import data as D
from pyro_mixup.experiments import train_numpyro as T
from pyro_mixup.experiments.methods import METHODS, parse_methods
from pyro_mixup.experiments.nets_numpyro import GaussianMLP


def noise_ms_per_epoch(shape, steps: int, repeats: int) -> float:
    """Milliseconds of ``steps`` draws of ``shape`` standard normals inside a scan, the best of ``repeats``."""

    @jax.jit
    def draw(key):
        def body(total, k):
            return total + jax.random.normal(k, shape).sum(), None

        return jax.lax.scan(body, 0.0, jax.random.split(key, steps))[0]

    key = jax.random.key(0, impl=T.PRNG_IMPL)
    jax.block_until_ready(draw(key))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(draw(key))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default=D.default_data_dir())
    p.add_argument("--dataset", default="naval-propulsion-plant")
    p.add_argument("--splits", default="0-19")
    p.add_argument("--methods", default="erm,probmix,m-probmix,lock-m-probmix,mix")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prng", default=T.PRNG_IMPL, choices=("threefry2x32", "unsafe_rbg", "rbg"))
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    T.PRNG_IMPL = args.prng
    ds = D.load_dataset(f"{args.data_dir}/{args.dataset}", args.dataset)
    splits = [D.make_split(ds, k) for k in D.parse_splits(args.splits, ds.n_splits)]
    cfg = T.TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    data = [
        np.stack([getattr(sp, a) for sp in splits]) for a in ("x_fit", "y_fit", "x_val", "y_val")
    ]
    calls = {}
    for name in parse_methods(args.methods):
        m = METHODS[name]
        index, cand, cdf = T.partner_tables([m], splits)
        fn = T.build(
            GaussianMLP(data[0].shape[2], (128, 32), m.embedding), m, cfg, data[0].shape[1]
        )
        members = (
            jnp.stack([T.member_key(0, sp.index, 0.5, name) for sp in splits]),
            jnp.full(len(splits), 0.5),
            jnp.arange(len(splits)),
            jnp.asarray([index.get((name, i), -1) for i in range(len(splits))]),
        )
        calls[name] = lambda fn=fn, members=members, cand=cand, cdf=cdf: jax.block_until_ready(
            fn(*members, *data, cand, cdf)
        )
        t0 = time.perf_counter()
        calls[name]()
        print(f"{name}: compiled and ran once in {time.perf_counter() - t0:.1f} s", flush=True)
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - t0) / args.epochs * 1e3)
    base = np.median(times["erm"]) if "erm" in times else None
    print(
        f"\n{args.dataset}, {len(splits)} splits vmapped, batch {args.batch_size}, prng {args.prng}, "
        f"{args.epochs} epochs x {args.repeats} interleaved rounds"
    )
    print("| method | ms per epoch (median) | min | max | ratio to ERM |\n|---|---|---|---|---|")
    out = {}
    for name, t in times.items():
        med = float(np.median(t))
        ratio = "--" if base is None else f"{med / base:.2f}"
        out[name] = dict(
            ms_median=med,
            ms_min=min(t),
            ms_max=max(t),
            ratio_to_erm=None if base is None else med / base,
        )
        print(f"| {name} | {med:.1f} | {min(t):.1f} | {max(t):.1f} | {ratio} |")
    size, n_batches = cfg.batch_plan(data[0].shape[1])
    noise = noise_ms_per_epoch((len(splits), size, 128), n_batches, args.repeats)
    floor = None if base is None else 1 + noise / base
    print(
        f"\nembedding noise alone ({len(splits)} x {size} x 128 normals per step, {n_batches} steps): "
        f"{noise:.1f} ms per epoch"
        + ("" if floor is None else f"; M-ProbMix floor {floor:.2f} x ERM")
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(
                    settings=vars(args),
                    methods=out,
                    noise_ms_per_epoch=noise,
                    m_probmix_floor=floor,
                ),
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
