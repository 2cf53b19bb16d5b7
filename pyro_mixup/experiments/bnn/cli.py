"""``pyro-mixup bnn``: BNN + mixup methods on UCI regression splits, with ArviZ output.

For each dataset, method and split: train the BNN by SVI with the method's
handler, build an ArviZ object on the test split with
:func:`pyro_mixup.diagnostics.to_inference_data` (from the plain model), and write

- ``<out>/<dataset>/<method>_split<k>.nc``: the ArviZ NetCDF file;
- ``<out>/<dataset>/<method>_split<k>.json``: test NLL (log-mean-exp over
  posterior draws, original units of y), RMSE, 90%-interval coverage, timings;
- ``<out>/<dataset>/<method>_split<k>_calibration.png``: empirical vs nominal
  coverage of central predictive intervals, and the PIT histogram;

then ``<out>/<dataset>/report.md``: a table over splits, wins vs ERM,
``az.compare`` on the test log-likelihood, LOO diagnostics (Pareto k), and
per-method PPC / PIT plots (``ppc_<method>.png``, ``pit_<method>.png``).
``--summarise`` trains nothing and prints the tables over datasets
(:func:`summary_table`).

With ``--backend numpyro`` and full-batch training, the splits of a dataset
train together: one vmapped SVI run per method
(:func:`pyro_mixup.experiments.bnn.models_numpyro.fit_splits`), the same result as one run
per split at a fraction of the compile and dispatch cost. Re-running skips
runs whose JSON was written with the same settings (``--overwrite`` redoes them).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from ..data import DATA_ENV, DataError, default_data_dir, load_all, parse_splits, raw_split
from ..executors import add_executor_options, one_thread_per_worker, run_tasks
from ..methods import parse_methods
from ..metrics import FROM_TEST_METRICS as RECORD_NAMES
from ..metrics import renamed_legacy_record
from ..results import write_json
from . import BNN_METHODS


def _parse_splits(text: str, available: int) -> list[int]:
    """The same split syntax as ``bench uci``: 'all', 'a-b' (inclusive), 'i,j,k', mixes."""
    try:
        return parse_splits(text, available)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def _parse_methods(text: str) -> list[str]:
    """A comma list of :data:`~pyro_mixup.experiments.bnn.BNN_METHODS` ('all': every one)."""
    try:
        return parse_methods(text, list(BNN_METHODS))
    except ValueError as e:
        raise SystemExit(str(e)) from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bnn",
        help="Bayesian NNs + mixup handlers on UCI regression, with ArviZ diagnostics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data-dir",
        default=default_data_dir(),
        help=f"folder holding <dataset>/data.txt etc. (default: ${DATA_ENV} or ../shared/data/uci)",
    )
    p.add_argument(
        "--dataset", default="yacht", help="dataset name(s), comma-separated (default: yacht)"
    )
    p.add_argument(
        "--splits",
        default="all",
        help="'all', ranges and lists such as 0-4 or 0,3,5 (default: all)",
    )
    p.add_argument(
        "--methods",
        default="erm,probmix,m-probmix",
        help=f"comma-separated, from {','.join(BNN_METHODS)} (default: erm,probmix,m-probmix)",
    )
    p.add_argument("--backend", choices=("pyro", "numpyro"), default="pyro")
    p.add_argument(
        "--epochs",
        type=int,
        default=4000,
        help="SVI epochs (full-batch steps by default; default 4000)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="minibatch size (default or 0: full batch)"
    )
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument(
        "--alpha", type=float, default=0.5, help="lam ~ Beta(alpha, alpha) (default 0.5)"
    )
    p.add_argument("--hidden", default="50", help="hidden widths, comma-separated (default: 50)")
    p.add_argument("--prior-scale", type=float, default=1.0)
    p.add_argument(
        "--kl-weight",
        type=float,
        default=0.1,
        help="weight of the KL term in the ELBO (1: plain ELBO; <1: tempered posterior; default 0.1)",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=500,
        help="posterior draws for the test set (default 500)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bnn")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--summarise",
        action="store_true",
        help="train nothing: print the markdown tables over the datasets (NLL, coverage, splits won, RMSE) "
        "from the JSON files under --out",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (one summary line per run is still printed)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain runs whose files exist (default: a run whose JSON matches these settings is kept)",
    )
    add_executor_options(p, "(dataset, method) or, unless its splits are vmapped, split")
    p.set_defaults(func=run)
    return p


# ----------------------------------------------------------------------------- one run


def _fit_and_score(args, method, split, hidden, split_data):
    """One split, trained on its own (Pyro, or NumPyro with minibatches)."""
    from ... import diagnostics

    t0 = time.time()
    if args.backend == "pyro":
        import torch

        from . import models_pyro as M

        torch.manual_seed(args.seed + split)
        model = M.make_model(
            method, split_data.x_train, split_data.y_train, hidden, args.prior_scale
        )
        guide = M.fit(
            model,
            split_data.x_train,
            split_data.y_train,
            method=method,
            alpha=args.alpha,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed + split,
            progress=not args.quiet,
            kl_weight=args.kl_weight,
        )
        fit_s = time.time() - t0
        idata = diagnostics.to_inference_data(
            model,
            guide,
            split_data.x_test,
            split_data.y_test,
            num_samples=args.num_samples,
            rng_seed=args.seed + split,
        )
        return idata, fit_s, time.time() - t0 - fit_s
    from . import models_numpyro as M

    model = M.make_model(method, split_data.x_train, split_data.y_train, hidden, args.prior_scale)
    guide, params = M.fit(
        model,
        split_data.x_train,
        split_data.y_train,
        method=method,
        alpha=args.alpha,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed + split,
        progress=not args.quiet,
        kl_weight=args.kl_weight,
    )
    fit_s = time.time() - t0
    return _numpyro_inference_data(args, model, guide, params, split, split_data, fit_s)


def _numpyro_inference_data(args, model, guide, params, split, split_data, fit_s):
    from ... import diagnostics

    t0 = time.time()
    idata = diagnostics.to_inference_data(
        model,
        guide,
        np.asarray(split_data.x_test, np.float32),
        np.asarray(split_data.y_test, np.float32),
        params=params,
        num_samples=args.num_samples,
        rng_seed=args.seed + split,
    )
    return idata, fit_s, time.time() - t0


def _fit_splits_and_score(args, method, hidden, split_datas):
    """NumPyro, full batch: every split of one shape trained in one vmapped SVI
    run (:func:`pyro_mixup.experiments.bnn.models_numpyro.fit_splits`); yields per split
    ``(split_data, idata, fit_seconds, diagnostics_seconds)``, fit time shared equally."""
    from collections import defaultdict

    from . import models_numpyro as M

    groups = defaultdict(list)
    for sd in split_datas:
        groups[(sd.x_train.shape, sd.y_train.shape)].append(sd)
    for group in groups.values():
        t0 = time.time()
        fitted = M.fit_splits(
            method,
            [(sd.x_train, sd.y_train) for sd in group],
            hidden=hidden,
            prior_scale=args.prior_scale,
            alpha=args.alpha,
            epochs=args.epochs,
            lr=args.lr,
            seeds=[args.seed + sd.split for sd in group],
            kl_weight=args.kl_weight,
            progress=not args.quiet,
        )
        fit_s = (time.time() - t0) / len(group)
        for sd, (model, guide, params, _) in zip(group, fitted):
            yield (sd, *_numpyro_inference_data(args, model, guide, params, sd.split, sd, fit_s))


def _settings(args, hidden) -> dict:
    """The options a finished run's JSON must match to be reused."""
    return {
        "backend": args.backend,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "alpha": args.alpha,
        "hidden": list(hidden),
        "prior_scale": args.prior_scale,
        "kl_weight": args.kl_weight,
        "num_samples": args.num_samples,
        "seed": args.seed,
    }


