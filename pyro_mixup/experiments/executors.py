"""Where the experiment commands run their configurations.

``--executor local`` (the default) runs them in this process, or in a local process pool with
``--jobs N``; ``--executor ray`` sends each configuration to a Ray cluster as a task that declares
its CPU need, and hands the results back as they finish, so the command's resumable JSON grows
one configuration at a time exactly as with the local executor. A worker that dies mid-task
(killed, out of memory, its node lost) has its task retried by Ray; only a finished task's
records are stored, so nothing is lost or written twice, and a re-run skips what is done.

Ray is an optional extra (``pip install pyro-mixup[distributed]``), imported only here and only
when asked for.

>>> [result for _, result in run_tasks([1, 2, 3], abs)]
[1, 2, 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "ray")
#: a task whose worker died is run again this many times before the command fails
RAY_MAX_RETRIES = 3


def add_executor_options(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--jobs``, ``--executor`` and ``--ray-address``; ``unit`` names what one task trains."""
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help=f"parallel worker processes, one {unit} each (default 1); with --executor ray, the "
        "CPUs of the local cluster",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this process, or a process pool with --jobs (default); ray: one Ray task per "
        "configuration, on the cluster at --ray-address or on a local one started for the run "
        "(pip install pyro-mixup[distributed])",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="address of an existing Ray cluster, e.g. auto or ray://head:10001 (default: start a "
        "local cluster with --jobs CPUs, or all of this machine's)",
    )


def run_tasks(
    tasks: Sequence[T],
    fn: Callable[[T], R],
    *,
    executor: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
    init: Callable[..., None] | None = None,
    init_args: tuple = (),
    cpus_per_task: float = 1,
) -> Iterator[tuple[T, R]]:
    """Run ``fn`` on every task; yield ``(task, result)`` as each one finishes.

    ``fn`` must be a module-level function (it is pickled to the workers); ``init(*init_args)``
    runs in each worker process before its first task (``--jobs``) or before each task (Ray:
    a worker may serve several tasks, so ``init`` must be idempotent), never in this process.
    On Ray a task is retried when its worker dies; an exception raised by ``fn`` is not retried
    (it would fail again) and stops the run, as it does locally.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}; got {executor!r}")
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1; got {jobs}")
    if not tasks:
        return  # nothing to train (a resumed run): no pool, no cluster
    if executor == "ray":
        yield from _run_on_ray(tasks, fn, jobs, ray_address, init, init_args, cpus_per_task)
    elif jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(
            jobs, mp_context=mp.get_context("spawn"), initializer=init, initargs=init_args
        ) as pool:
            futures = {pool.submit(fn, t): t for t in tasks}
            for f in as_completed(futures):
                yield futures[f], f.result()
    else:
        for t in tasks:
            yield t, fn(t)


def one_thread_per_worker(backend: str) -> None:
    """One XLA/torch thread per worker when --jobs > 1: the MLP's small ops run on
    one thread anyway, and two single-threaded workers train 1.6x as fast as one
    process with two threads (benchmarks/epoch_cost.py, docs/experiments.md). Idempotent:
    a Ray worker runs it before each of its tasks."""
    one_thread = " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    if one_thread not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + one_thread
    os.environ["OMP_NUM_THREADS"] = "1"
    if backend == "numpyro":
        from .train_numpyro import use_compile_cache

        use_compile_cache()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _call(fn: Callable, task: Any, init: Callable | None, init_args: tuple) -> Any:
    if init is not None:
        init(*init_args)
    return fn(task)


def _run_on_ray(tasks, fn, jobs, address, init, init_args, cpus_per_task) -> Iterable:
    try:
        import ray
    except ImportError:
        raise SystemExit(
            "--executor ray needs Ray: pip install 'pyro-mixup[distributed]' (or pip install ray)"
        ) from None
    started = False
    if ray.is_initialized():
        # the caller's cluster (a notebook, a test): it decides the address and the CPUs
        if address:
            warnings.warn(
                f"Ray is already initialised in this process; --ray-address {address} is ignored",
                stacklevel=2,
            )
    else:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # a new local cluster for this run, even where `ray start` left one running (a bare
            # ray.init() would join that one); --jobs caps its CPUs (default: the machine's)
            ray.init(
                address="local",
                num_cpus=jobs if jobs > 1 else None,
                include_dashboard=False,
                log_to_driver=False,
            )
        started = True
    pending: dict = {}
    try:
        remote = ray.remote(num_cpus=cpus_per_task, max_retries=RAY_MAX_RETRIES)(_call)
        pending = {remote.remote(fn, t, init, init_args): t for t in tasks}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            yield task, ray.get(ref)
    finally:  # an error or Ctrl-C: what is still queued is dropped, the stored records stay
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
