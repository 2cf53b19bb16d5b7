"""The ``pyro-mixup`` command.

Each subcommand lives with the code it drives and registers itself here
through an ``add_parser(subparsers)`` function: see ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that add subcommands (``add_parser(subparsers)``); a module that
#: is not there yet is skipped, so the command works as features land.
COMMAND_MODULES = ("pyro_mixup.experiments.cli", "pyro_mixup.experiments.bnn.cli")


def _pooling_demo(args) -> int:
    import pyro.distributions as dist
    import torch

    from . import log_linear_pool

    torch.set_printoptions(precision=4)
    print("Log-linear pooling, the paper's worked example (section 3.2.3):")
    p = log_linear_pool([dist.Normal(125.0, 13.5), dist.Normal(-125.0, 13.5)], [0.8, 0.2])
    print(
        f"  pool of N(125, 13.5^2) and N(-125, 13.5^2), lam = 0.8 -> Normal(loc={p.loc:.4f}, scale={p.scale:.4f})"
    )
    print(f"  NLL at y~ = 80: {-p.log_prob(torch.tensor(80.0)):.4f}  (paper: 3.59)")
    c = log_linear_pool(
        [
            dist.Categorical(probs=torch.tensor([0.7, 0.2, 0.1])),
            dist.Categorical(probs=torch.tensor([0.1, 0.2, 0.7])),
        ],
        [0.5, 0.5],
    )
    print(f"  pool of two Categoricals, lam = 0.5 -> probs {c.probs}")
    g = log_linear_pool([dist.Gamma(2.0, 1.0), dist.Gamma(6.0, 3.0)], [0.25, 0.75])
    print(
        f"  pool of Gamma(2, 1) and Gamma(6, 3), lam = 0.25 -> Gamma({g.concentration:.4f}, {g.rate:.4f})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-mixup", description="Probabilistic mixup for Pyro and NumPyro."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pool = sub.add_parser(
        "pool-demo", help="print a few log-linear pools (the paper's worked example)"
    )
    pool.set_defaults(func=_pooling_demo)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # that feature has not landed
            raise
        module.add_parser(sub)
    if "demo" not in sub.choices:
        demo = sub.add_parser("demo", help="run the main demo on its embedded default")
        demo.set_defaults(func=_pooling_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