def _finished(stem: Path, settings: dict, split_data, plots: bool) -> bool:
    """Whether ``stem``'s run is done with these settings on this split's data (by its sizes)
    and has every file this command would write."""
    f = Path(f"{stem}.json")
    needed = [f, Path(f"{stem}.nc")] + ([Path(f"{stem}_calibration.png")] if plots else [])
    if not all(p.exists() for p in needed):
        return False
    try:
        rec = json.loads(f.read_text())
    except json.JSONDecodeError:
        return False
    sizes = {"n_train": len(split_data.y_train), "n_test": len(split_data.y_test)}
    return all(rec.get(k) == v for k, v in {**settings, **sizes}.items())


def run(args) -> int:
    from tqdm.auto import tqdm

    from ... import diagnostics

    methods = _parse_methods(args.methods)
    hidden = tuple(int(h) for h in str(args.hidden).split(",") if h.strip())
    datasets = list(dict.fromkeys(d.strip() for d in args.dataset.split(",") if d.strip()))
    if args.summarise:
        print(summary_table(args.out, datasets, methods))
        return 0
    args.batch_size = args.batch_size or None  # 0 means full batch, as in ``bench uci``
    settings = _settings(args, hidden)
    vectorised = args.backend == "numpyro" and not args.batch_size
    try:
        loaded = load_all(args.data_dir, datasets)
    except DataError as e:
        raise SystemExit(f"pyro-mixup bnn: {e}") from None
    # one task per (dataset, method) when the splits train vmapped together, else per split
    tasks, splits_of = [], {}
    for dataset in datasets:
        splits = splits_of[dataset] = _parse_splits(args.splits, loaded[dataset].n_splits)
        out = Path(args.out) / dataset
        out.mkdir(parents=True, exist_ok=True)
        data = {k: raw_split(loaded[dataset], k) for k in splits}
        skipped = 0
        for method in methods:
            todo = [
                data[k]
                for k in splits
                if args.overwrite
                or not _finished(out / f"{method}_split{k}", settings, data[k], not args.no_plots)
            ]
            skipped += len(splits) - len(todo)
            groups = [todo] if vectorised else [[sd] for sd in todo]
            tasks += [
                dict(
                    args=args,
                    dataset=dataset,
                    method=method,
                    hidden=hidden,
                    split_datas=g,
                    vectorised=vectorised,
                )
                for g in groups
                if g
            ]
        if skipped:
            tqdm.write(
                f"{dataset}: {skipped} run(s) already in {out} with these settings, skipped "
                "(--overwrite to redo)"
            )
    bar = tqdm(total=sum(len(t["split_datas"]) for t in tasks), desc="bnn", disable=args.quiet)
    left = Counter(t["dataset"] for t in tasks)  # a dataset's report once its last task is in
    for dataset in datasets:
        if not left[dataset]:
            _write_report(args, dataset, methods, splits_of[dataset])
    for task, runs in run_tasks(
        tasks,
        _train_task,
        executor=args.executor,
        jobs=args.jobs,
        ray_address=args.ray_address,
        init=one_thread_per_worker,  # where tasks run side by side
        init_args=(args.backend,),
    ):
        dataset, method = task["dataset"], task["method"]
        bar.set_postfix(dataset=dataset, method=method)
        by_split = {sd.split: sd for sd in task["split_datas"]}
        for k, idata, fit_s, diag_s in runs:
            split_data = by_split[k]
            stem = Path(args.out) / dataset / f"{method}_split{k}"
            diagnostics.save(idata, f"{stem}.nc")
            metrics = diagnostics.test_metrics(idata, "y", interval=0.9)
            pit = metrics.pop("pit")
            record = {
                "dataset": dataset,
                "method": method,
                "split": k,
                # the experiments' shared metric names (docs/experiments.md)
                **{RECORD_NAMES.get(key, key): value for key, value in metrics.items()},
                "n_train": len(split_data.y_train),
                "n_test": len(split_data.y_test),
                **settings,
                "vectorised_splits": vectorised,
                "seconds": round(fit_s + diag_s, 2),
                "fit_seconds": round(fit_s, 2),
                "diagnostics_seconds": round(diag_s, 2),
            }
            write_json(f"{stem}.json", record)
            if not args.no_plots:
                _calibration_figure(
                    idata, pit, f"{stem}_calibration.png", f"{dataset} {method} split {k}"
                )
            # one summary line per run, also with --quiet
            tqdm.write(
                f"{dataset} split {k} {method:>9}: NLL {metrics['nll']:.3f}  "
                f"RMSE {metrics['rmse']:.3f}  cov90 {metrics['coverage']:.3f}  ({fit_s:.0f}s fit)"
            )
            bar.update(1)
        left[dataset] -= 1
        if not left[dataset]:
            _write_report(args, dataset, methods, splits_of[dataset])
    bar.close()
    return 0


