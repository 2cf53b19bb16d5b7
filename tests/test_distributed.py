"""ProbMix under data parallelism in PyTorch: ``DistributedDataParallel``, gloo, 2 CPU processes.

Each rank wraps its model with :func:`pyro_mixup.handlers.probmix` and pairs
within its own batch (the natural, communication-free semantics: the handler
never sees the other rank's rows). Checked against single-process runs made
here, in the test's process, on each rank's shard with the same seed:

- each rank's loss and gradient (by the unwrapped module) are those of the
  single-process run on its shard;
- the gradient DDP leaves after its all-reduce is the average of the per-shard
  gradients, and a few SGD steps on it give, on both ranks, the parameters of
  single-process SGD on the averaged gradients.

The workers are started by ``torch.multiprocessing`` (spawn) on a free port
picked at runtime, write their results to ``tmp_path``, and are killed after a
deadline, so a hang fails the test rather than blocking it. The test is skipped
only when gloo cannot start on the machine.
"""

from __future__ import annotations

import datetime
import functools
import os
import socket
import time

import pytest
import torch

WORLD, ROWS, STEPS, LR = 2, 8, 3, 0.05
DEADLINE_S = 150


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _model(net, x, y=None):
    import pyro
    import pyro.distributions as dist

    loc, raw_scale = pyro.module("net", net)(x).unbind(-1)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample(
            "y", dist.Normal(loc, torch.nn.functional.softplus(raw_scale) + 1e-2), obs=y
        )


def _guide(x, y=None):
    pass


def _shard(rank):
    """Rank ``rank``'s rows of the global batch (the same data in every process)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(WORLD * ROWS, 3, generator=g)
    y = x.sum(-1) + 0.3 * torch.randn(WORLD * ROWS, generator=g)
    return x[rank * ROWS : (rank + 1) * ROWS], y[rank * ROWS : (rank + 1) * ROWS]


def _seed(step, rank):
    return 1000 * step + rank  # every rank draws its own lam and partners


def _loss(module, x, y, seed):
    """The ProbMix ELBO loss of one shard, drawn from ``seed``."""
    import pyro
    from pyro.infer import Trace_ELBO

    from pyro_mixup.handlers import probmix

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    wrapped = probmix(functools.partial(_model, module), alpha=1.0)
    return Trace_ELBO().differentiable_loss(wrapped, _guide, x, y)


def _single_process(net, x, y, seed):
    loss = _loss(net, x, y, seed)
    return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, list(net.parameters()))]


def _worker(rank, port, out_dir):
    import sys

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=WORLD,
            timeout=datetime.timedelta(seconds=60),
        )
    except Exception as error:  # reported to the test, which skips
        (out_dir / f"init_failed_{rank}").write_text(repr(error))
        return
    net = _net()
    ddp = DistributedDataParallel(net)
    optim = torch.optim.SGD(ddp.parameters(), lr=LR)
    x, y = _shard(rank)
    steps = []
    for step in range(STEPS):
        # this rank's own loss and gradient, by the plain module (no communication)
        loss_local, grads_local = _single_process(net, x, y, _seed(step, rank))
        # the same step through DDP: backward averages the gradients over the ranks
        optim.zero_grad()
        loss = _loss(ddp, x, y, _seed(step, rank))
        loss.backward()
        steps.append(
            {
                "loss_local": loss_local,
                "grads_local": grads_local,
                "loss_ddp": loss.detach(),
                "grads_ddp": [p.grad.detach().clone() for p in net.parameters()],
            }
        )
        optim.step()
    params = [p.detach().clone() for p in net.parameters()]
    part = out_dir / f"rank{rank}.pt.part"
    torch.save({"steps": steps, "params": params}, part)
    part.rename(out_dir / f"rank{rank}.pt")  # complete, or absent
    dist.barrier()
    # Leave without tearing gloo down: its teardown at exit aborted a process now and then
    # on this machine ("terminate called without an active exception", SIGABRT) after the
    # results were written. Both ranks are past their last collective.
    os._exit(0)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(out_dir):
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        _worker, args=(_free_port(), out_dir), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"the DDP workers did not finish within {DEADLINE_S} s (a hang?)")
    finally:
        for p in ctx.processes:  # only the workers this test started
            if p.is_alive():
                p.kill()
                p.join(5)


def test_probmix_under_ddp_pairs_within_each_rank(tmp_path):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    _spawn(tmp_path)
    failed = sorted(tmp_path.glob("init_failed_*"))
    if failed:
        pytest.skip(f"gloo cannot start on this machine: {failed[0].read_text()}")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    # the single-process reference: each shard on its own, SGD on the averaged gradient
    net = _net()
    optim = torch.optim.SGD(net.parameters(), lr=LR)
    for step in range(STEPS):
        per_shard = [_single_process(net, *_shard(r), _seed(step, r)) for r in range(WORLD)]
        for r, (loss, grads) in enumerate(per_shard):
            got = ranks[r]["steps"][step]
            # the rank's loss and gradient are the single-process run's on its shard
            torch.testing.assert_close(got["loss_local"], loss, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(got["loss_ddp"], loss, rtol=1e-6, atol=1e-6)
            for a, b in zip(got["grads_local"], grads, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        mean = [torch.stack(gs).mean(0) for gs in zip(*(g for _, g in per_shard), strict=True)]
        for r in range(WORLD):  # after DDP's all-reduce: the average of the per-shard gradients
            for a, b in zip(ranks[r]["steps"][step]["grads_ddp"], mean, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        # the ranks drew differently: their own pairs, their own lam
        assert not torch.allclose(per_shard[0][1][0], per_shard[1][1][0])
        optim.zero_grad()
        for p, g in zip(net.parameters(), mean, strict=True):
            p.grad = g.clone()
        optim.step()
    for r in range(WORLD):  # training: both ranks hold the single-process parameters
        for a, b in zip(ranks[r]["params"], net.parameters(), strict=True):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
