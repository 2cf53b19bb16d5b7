"""ProbMix on a batch sharded over JAX devices: step time and what crosses devices.

Times ``jax.jit(svi.update)`` of a heteroscedastic Gaussian MLP (16 features,
``--hidden`` layers, MAP with an empty guide, Adam) with the batch sharded along
its rows over ``--devices`` devices (``Mesh`` / ``NamedSharding(mesh, P("data"))``,
parameters and optimiser state replicated), for each batch size and pairing:

- ``erm``: the unwrapped model (the data-parallel baseline);
- ``global``: ``probmix(model)``, the default pairing (a permutation of the whole batch);
- ``local``: ``probmix(model, pairing=ShardLocalPairing(devices))`` (within each shard);
- ``shift``: ``probmix(model, pairing="shift")`` (optional, ``--pairings``).

Rounds of one update per variant, in a fresh random order each round, after
``--warmup`` updates; reports the median wall-clock time per update (and
quartiles), and counts the collectives in each compiled update
(``jax.jit(update).lower(...).compile().as_text()``), with the bytes their
results hold per device.

On a CPU, devices are simulated with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
read once when JAX starts: this script sets it before importing JAX when run as
a script, and re-runs itself in a subprocess when called from a process whose
JAX already started with fewer devices. Simulated devices share the machine's
cores: the timings measure the cost of the communication structure (what is
gathered, scattered and summed), not a speed-up.

    python benchmarks/sharding.py                                  # 8 devices, batches 1024, 8192, 65536
    python benchmarks/sharding.py --batch-sizes 1024 --steps 10 --out results/sharding.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

from pyro_mixup.experiments.results import write_json

COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")
D = 16
_ITEMSIZE = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s64": 8, "u64": 8}
_FLAG = "--xla_force_host_platform_device_count"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=8, help="devices to shard the batch over")
    p.add_argument(
        "--batch-sizes", default="1024,8192,65536", help="comma-separated global batch sizes"
    )
    p.add_argument("--hidden", default="64,64", help="comma-separated hidden layer widths")
    p.add_argument("--pairings", default="erm,global,local", help="of erm, global, local, shift")
    p.add_argument("--steps", type=int, default=50, help="timed updates per variant")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates per variant first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def collectives(hlo: str) -> dict[str, dict[str, int]]:
    """Per collective op: how many in the module, and the bytes of their results
    (per device; an async ``-start``/``-done`` pair counts once)."""
    out = {}
    for op in COLLECTIVES:
        calls = re.findall(rf"= (\([^()]*\)|\S+) {op}(?:-start)?\(", hlo)
        size = 0
        for result in calls:
            for dtype, dims in re.findall(r"([a-z]+\d+)\[([\d,]*)\]", result):
                elements = 1
                for d in filter(None, dims.split(",")):
                    elements *= int(d)
                size += elements * _ITEMSIZE.get(dtype, 4)
        out[op] = {"count": len(calls), "bytes": size}
    return out


def _has_devices(devices: int) -> bool:
    """Whether JAX in this process has (or, not started yet, will have) ``devices`` devices."""
    if "jax" in sys.modules:
        import jax

        return jax.device_count() >= devices
    flag = re.search(rf"{_FLAG}=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return devices == 1 or (flag is not None and int(flag.group(1)) >= devices)


def _rerun_with_devices(argv, devices):
    """This script in a fresh process whose JAX starts with ``devices`` CPU devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        re.sub(rf"{_FLAG}=\d+", "", env.get("XLA_FLAGS", "")) + f" {_FLAG}={devices}"
    ).strip()
    argv = list(argv or [])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sharding.json")
        if "--out" in argv:
            i = argv.index("--out")
            final = argv[i + 1]
            argv[i + 1] = out
        else:
            final, argv = None, [*argv, "--out", out]
        subprocess.run([sys.executable, os.path.abspath(__file__), *argv], env=env, check=True)
        with open(out) as f:
            result = json.load(f)
    if final is not None:
        with open(final, "w") as f:
            json.dump(result, f, indent=1)
    return result