def _write_report(args, dataset: str, methods, splits) -> None:
    out = Path(args.out) / dataset
    report = write_report(
        out, dataset, methods, splits, plots=not args.no_plots, command=_command_line(args)
    )
    print(f"wrote {report}")


def _train_task(task: dict) -> list[tuple]:
    """Fit and score one task's splits (in this process, a pool worker or a Ray worker):
    per split ``(split, idata, fit_seconds, diagnostics_seconds)``."""
    args, method, hidden = task["args"], task["method"], task["hidden"]
    split_datas = task["split_datas"]
    if task["vectorised"]:
        runs = _fit_splits_and_score(args, method, hidden, split_datas)
    else:
        runs = ((sd, *_fit_and_score(args, method, sd.split, hidden, sd)) for sd in split_datas)
    out = [(sd.split, idata, fit_s, diag_s) for sd, idata, fit_s, diag_s in runs]
    _release_compiled()
    return out


def _release_compiled():
    """Drop JAX's compiled functions: every run builds its own model, so nothing is reused,
    and on a long command the JIT code piles up until LLVM cannot map more memory
    (seen after ~130 NumPyro runs: "LLVM compilation error: Cannot allocate memory")."""
    import sys

    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()


def _command_line(args) -> str:
    parts = [
        "pyro-mixup bnn",
        f"--data-dir {args.data_dir}",
        f"--dataset {args.dataset}",
        f"--splits {args.splits}",
        f"--methods {args.methods}",
        f"--backend {args.backend}",
        f"--epochs {args.epochs}",
        f"--lr {args.lr}",
        f"--alpha {args.alpha}",
        f"--hidden {args.hidden}",
        f"--kl-weight {args.kl_weight}",
        f"--num-samples {args.num_samples}",
        f"--seed {args.seed}",
        f"--out {args.out}",
    ]
    if args.batch_size:
        parts.append(f"--batch-size {args.batch_size}")
    return " ".join(parts)


