"""``pyro-mixup bench uci``: the paper's UCI protocol (METHOD.md section 4).

For every dataset, method and alpha of the grid: train on every requested
split (heteroscedastic Gaussian MLP 128-32, Adam lr 0.005, best-validation
epoch kept), append one record per split to ``OUT/uci.json``; then choose,
per dataset and method, the alpha with the lowest mean validation NLL over the
splits, and write ``OUT/uci.md`` with the test NLL and RMSE of that choice.
Re-running skips the records already in ``uci.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from typing import Dict, List

import numpy as np

from . import data as D
from .methods import METHODS, PROBMIX_FAMILY
from .report import PAPER_BEST, PAPER_TABLE1, markdown_table, mean_std, write_json

#: The paper's grid (its toy experiments) plus 0.2; docs/results.md used it on the four small sets.
DEFAULT_ALPHAS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
KEY_FIELDS = ("dataset", "method", "split", "alpha", "beta", "epochs", "backend", "batch_size", "lr", "seed")


def record_key(r: Dict):
    return tuple(r.get(k) for k in KEY_FIELDS)


def load_records(path: str) -> List[Dict]:
    if not os.path.exists(path):
        return []
    try:
        recs = json.load(open(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); move it away to start afresh") from None
    if not isinstance(recs, list):
        raise ValueError(f"{path} does not hold a list of records")
    return recs


def _worker_init():  # one XLA/torch thread per worker when --jobs > 1
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def run_config(task: Dict) -> List[Dict]:
    """Train one (dataset, method, alpha) on its splits; one record per split."""
    ds = D.load_dataset(task["path"], task["dataset"])
    splits = [D.make_split(ds, k, seed=task["seed"]) for k in task["splits"]]
    t0 = time.perf_counter()
    if task["backend"] == "numpyro":
        from . import train_numpyro as T

        cfg = T.Config(epochs=task["epochs"], lr=task["lr"], batch_size=task["batch_size"], hidden=tuple(task["hidden"]))
        # vmap needs equal shapes: group splits by their sizes
        groups = defaultdict(list)
        for s in splits:
            groups[(s.x_fit.shape, s.x_val.shape, s.x_test.shape)].append(s)
        results = {}
        for group in groups.values():
            for s, r in zip(group, T.run_splits(group, task["method"], task["alpha"], task["beta"], cfg, task["seed"])):
                results[s.index] = r
        out = [results[s.index] for s in splits]
    else:
        from . import train_pyro as P

        out = [
            P.run_split(s, task["method"], task["alpha"], task["beta"], task["epochs"], task["lr"], tuple(task["hidden"]), task["seed"])
            for s in splits
        ]
    seconds = time.perf_counter() - t0
    recs = []
    for s, r in zip(splits, out):
        rec = {k: task[k] for k in ("dataset", "method", "alpha", "beta", "epochs", "backend", "batch_size", "lr", "seed")}
        rec.update(split=s.index, **r)
        rec["seconds"] = seconds / len(splits)  # vmapped splits share their wall time
        rec["config_seconds"] = seconds
        rec["n_fit"] = int(len(s.y_fit))
        recs.append(rec)
    return recs


def plan(args, datasets: Dict[str, D.Dataset], methods: List[str], alphas, done) -> List[Dict]:
    tasks = []
    for name, ds in datasets.items():
        splits = D.parse_splits(args.splits, ds.n_splits)
        for m in methods:
            for a in (alphas if METHODS[m].mixes else (0.0,)):
                base = dict(dataset=name, path=ds.path, method=m, alpha=float(a), beta=float(args.beta),
                            epochs=int(args.epochs), backend=args.backend, batch_size=int(args.batch_size),
                            lr=float(args.lr), seed=int(args.seed), hidden=list(args.hidden))
                todo = [k for k in splits if record_key({**base, "split": k}) not in done]
                if todo:
                    tasks.append({**base, "splits": todo})
    return tasks


def selected(records: List[Dict], datasets, methods, splits_of) -> Dict:
    """Per (dataset, method): the alpha with the lowest mean validation NLL among the alphas
    that have every requested split, and that alpha's records."""
    by = defaultdict(lambda: defaultdict(dict))
    for r in records:
        by[(r["dataset"], r["method"])][r["alpha"]][r["split"]] = r
    out = {}
    for d in datasets:
        want = set(splits_of[d])
        for m in methods:
            best = None
            for a, recs in by.get((d, m), {}).items():
                if not want.issubset(recs):
                    continue
                rs = [recs[k] for k in sorted(want)]
                v = np.mean([r["val_nll"] for r in rs])
                if not np.isfinite(v):
                    v = np.inf
                if best is None or v < best[0]:
                    best = (v, a, rs)
            if best is not None:
                out[(d, m)] = dict(alpha=best[1], records=best[2])
    return out


