"""Overhead of the Pyro handlers on an SVI step (issue 3, item 8).

Times ``svi.step`` of a heteroscedastic Gaussian MLP 128-32 (batch 128,
8 features) unwrapped (ERM) and wrapped by each handler with default settings,
interleaved (``benchmarks/timing.py``: rounds of a few steps per variant in
random order) and prints the median time per step and the median over rounds
of each variant's time relative to ERM's in the same round (a paired ratio:
the steadiest figure on a shared machine), with its quartiles.
``hand-pooled`` is ProbMix written into the model by hand: the pooling ops
the handler runs, scored in natural parameters through a ``pyro.factor`` (so
it also skips the model's own Normal): the floor any handler can reach.
M-ProbMix is left out of the default list: its model has an extra embedding
layer, so its ratio to ERM measures the architecture, not the handler.

    python benchmarks/overhead.py [--blocks 400] [--steps 3] [--validation] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from timing import interleaved, print_table, summary

from pyro_mixup import embed, mixable
from pyro_mixup.handlers import mixup, probmix


class MLP(torch.nn.Module):
    def __init__(self, d_in=8, h1=128, h2=32):
        super().__init__()
        self.l1 = torch.nn.Linear(d_in, h1)
        self.l1_scale = torch.nn.Linear(d_in, h1)
        self.l2 = torch.nn.Linear(h1, h2)
        self.head = torch.nn.Linear(h2, 2)


def make_model(net, variant):
    def model(x, y=None):
        pyro.module("net", net)
        if variant == "mix":
            x = mixable("x", x, dim=-1)
        h = net.l1(x)
        if variant == "m-probmix":
            h = embed("h", dist.Normal(h, F.softplus(net.l1_scale(x)) + 1e-3).to_event(1), dim=-1)
        if variant == "m-mix":
            h = mixable("h", h, dim=-1)
        out = net.head(torch.relu(net.l2(torch.relu(h))))
        loc, scale = out[:, 0], F.softplus(out[:, 1]) + 1e-3
        if variant == "hand-pooled":
            # The floor for any handler: ProbMix written into the model by hand,
            # the same tensor ops with no effect handling around them.
            perm, lam = torch.randperm(x.shape[0]), random.betavariate(1.0, 1.0)
            tau = scale**-2
            eta = tau * loc
            tau_p = torch.lerp(tau[perm], tau, lam)
            eta_p = torch.lerp(eta[perm], eta, lam)
            y = torch.lerp(y[perm], y, lam)
            # scored in natural parameters, as the handler does (no way back to loc, scale)
            r = torch.addcmul(eta_p, y, tau_p, value=-1.0)
            lp = torch.addcdiv(tau_p.log() - math.log(2 * math.pi), r * r, tau_p, value=-1.0) * 0.5
            pyro.factor("y", lp.sum())
            return None
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("y", dist.Normal(loc, scale), obs=y)

    wrappers = {
        "erm": lambda m: m,
        "hand-pooled": lambda m: m,
        "probmix": lambda m: probmix(m, alpha=1.0),
        "probmix-shift": lambda m: probmix(m, alpha=1.0, pairing="shift"),
        "probmix-expected": lambda m: probmix(m, alpha=1.0, target="expected"),
        "m-probmix": lambda m: probmix(m, alpha=1.0, at="h"),
        "mix": lambda m: mixup(m, alpha=1.0, at="x"),
        "m-mix": lambda m: mixup(m, alpha=1.0, at="h"),
    }
    return wrappers[variant](model)


def guide(x, y=None):
    pass


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--blocks", type=int, default=400, help="rounds: each runs every variant, in random order"
    )
    parser.add_argument("--steps", type=int, default=3, help="steps per variant and round")
    parser.add_argument(
        "--variants", default="erm,hand-pooled,probmix,probmix-shift,probmix-expected,mix,m-mix"
    )
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--validation",
        action="store_true",
        help="keep Pyro's argument validation on (its default); off by default here, as in a tuned training loop",
    )
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)  # a small model: threads add noise, not speed
    pyro.enable_validation(args.validation)
    x, y = torch.randn(128, 8), torch.randn(128)
    variants = args.variants.split(",")
    svis = {}
    for v in variants:
        # The unwrapped model's embed/mixable sites cost nothing without a handler;
        # ERM and ProbMix use the same plain network.
        net = MLP()
        svis[v] = SVI(make_model(net, v), guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        for _ in range(20):  # warm-up
            svis[v].step(x, y)
    times = interleaved(
        {v: (lambda s=svis[v]: s.step(x, y)) for v in variants}, args.blocks, args.steps
    )
    result = summary(times)
    print_table(
        result,
        f"SVI step, MLP 128-32, batch 128, 8 features, {args.blocks} rounds of {args.steps} steps "
        f"per variant, Pyro validation {'on' if args.validation else 'off'}, 1 torch thread",
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