def _number(value) -> str:
    """A setting for the tables; JSON files from older versions may lack it."""
    return "—" if value is None else f"{value:g}"


def summary_table(out, datasets, methods) -> str:
    """Markdown tables over datasets from ``<out>/<dataset>/<method>_split<k>.json``:

    1. mean ± std test NLL and mean 90% coverage per method, and the non-ERM
       method with the lowest mean NLL with its number of splits below ERM;
    2. median test NLL per method (robust to one diverged split) and, per
       non-ERM method, the splits on which its NLL is below ERM's;
    3. test RMSE, mean / median over splits;
    4. only where the runs differ in training settings (say, each method with
       its own ``kl_weight`` / ``lr``): the settings per dataset and method.

    A dataset's numbers all come from the same splits: those on which every
    method with results there has one, so an interrupted run shows up as fewer
    splits ("8 of 20"), never as columns averaged over different splits.
    """
    out = Path(out)
    others = [m for m in methods if m != "erm"]
    mean_table = [
        "| dataset | splits | "
        + " | ".join(f"{m} NLL" for m in methods)
        + " | "
        + " | ".join(f"{m} cov90" for m in methods)
        + " | best vs ERM (splits won) |",
        "|---" * (3 + 2 * len(methods)) + "|",
    ]
    median_table = [
        "| dataset | "
        + " | ".join(f"{m} median NLL" for m in methods)
        + "".join(f" | {m} splits won vs ERM" for m in others)
        + " |",
        "|---" * (1 + len(methods) + len(others)) + "|",
    ]
    rmse_table = [
        "| dataset | " + " | ".join(f"{m} RMSE mean / median" for m in methods) + " |",
        "|---" * (1 + len(methods)) + "|",
    ]
    settings = {}
    for ds in datasets:
        recs = {}
        for f in sorted((out / ds).glob("*_split*.json")):
            r = read_record(f)
            if r["method"] in methods:
                recs[(r["method"], r["split"])] = r
        present = [m for m in methods if any(mm == m for mm, _ in recs)]
        recorded = sorted({k for _, k in recs})
        splits = [k for k in recorded if all((m, k) in recs for m in present)]
        if not splits:
            continue
        n = (
            str(len(splits))
            if len(splits) == len(recorded)
            else f"{len(splits)} of {len(recorded)}"
        )
        col = {
            m: {
                key: np.array([recs[(m, k)][key] for k in splits], dtype=float)
                for key in ("test_nll", "coverage_90", "test_rmse")
            }
            for m in present
        }
        for m in present:
            settings[(ds, m)] = sorted(
                {(recs[(m, k)].get("kl_weight"), recs[(m, k)].get("lr")) for k in splits}
            )

        def cell(m, fmt):
            return fmt(col[m]) if m in col else "—"  # noqa: B023

        def won(m):
            if m not in col or "erm" not in col:  # noqa: B023
                return None
            return int(np.sum(col[m]["test_nll"] < col["erm"]["test_nll"]))  # noqa: B023

        # a diverged (NaN) mean never counts as the best
        scored = [m for m in others if m in col]
        best = min(
            scored, key=lambda m: np.nan_to_num(col[m]["test_nll"].mean(), nan=np.inf), default=None
        )
        verdict = "—"
        if best is not None and "erm" in col:
            lower = col[best]["test_nll"].mean() < col["erm"]["test_nll"].mean()
            verdict = f"{best}: {'lower' if lower else 'higher'} ({won(best)}/{len(splits)})"
        mean_table.append(
            f"| {ds} | {n} | "
            + " | ".join(
                cell(m, lambda c: f"{c['test_nll'].mean():.3f} ± {c['test_nll'].std():.3f}")
                for m in methods
            )
            + " | "
            + " | ".join(cell(m, lambda c: f"{c['coverage_90'].mean():.3f}") for m in methods)
            + f" | {verdict} |"
        )
        median_table.append(
            f"| {ds} | "
            + " | ".join(cell(m, lambda c: f"{np.median(c['test_nll']):.3f}") for m in methods)
            + "".join(" | —" if won(m) is None else f" | {won(m)}/{len(splits)}" for m in others)
            + " |"
        )
        rmse_table.append(
            f"| {ds} | "
            + " | ".join(
                cell(m, lambda c: f"{c['test_rmse'].mean():.3f} / {np.median(c['test_rmse']):.3f}")
                for m in methods
            )
            + " |"
        )
    tables = [mean_table, median_table, rmse_table]
    if len({s for v in settings.values() for s in v}) > 1:
        tables.append(
            ["| dataset | method | kl_weight | lr |", "|---|---|---|---|"]
            + [
                f"| {ds} | {m} | "
                + ", ".join(_number(kl) for kl, _ in v)
                + " | "
                + ", ".join(_number(lr) for _, lr in v)
                + " |"
                for (ds, m), v in settings.items()
            ]
        )
    return "\n\n".join("\n".join(t) for t in tables)


