"""Interleaved timing for the overhead benchmarks: ratios a shared machine cannot fake.

Every round runs each variant for a few steps, in a fresh random order, and
records its thread CPU time per step; the ratio of a variant to the baseline is
taken round by round (the two ran within milliseconds of each other, so drift
in the machine's speed cancels) and summarised by its median and quartiles.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable


def interleaved(
    steps: dict[str, Callable[[], None]],
    rounds: int,
    per_round: int,
    seed: int = 0,
    clock: Callable[[], int] = time.thread_time_ns,
    finish: Callable[[], None] = lambda: None,
):
    """``{name: [us per step, one value per round]}`` for the step functions.

    ``clock``: thread CPU time by default (process CPU time where work runs on
    other threads, as XLA's may); ``finish``: waits for asynchronous work
    (``jax.block_until_ready``) before the clock is read."""
    order = list(steps)
    rng = random.Random(seed)
    times = {name: [] for name in steps}
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            step = steps[name]
            t0 = clock()
            for _ in range(per_round):
                step()
            finish()
            times[name].append((clock() - t0) / per_round / 1e3)
    return times


def summary(times, baseline: str = "erm"):
    """Per variant: median us/step, and the paired ratio to the baseline (median, quartiles)."""
    out = {}
    for name, ts in times.items():
        paired = sorted(a / b for a, b in zip(ts, times[baseline]))
        q = [paired[int(f * (len(paired) - 1))] for f in (0.25, 0.5, 0.75)]
        out[name] = {
            "us_per_step": statistics.median(ts),
            "ratio": q[1],
            "ratio_quartiles": [q[0], q[2]],
        }
    return out


def print_table(result, title: str):
    print(title)
    print(
        "ratio: median over rounds of (variant / baseline in the same round), CPU time; quartiles beside"
    )
    print(f"{'variant':<22} {'us/step':>9} {'ratio':>7} {'quartiles':>15}")
    for name, r in result.items():
        q1, q3 = r["ratio_quartiles"]
        print(f"{name:<22} {r['us_per_step']:>9.1f} {r['ratio']:>7.3f} {q1:>7.3f}-{q3:<7.3f}")
