"""The ``demo`` and ``bench`` subcommands of ``pyro-mixup``: argument parsing only (registered by :mod:`pyro_mixup.cli`)."""

from __future__ import annotations

import sys

from .executors import add_executor_options


def _hidden(s: str):
    try:
        h = tuple(int(v) for v in s.split("-"))
    except ValueError:
        raise ValueError(f"--hidden must look like 128-32; got {s!r}") from None
    if not h or min(h) < 1:
        raise ValueError(f"--hidden must look like 128-32; got {s!r}")
    return h


def _toy_options(p, out, epochs=500, runs=5, alpha=0.5, beta=0.0):
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument("--methods", default=None, help="comma list of methods (default: all)")
    p.add_argument(
        "--runs",
        type=int,
        default=runs,
        help=f"independent runs per method (default {runs or '5; 10 with --protocol paper'})",
    )
    p.add_argument(
        "--epochs", type=int, default=epochs, help=f"full-batch epochs (default {epochs})"
    )
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    p.add_argument(
        "--alpha", type=float, default=alpha, help=f"lam ~ Beta(alpha, alpha) (default {alpha})"
    )
    p.add_argument(
        "--beta", type=float, default=beta, help=f"target jitter / label smoothing (default {beta})"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _predictive_options(p):
    from ..core.predictive import DEFAULT_NUM_DRAWS

    p.add_argument(
        "--predictive",
        choices=("marginal", "mean"),
        default="marginal",
        help="how M-ProbMix networks predict: the mixture over draws of the embedding (the paper's "
        "predictive) or the embedding's mean (default %(default)s)",
    )
    p.add_argument(
        "--test-draws",
        type=int,
        default=DEFAULT_NUM_DRAWS,
        help="embedding draws of the marginal predictive (default %(default)s)",
    )


def _guard(fn):
    def run(args):
        from .data import DataError

        try:
            return fn(args)
        except (DataError, ValueError) as e:
            print(f"pyro-mixup: error: {e}", file=sys.stderr)
            return 2

    return run


def _toy_regression(args):
    if getattr(args, "protocol", "demo") == "paper":
        from .toy_paper import cmd

        return cmd(args)
    from .toy import cmd_toy_regression

    if args.runs is None:
        args.runs = 5
    return cmd_toy_regression(args)


def _toy_classification(args):
    from .toy import cmd_toy_classification

    return cmd_toy_classification(args)


def _uci(args):
    from .uci import run

    return run(args)


def add_parser(sub) -> None:
    from .uci import DEFAULT_ALPHAS

    demo = sub.add_parser(
        "demo", help="the paper's toy regression for every method: table, figure, JSON"
    )
    _toy_options(demo, "results/demo")
    demo.set_defaults(func=_guard(_toy_regression))

    bench = sub.add_parser("bench", help="benchmarks: toy-regression, toy-classification, uci")
    bsub = bench.add_subparsers(dest="bench", required=True)
    tr = bsub.add_parser(
        "toy-regression", help="y = x^3 + N(0, 9), ID and OOD NLL/MSE, Figure-2-like plot"
    )
    _toy_options(tr, "results/toy-regression", runs=None)
    tr.add_argument(
        "--protocol",
        choices=("demo", "paper"),
        default="demo",
        help="demo: the Pyro trainer, one alpha, raw units, 5 runs; paper: the paper's protocol "
        "(METHOD.md section 6) on the NumPyro trainer: standardised x and y, 80/20 validation, the "
        "alpha x beta grid, 10 runs (default %(default)s)",
    )
    tr.add_argument(
        "--alphas",
        default=None,
        help="paper protocol: alpha grid (default 0,0.01,0.05,0.1,0.25,0.5,1; 0 = no mixing)",
    )
    tr.add_argument("--betas", default=None, help="paper protocol: beta grid (default 0,0.01)")
    tr.add_argument(
        "--val-draws",
        type=int,
        default=100,
        help="paper protocol: embedding draws of the validation NLL each epoch (default %(default)s)",
    )
    _predictive_options(tr)
    tr.set_defaults(func=_guard(_toy_regression))
    tc = bsub.add_parser(
        "toy-classification", help="three noisy rings: accuracy, NLL, decision boundaries"
    )
    _toy_options(tc, "results/rings", beta=0.01)
    tc.set_defaults(func=_guard(_toy_classification))

    u = bsub.add_parser("uci", help="the paper's UCI regression protocol (Table 1)")
    u.add_argument(
        "--data-dir",
        default=None,
        help="folder with one sub-folder per dataset in the UCI split layout "
        "(default: $PYRO_MIXUP_UCI_DIR)",
    )
    u.add_argument("--datasets", default=None, help="comma list (default: all found)")
    u.add_argument("--splits", default=None, help="e.g. 0-19 or 0,3,5 (default: all)")
    u.add_argument("--methods", default=None, help="comma list (default: all)")
    u.add_argument("--epochs", type=int, default=1000, help="epochs (default 1000)")
    u.add_argument(
        "--backend",
        choices=("pyro", "numpyro"),
        default="numpyro",
        help="numpyro: SVI + optax, compiled once per (dataset, method), vmapped across splits (default); "
        "pyro: SVI + torch, one split at a time",
    )
    add_executor_options(u, "(dataset, method group)")
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--out", default="results/uci", help="output folder (default results/uci)")
    u.add_argument(
        "--alphas",
        default=",".join(f"{a:g}" for a in DEFAULT_ALPHAS),
        help="alpha grid, chosen on validation (default %(default)s)",
    )
    u.add_argument("--beta", type=float, default=0.0, help="target jitter variance (default 0)")
    u.add_argument(
        "--batch-size", type=int, default=64, help="minibatch size; 0 = full batch (default 64)"
    )
    u.add_argument("--lr", type=float, default=0.005, help="Adam learning rate (default 0.005)")
    u.add_argument(
        "--hidden", type=_hidden, default=(128, 32), help="hidden sizes (default 128-32)"
    )
    _predictive_options(u)
    u.add_argument("--quiet", action="store_true", help="no progress bar")
    u.set_defaults(func=_guard(_uci))