# ----------------------------------------------------------------------------- figures


def _coverage_curve(idata, levels):
    pp = np.asarray(idata["posterior_predictive"]["y"].values, dtype=np.float64)
    pp = pp.reshape((-1,) + pp.shape[2:])
    obs = np.asarray(idata["observed_data"]["y"].values, dtype=np.float64)
    out = []
    for a in levels:
        lo, hi = np.quantile(pp, [(1 - a) / 2, (1 + a) / 2], axis=0)
        out.append(float(np.mean((obs >= lo) & (obs <= hi))))
    return out


def _calibration_figure(idata, pit, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = np.linspace(0.05, 0.95, 19)
    cov = _coverage_curve(idata, levels)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.4))
    ax[0].plot([0, 1], [0, 1], "k--", lw=1)
    ax[0].plot(levels, cov, "o-", ms=3)
    ax[0].set(
        xlabel="nominal central-interval level", ylabel="empirical coverage", title="calibration"
    )
    ax[1].hist(pit, bins=10, range=(0, 1), density=True, alpha=0.7)
    ax[1].axhline(1.0, color="k", ls="--", lw=1)
    ax[1].set(xlabel="PIT", title="PIT histogram")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- report


def read_record(path: Path) -> dict:
    """One run's JSON record, with a previous release's metric names renamed."""
    return renamed_legacy_record(json.loads(Path(path).read_text()))


def _load_records(out: Path, methods, splits):
    recs = {}
    for m in methods:
        for k in splits:
            f = out / f"{m}_split{k}.json"
            if f.exists():
                recs[(m, k)] = read_record(f)
    return recs