def run(args):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import Adam

    from pyro_mixup.numpyro.handlers import probmix
    from pyro_mixup.pairing import ShardLocalPairing

    if jax.device_count() < args.devices:
        raise SystemExit(
            f"{args.devices} devices asked for, JAX has {jax.device_count()}: on a CPU set "
            f"XLA_FLAGS={_FLAG}={args.devices} before JAX starts (this script does, unless "
            "XLA_FLAGS already sets it)"
        )
    widths = [D, *(int(h) for h in args.hidden.split(",")), 2]

    def model(x, y=None):
        h = x
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            w = numpyro.param(
                f"w{i}", lambda key, a=a, b=b: jax.random.normal(key, (a, b)) / a**0.5
            )
            h = h @ w + numpyro.param(f"b{i}", jnp.zeros(b))
            if i < len(widths) - 2:
                h = jax.nn.relu(h)
        with numpyro.plate("data", x.shape[0]):
            scale = jax.nn.softplus(h[:, 1]) + 1e-3
            return numpyro.sample("y", dist.Normal(h[:, 0], scale), obs=y)

    def guide(x, y=None):
        pass

    wrapped = {
        "erm": lambda: model,
        "global": lambda: probmix(model, alpha=1.0),
        "local": lambda: probmix(model, alpha=1.0, pairing=ShardLocalPairing(args.devices)),
        "shift": lambda: probmix(model, alpha=1.0, pairing="shift"),
    }
    pairings = args.pairings.split(",")
    unknown = set(pairings) - set(wrapped)
    if unknown:
        raise SystemExit(f"unknown pairings {sorted(unknown)}; choose from {sorted(wrapped)}")
    mesh = Mesh(np.array(jax.devices()[: args.devices]), ("data",))
    rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    rng = np.random.default_rng(args.seed)
    results = []
    for n in (int(b) for b in args.batch_sizes.split(",")):
        x = rng.normal(size=(n, D)).astype(np.float32)
        y = (np.sin(x[:, 0]) + x[:, 1] ** 2 + 0.3 * rng.normal(size=n)).astype(np.float32)
        xs, ys = jax.device_put(x, rows), jax.device_put(y, rows)
        runs = {}
        for name in pairings:
            svi = SVI(wrapped[name](), guide, Adam(1e-3), Trace_ELBO())
            state = jax.device_put(svi.init(jax.random.key(args.seed), xs, ys), replicated)
            t0 = time.perf_counter()
            compiled = jax.jit(svi.update).lower(state, xs, ys).compile()
            compile_s = time.perf_counter() - t0
            for _ in range(args.warmup):
                # one update at a time: simulated CPU devices can deadlock in a collective's
                # rendezvous when several sharded updates are in flight (seen on 2 cores)
                state, loss = compiled(state, xs, ys)
                jax.block_until_ready(loss)
            runs[name] = {
                "update": compiled,
                "state": state,
                "times": [],
                "compile_s": compile_s,
                "collectives": collectives(compiled.as_text()),
            }
        order = list(runs)
        shuffle = random.Random(args.seed)
        for _ in range(args.steps):
            shuffle.shuffle(order)
            for name in order:
                r = runs[name]
                t0 = time.perf_counter()
                r["state"], loss = r["update"](r["state"], xs, ys)
                jax.block_until_ready(loss)
                r["times"].append(time.perf_counter() - t0)
        for name, r in runs.items():
            q = statistics.quantiles(r["times"], n=4) if len(r["times"]) > 1 else r["times"] * 3
            results.append(
                {
                    "batch": n,
                    "pairing": name,
                    "ms_per_step": 1e3 * statistics.median(r["times"]),
                    "ms_quartiles": [1e3 * q[0], 1e3 * q[2]],
                    "compile_s": r["compile_s"],
                    "collectives": r["collectives"],
                }
            )
    return {
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "platform": jax.devices()[0].platform,
        "devices": args.devices,
        "cpu_count": os.cpu_count(),
        "hidden": widths[1:-1],
        "features": D,
        "steps": args.steps,
        "warmup": args.warmup,
        "results": results,
    }


def print_table(out) -> None:
    print(
        f"jax {out['jax']}, numpyro {out['numpyro']}, {out['platform']}: {out['devices']} devices "
        f"on {out['cpu_count']} cores; MLP {out['features']}-{'-'.join(map(str, out['hidden']))}-2, "
        f"jitted svi.update, median of {out['steps']} steps after {out['warmup']} warm-up\n"
    )
    head = ["batch", "pairing", "ms/step", "quartiles"]
    head += [*COLLECTIVES, "collective bytes/device"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in out["results"]:
        c = r["collectives"]
        cells = [
            str(r["batch"]),
            r["pairing"],
            f"{r['ms_per_step']:.2f}",
            f"{r['ms_quartiles'][0]:.2f}-{r['ms_quartiles'][1]:.2f}",
            *(str(c[op]["count"]) for op in COLLECTIVES),
            str(sum(v["bytes"] for v in c.values())),
        ]
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    args = parse_args(argv)
    if not _has_devices(args.devices):
        # the subprocess prints the table
        return _rerun_with_devices(argv if argv is not None else sys.argv[1:], args.devices)
    out = run(args)
    if args.out:
        write_json(args.out, out)
    print_table(out)
    return out


if __name__ == "__main__":
    _args = parse_args()
    if _FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" {_FLAG}={_args.devices}"
        ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
