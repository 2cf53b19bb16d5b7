"""ProbMix under PyTorch DistributedDataParallel: step time on 1 vs 2 CPU processes.

One training step of a heteroscedastic Gaussian MLP (16 features, ``--hidden``
layers, registered with ``pyro.module``), ``Trace_ELBO().differentiable_loss``
of the model (``erm``) or of ``probmix(model)``, backward (DDP all-reduces the
gradients, gloo backend), and an Adam step. The global batch (``--batch``) is
split over the ranks; each rank pairs within its own rows (no communication
for the pairing). Processes are started with ``torch.multiprocessing`` (spawn)
on a free local port; each runs ``--threads`` torch threads. Every timed step
starts after a barrier, in rounds of one step per variant (in a fresh random
order each round, the same on every rank); reports rank 0's median wall-clock
time per step (and quartiles) after ``--warmup`` rounds, and the rows per
second of the whole group.

    python benchmarks/ddp.py                                  # 1 and 2 processes, batch 4096
    python benchmarks/ddp.py --batch 16384 --world 1,2 --out results/ddp.json
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time

from pyro_mixup.experiments.results import write_json

D = 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4096, help="global batch (split over the ranks)")
    p.add_argument("--hidden", default="64,64", help="comma-separated hidden layer widths")
    p.add_argument("--world", default="1,2", help="comma-separated numbers of processes")
    p.add_argument("--pairings", default="erm,probmix", help="of erm, probmix")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--steps", type=int, default=50, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument(
        "--timeout", type=float, default=600, help="seconds before the workers are killed"
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def _model(net, x, y=None, name="net"):
    import pyro
    import pyro.distributions as dist
    import torch

    loc, raw_scale = pyro.module(name, net)(x).unbind(-1)
    with pyro.plate("data", x.shape[0]):
        scale = torch.nn.functional.softplus(raw_scale) + 1e-3
        return pyro.sample("y", dist.Normal(loc, scale), obs=y)


def _guide(x, y=None):
    pass


def _worker(rank, world, port, args, out_dir):
    import pyro
    import torch
    import torch.distributed as dist
    from pyro.infer import Trace_ELBO
    from torch.nn.parallel import DistributedDataParallel

    from pyro_mixup.handlers import probmix

    torch.set_num_threads(args.threads)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    rows = args.batch // world
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(rows, D, generator=g)
    y = torch.sin(x[:, 0]) + x[:, 1] ** 2 + 0.3 * torch.randn(rows, generator=g)
    widths = [D, *(int(h) for h in args.hidden.split(",")), 2]
    variants = {}
    for pairing in args.pairings.split(","):
        torch.manual_seed(0)
        layers = []
        for a, b in itertools.pairwise(widths):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        net = DistributedDataParallel(torch.nn.Sequential(*layers[:-1]))
        model = functools.partial(_model, net, name=pairing)
        if pairing == "probmix":
            model = probmix(model, alpha=1.0)
        elif pairing != "erm":
            raise SystemExit(f"unknown pairing {pairing!r}: erm or probmix")
        variants[pairing] = (model, torch.optim.Adam(net.parameters(), lr=1e-3))
    pyro.clear_param_store()
    pyro.set_rng_seed(rank)  # each rank its own draws
    elbo = Trace_ELBO()
    result = {pairing: [] for pairing in variants}
    order = list(variants)
    shuffle = random.Random(0)  # the same order on every rank (their collectives must match)
    for step in range(args.warmup + args.steps):
        shuffle.shuffle(order)  # rounds of one step per variant, interleaved
        for pairing in order:
            model, optim = variants[pairing]
            dist.barrier()
            t0 = time.perf_counter()
            optim.zero_grad()
            elbo.differentiable_loss(model, _guide, x, y).backward()
            optim.step()
            if step >= args.warmup:
                result[pairing].append(time.perf_counter() - t0)
    if rank == 0:
        with open(os.path.join(out_dir, f"world{world}.json"), "w") as f:
            json.dump(result, f)
    dist.barrier()
    # Leave without tearing gloo down: its teardown at exit aborted a process now and then
    # on a 2-core machine (SIGABRT, "terminate called without an active exception").
    os._exit(0)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args):
    import torch
    import torch.multiprocessing as mp

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in (int(w) for w in args.world.split(",")):
            if args.batch % world:
                raise SystemExit(f"--batch {args.batch} does not split over {world} processes")
            ctx = mp.start_processes(
                _worker,
                args=(world, _free_port(), args, tmp),
                nprocs=world,
                join=False,
                start_method="spawn",
            )
            deadline = time.monotonic() + args.timeout
            try:
                while not ctx.join(timeout=5):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the workers did not finish within {args.timeout} s")
            finally:
                for p in ctx.processes:
                    if p.is_alive():
                        p.kill()
            with open(os.path.join(tmp, f"world{world}.json")) as f:
                times = json.load(f)
            for pairing, ts in times.items():
                q = statistics.quantiles(ts, n=4) if len(ts) > 1 else ts * 3
                median = statistics.median(ts)
                results.append(
                    {
                        "world": world,
                        "pairing": pairing,
                        "rows_per_rank": args.batch // world,
                        "ms_per_step": 1e3 * median,
                        "ms_quartiles": [1e3 * q[0], 1e3 * q[2]],
                        "rows_per_s": args.batch / median,
                    }
                )
    import pyro

    return {
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "cpu_count": os.cpu_count(),
        "threads_per_process": args.threads,
        "batch": args.batch,
        "hidden": [int(h) for h in args.hidden.split(",")],
        "features": D,
        "steps": args.steps,
        "warmup": args.warmup,
        "results": results,
    }


def print_table(out) -> None:
    print(
        f"torch {out['torch']}, pyro {out['pyro']}, gloo on {out['cpu_count']} cores, "
        f"{out['threads_per_process']} thread(s) per process; MLP {out['features']}-"
        f"{'-'.join(map(str, out['hidden']))}-2, global batch {out['batch']}; median of "
        f"{out['steps']} steps after {out['warmup']} warm-up\n"
    )
    print("| processes | pairing | rows/rank | ms/step | quartiles | rows/s |")
    print("|---|---|---|---|---|---|")
    for r in out["results"]:
        print(
            f"| {r['world']} | {r['pairing']} | {r['rows_per_rank']} | {r['ms_per_step']:.2f} | "
            f"{r['ms_quartiles'][0]:.2f}-{r['ms_quartiles'][1]:.2f} | {r['rows_per_s']:.0f} |"
        )


def main(argv=None):
    args = parse_args(argv)
    out = run(args)
    if args.out:
        write_json(args.out, out)
    print_table(out)
    return out


if __name__ == "__main__":
    main()