def write_markdown(path: str, records: List[Dict], datasets, methods, splits_of, settings: Dict) -> Dict:
    sel = selected(records, datasets, methods, splits_of)
    lines = ["# UCI regression: test NLL (mean ± std over splits)\n"]
    lines.append(
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ". alpha chosen per dataset and "
        "method by the mean validation NLL over the splits (table 'Chosen alpha'). Paper: Table 1 of El-Laham et al. "
        "(UAI 2025); `--` where the paper has no column.\n"
    )
    header = ["dataset"] + methods
    rows, rows_rmse, rows_alpha = [], [], []
    summary = {}
    for d in datasets:
        row, row_r, row_a = [d], [d], [d]
        means = {}
        for m in methods:
            s = sel.get((d, m))
            if s is None:
                row.append("--"); row_r.append("--"); row_a.append("--")
                continue
            nll = [r["test_nll"] for r in s["records"]]
            means[m] = float(np.mean(nll))
            row.append(mean_std(nll))
            row_r.append(mean_std([r["test_rmse"] for r in s["records"]]))
            row_a.append("--" if not METHODS[m].mixes else f"{s['alpha']:g}")
        rows.append(row); rows_rmse.append(row_r); rows_alpha.append(row_a)
        fam = {m: v for m, v in means.items() if m in PROBMIX_FAMILY and np.isfinite(v)}
        best_m = min(fam, key=fam.get) if fam else None
        paper = PAPER_BEST.get(d)
        summary[d] = dict(
            erm=means.get("erm"),
            best_probmix=None if best_m is None else fam[best_m],
            best_probmix_method=best_m,
            paper_best=None if paper is None else paper[0],
            paper_best_method=None if paper is None else paper[1],
            beats_erm=None if best_m is None or "erm" not in means else bool(fam[best_m] < means["erm"]),
            beats_paper=None if best_m is None or paper is None else bool(fam[best_m] <= paper[0]),
            splits=len(splits_of[d]),
        )
    lines += ["## Test NLL (ours)\n", markdown_table(header, rows), ""]
    lines += ["## Test RMSE (ours)\n", markdown_table(header, rows_rmse), ""]
    lines += ["## Chosen alpha\n", markdown_table(header, rows_alpha), ""]
    pcols = ["erm", "mix", "m-mix", "lock-m-mix", "probmix", "m-probmix", "lock-m-probmix"]
    prow = [[d] + [("--" if PAPER_TABLE1.get(d, {}).get(c) is None else f"{PAPER_TABLE1[d][c]:.2f}") for c in pcols]
            + [f"{PAPER_BEST[d][0]:.2f} ({PAPER_BEST[d][1]})" if d in PAPER_BEST else "--"] for d in datasets]
    lines += ["## Paper, Table 1 (test NLL)\n", markdown_table(["dataset"] + pcols + ["best in paper"], prow), ""]
    srow = []
    for d, s in summary.items():
        srow.append([d, s["splits"], "--" if s["erm"] is None else f"{s['erm']:.2f}",
                     "--" if s["best_probmix"] is None else f"{s['best_probmix']:.2f} ({s['best_probmix_method']})",
                     "--" if s["paper_best"] is None else f"{s['paper_best']:.2f} ({s['paper_best_method']})",
                     {True: "yes", False: "no", None: "--"}[s["beats_erm"]],
                     {True: "yes", False: "no", None: "--"}[s["beats_paper"]]])
    n_erm = sum(1 for s in summary.values() if s["beats_erm"])
    n_pap = sum(1 for s in summary.values() if s["beats_paper"])
    lines += ["## Goals\n", markdown_table(
        ["dataset", "splits", "ERM", "best ProbMix family", "paper best", "below ERM", "at/below paper best"], srow), "",
        f"Best ProbMix-family NLL below ERM on {n_erm} of {len(summary)} datasets; at or below the paper's best on "
        f"{n_pap} of {len(summary)}.", ""]
    secs = defaultdict(float)
    for r in records:
        secs[(r["dataset"], r["method"])] += r.get("seconds", 0.0)
    trow = [[d] + [f"{secs[(d, m)]:.0f}" for m in methods] for d in datasets]
    lines += ["## Training time (seconds, summed over splits and the alpha grid, this machine)\n",
              markdown_table(header, trow), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return summary


def run(args) -> int:
    from tqdm import tqdm

    from .methods import parse_methods

    data_dir = args.data_dir or D.default_data_dir()
    if not data_dir:
        raise D.DataError(f"no data folder: pass --data-dir DIR (or set {D.DATA_ENV})")
    names = [s.strip() for s in args.datasets.split(",")] if args.datasets else None
    datasets = D.load_all(data_dir, names)
    methods = parse_methods(args.methods)
    alphas = [float(a) for a in str(args.alphas).split(",") if a.strip()]
    if not alphas or any(not (a > 0 and math.isfinite(a)) for a in alphas):
        raise ValueError(f"--alphas must be a comma list of positive numbers; got {args.alphas!r}")
    if args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    splits_of = {n: D.parse_splits(args.splits, ds.n_splits) for n, ds in datasets.items()}
    os.makedirs(args.out, exist_ok=True)
    jpath = os.path.join(args.out, "uci.json")
    records = load_records(jpath)
    done = {record_key(r) for r in records}
    tasks = plan(args, datasets, methods, alphas, done)
    print(f"uci: {len(datasets)} dataset(s), {len(methods)} method(s), alphas {alphas}, "
          f"{len(tasks)} configuration(s) to train ({len(records)} record(s) already in {jpath})", flush=True)
    t0 = time.perf_counter()
    bar = tqdm(total=sum(len(t["splits"]) for t in tasks), unit="run", disable=args.quiet)

    def done_task(task, recs):
        records.extend(recs)
        write_json(jpath, records)
        bar.set_postfix_str(f"{task['dataset']}/{task['method']}/a={task['alpha']:g}")
        bar.update(len(recs))

    if args.jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
            futs = {ex.submit(run_config, t): t for t in tasks}
            for f in as_completed(futs):
                done_task(futs[f], f.result())
    else:
        for t in tasks:
            done_task(t, run_config(t))
    bar.close()
    wall = time.perf_counter() - t0
    settings = dict(epochs=args.epochs, backend=args.backend, batch_size=args.batch_size or "full", lr=args.lr,
                    hidden="-".join(map(str, args.hidden)), beta=args.beta, seed=args.seed, alphas=",".join(f"{a:g}" for a in alphas))
    mine = [r for r in records if r["epochs"] == args.epochs and r["backend"] == args.backend
            and r["batch_size"] == args.batch_size and r["lr"] == args.lr and r["seed"] == args.seed
            and r["beta"] == args.beta and (r["alpha"] in alphas or not METHODS[r["method"]].mixes)]
    summary = write_markdown(os.path.join(args.out, "uci.md"), mine, list(datasets), methods, splits_of, settings)
    print(open(os.path.join(args.out, "uci.md")).read())
    print(f"wall time of this invocation: {wall:.1f} s; wrote {jpath} and {os.path.join(args.out, 'uci.md')}")
    write_json(os.path.join(args.out, "uci_summary.json"), dict(summary=summary, wall_seconds_last_invocation=wall, settings=settings))
    return 0