def write_report(out, dataset, methods, splits, plots=True, command=None) -> Path:
    """Build ``<out>/report.md`` from the per-split JSON and NetCDF files in ``out``."""
    import arviz as az

    from ... import diagnostics

    out = Path(out)
    recs = _load_records(out, methods, splits)
    lines = [f"# BNN + mixup on `{dataset}`", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [
        f"Splits: {', '.join(map(str, splits))}. Test NLL is the mean over test points of "
        "-log mean_s p(y | x, draw s) (posterior draws, original units of y); coverage is of the "
        "central 90% posterior-predictive interval. Mean ± std over splits.",
        "",
        "| method | NLL | RMSE | 90% coverage | splits | NLL < ERM (splits) |",
        "|---|---|---|---|---|---|",
    ]
    erm = {k: recs[("erm", k)]["test_nll"] for k in splits if ("erm", k) in recs}
    for m in methods:
        r = [recs[(m, k)] for k in splits if (m, k) in recs]
        if not r:
            continue
        nll = np.array([x["test_nll"] for x in r])
        rmse = np.array([x["test_rmse"] for x in r])
        cov = np.array([x["coverage_90"] for x in r])
        if m == "erm" or not erm:
            wins = "—"
        else:
            paired = [
                (recs[(m, k)]["test_nll"], erm[k]) for k in splits if (m, k) in recs and k in erm
            ]
            wins = f"{sum(a < b for a, b in paired)}/{len(paired)}"
        lines.append(
            f"| {m} | {nll.mean():.3f} ± {nll.std():.3f} | {rmse.mean():.3f} ± {rmse.std():.3f} | "
            f"{cov.mean():.3f} ± {cov.std():.3f} | {len(r)} | {wins} |"
        )
    lines.append("")

    # az.compare and LOO diagnostics on the first split every method has
    common = [k for k in splits if all((m, k) in recs for m in methods)]
    if common:
        k = common[0]
        idatas = {m: diagnostics.load(out / f"{m}_split{k}.nc") for m in methods}
        lines += [
            f"## `az.compare` on the test log-likelihood (split {k})",
            "",
            "PSIS-LOO on the *test* log-likelihood, as ArviZ workflows expect. The test points were "
            "not used for fitting, so this is not a held-out estimate: `elpd_loo` = test lppd - `p_loo`, "
            "and `p_loo` grows with the spread of the per-draw densities (embedding noise adds to it), "
            "so the ranking can differ from the test-NLL table above, which is the primary metric.",
            "",
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cmp = az.compare(idatas, ic="loo") if len(idatas) > 1 else None
            except Exception as e:  # report, don't die, on an ArviZ failure
                cmp = None
                lines += [f"az.compare failed: {e!r}", ""]
            if cmp is not None:
                cols = [
                    c
                    for c in (
                        "rank",
                        "elpd_loo",
                        "p_loo",
                        "elpd_diff",
                        "weight",
                        "se",
                        "dse",
                        "warning",
                    )
                    if c in cmp.columns
                ]
                lines += ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
                for name, row in cmp[cols].iterrows():
                    cells = [
                        f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)
                        for v in row.values
                    ]
                    lines.append(f"| {name} | " + " | ".join(cells) + " |")
                lines.append("")
            lines += [
                "## LOO diagnostics (Pareto k)",
                "",
                "| method | k ≤ 0.5 | 0.5 < k ≤ 0.7 | 0.7 < k ≤ 1 | k > 1 | max k |",
                "|---|---|---|---|---|---|",
            ]
            for m, idata in idatas.items():
                try:
                    loo = az.loo(idata, pointwise=True)
                    pk = np.asarray(loo.pareto_k).ravel()
                    lines.append(
                        f"| {m} | {np.sum(pk <= 0.5)} | {np.sum((pk > 0.5) & (pk <= 0.7))} | "
                        f"{np.sum((pk > 0.7) & (pk <= 1))} | {np.sum(pk > 1)} | {pk.max():.2f} |"
                    )
                except Exception as e:
                    lines.append(f"| {m} | az.loo failed: {e!r} | | | | |")
            lines.append("")
        if plots:
            lines += ["## Posterior predictive checks and calibration", ""]
            for m, idata in idatas.items():
                ppc, pit = _method_plots(out, m, idata)
                lines += [f"### {m}", "", f"![PPC {m}]({ppc.name}) ![PIT {m}]({pit.name})", ""]
                cal = [
                    f"{m}_split{j}_calibration.png"
                    for j in splits
                    if (out / f"{m}_split{j}_calibration.png").exists()
                ]
                if cal:
                    lines += ["Calibration per split: " + ", ".join(f"[{c}]({c})" for c in cal), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _method_plots(out: Path, method: str, idata):
    import matplotlib

    matplotlib.use("Agg")
    import arviz as az
    import matplotlib.pyplot as plt

    ppc_path, pit_path = out / f"ppc_{method}.png", out / f"pit_{method}.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            total = (
                idata["posterior_predictive"].sizes["chain"]
                * idata["posterior_predictive"].sizes["draw"]
            )
            az.plot_ppc(idata, num_pp_samples=min(50, total))
            plt.gcf().suptitle(f"PPC: {method}")
            plt.savefig(ppc_path, dpi=80)
        finally:
            plt.close("all")
        try:
            az.plot_loo_pit(idata, y="y")
            plt.gcf().suptitle(f"LOO-PIT: {method}")
            plt.savefig(pit_path, dpi=80)
        finally:
            plt.close("all")
    return ppc_path, pit_path
