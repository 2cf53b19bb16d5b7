"""The ``pyro-mixup`` command.

Each subcommand lives with the code it drives and registers itself here
through an ``add_parser(subparsers)`` function: see ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Sequence

#: Modules that add subcommands (``add_parser(subparsers)``); a module that
#: is not there yet is skipped, so the command works as features land.
COMMAND_MODULES = ("pyro_mixup.experiments.cli", "pyro_mixup.experiments.bnn.cli")

#: The runnable example each command's ``--help`` ends with, by its words after ``pyro-mixup``
#: (small settings: seconds to a few minutes; tests/test_cli_help.py parses every one).
EXAMPLES = {
    (): "pyro-mixup demo",
    ("pool-demo",): "pyro-mixup pool-demo",
    ("demo",): "pyro-mixup demo --runs 1 --epochs 200 --out results/demo-quick",
    (
        "bench",
    ): "pyro-mixup bench toy-classification --runs 1 --epochs 100 --out results/rings-quick",
    ("bench", "toy-regression"): (
        "pyro-mixup bench toy-regression --protocol paper --methods erm,probmix,m-probmix --runs 2 "
        "--epochs 100 --alphas 0,0.5 --betas 0 --out results/toy-paper-quick"
    ),
    ("bench", "toy-classification"): (
        "pyro-mixup bench toy-classification --methods erm,probmix --runs 1 --epochs 100 "
        "--out results/rings-quick"
    ),
    ("bench", "uci"): (
        "pyro-mixup bench uci --data-dir ../shared/data/uci --datasets yacht --splits 0-1 "
        "--methods erm,probmix --alphas 0.5 --epochs 40 --out results/uci-quick"
    ),
    ("bnn",): (
        "pyro-mixup bnn --data-dir ../shared/data/uci --dataset yacht --splits 0 "
        "--methods erm,probmix --epochs 200 --num-samples 100 --out results/bnn-quick"
    ),
}


def subcommands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (words, parser) of the command tree under ``parser``, ``parser`` first."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subcommands(child, (*words, name))


def _add_examples(parser: argparse.ArgumentParser) -> None:
    for words, p in subcommands(parser):
        if words in EXAMPLES:
            p.epilog = f"example:\n  {EXAMPLES[words]}"
            if p.formatter_class is argparse.HelpFormatter:  # keep the example on its own line
                p.formatter_class = argparse.RawDescriptionHelpFormatter


def _pooling_demo(args: argparse.Namespace) -> int:
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
    _add_examples(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
