"""``pyro-mixup bench uci``: the paper's UCI protocol (METHOD.md section 4).

For every dataset and method: train on every requested split and every alpha
of the grid (heteroscedastic Gaussian MLP 128-32, Adam lr 0.005 after a
global-norm clip, minibatches of 64, best-validation weights kept), append one
record per (split, alpha) to ``OUT/uci.json``; then choose, per dataset and
method, the alpha with the lowest mean validation NLL over the splits, and
write ``OUT/uci.md`` with the test NLL and RMSE of that choice. Re-running
skips the records already in ``uci.json``. A run whose network ends no better
on validation than a constant prediction is reported and fails the command.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import data as D
from .executors import one_thread_per_worker, run_tasks
from .methods import METHODS, PROBMIX_FAMILY, parse_methods
from .report import PAPER_BEST, PAPER_TABLE1, markdown_table, mean_std
from .results import RecordStore, write_json

#: The paper's grid (its toy experiments) plus 0.2.
DEFAULT_ALPHAS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
KEY_FIELDS = (
    "dataset",
    "method",
    "split",
    "alpha",
    "beta",
    "epochs",
    "backend",
    "batch_size",
    "lr",
    "seed",
    "hidden",
    "predictive",
    "predictive_draws",
)
SETTING_FIELDS = ("beta", "epochs", "backend", "batch_size", "lr", "seed", "hidden")


def predictive_of(method: str, predictive: str, test_draws: int) -> dict:
    """The predictive a method's records are scored with: the marginal over
    ``test_draws`` embedding draws for an embedding network under ``--predictive
    marginal``, else the deterministic network (the mean embedding), one draw."""
    if METHODS[method].embedding and predictive == "marginal":
        return dict(predictive="marginal", predictive_draws=int(test_draws))
    return dict(predictive="mean", predictive_draws=1)


def run_config(task: dict) -> list[dict]:
    """Train one dataset's methods of one graph (see ``train_numpyro.same_graph``) on its
    splits for each of its alphas; one record per (method, alpha, split)."""
    ds = D.load_dataset(task["path"], task["dataset"])
    splits = [D.make_split(ds, k, seed=task["seed"]) for k in task["splits"]]
    hidden = tuple(int(h) for h in task["hidden"].split("-"))
    t0 = time.perf_counter()
    results = {}  # (method, alpha, split) -> result
    if task["backend"] == "numpyro":
        from . import train_numpyro as T

        cfg = T.TrainConfig(
            epochs=task["epochs"],
            lr=task["lr"],
            batch_size=task["batch_size"],
            beta=task["beta"],
            predictive=task["predictive"],
            test_draws=task["test_draws"],
        )
        groups = defaultdict(list)  # vmap needs equal shapes
        for s in splits:
            groups[(s.x_fit.shape, s.x_val.shape, s.x_test.shape)].append(s)
        for group in groups.values():
            results.update(
                T.run_members(group, task["methods"], task["alphas"], cfg, task["seed"], hidden)
            )
    else:
        from . import train_pyro as P

        for m in task["methods"]:
            for alpha in task["alphas"] if METHODS[m].mixes else [0.0]:
                for s in splits:
                    results[(m, alpha, s.index)] = P.run_split(
                        s,
                        m,
                        alpha,
                        task["beta"],
                        task["epochs"],
                        task["lr"],
                        hidden,
                        task["seed"],
                        task["batch_size"],
                        predictive=task["predictive"],
                        test_draws=task["test_draws"],
                    )
    seconds = time.perf_counter() - t0
    n_fit = {s.index: len(s.y_fit) for s in splits}
    recs = []
    for (m, alpha, k), r in results.items():
        rec = {"dataset": task["dataset"], "method": m, **{f: task[f] for f in SETTING_FIELDS}}
        rec.update(split=k, alpha=alpha, **r)
        rec["seconds"] = seconds / len(results)  # members trained together share their wall time
        rec["config_seconds"] = seconds
        rec["n_fit"] = n_fit[k]
        recs.append(rec)
    return recs


def plan(
    args, datasets: dict[str, D.Dataset], methods: list[str], alphas, store: RecordStore
) -> list[dict]:
    """One task per (dataset, graph): the methods, alphas and splits that lack a record."""
    from .train_numpyro import same_graph

    tasks = []
    for name, ds in datasets.items():
        splits = D.parse_splits(args.splits, ds.n_splits)
        base = dict(
            dataset=name,
            path=ds.path,
            beta=float(args.beta),
            epochs=int(args.epochs),
            backend=args.backend,
            batch_size=int(args.batch_size),
            lr=float(args.lr),
            seed=int(args.seed),
            hidden="-".join(map(str, args.hidden)),
            predictive=args.predictive,
            test_draws=int(args.test_draws),
        )
        graphs = defaultdict(list)
        for m in methods:
            graphs[same_graph(METHODS[m]) if args.backend == "numpyro" else m].append(m)
        for group in graphs.values():
            todo_methods, todo_alphas, todo_splits = [], set(), set()
            for m in group:
                for a in alphas if METHODS[m].mixes else (0.0,):
                    key = {
                        **base,
                        "method": m,
                        "alpha": float(a),
                        **predictive_of(m, args.predictive, args.test_draws),
                    }
                    missing = [k for k in splits if not store.has({**key, "split": k})]
                    if missing:
                        todo_methods.append(m)
                        todo_alphas.add(float(a))
                        todo_splits.update(missing)
            if todo_methods:
                mixing = sorted(a for a in todo_alphas if a > 0)
                tasks.append(
                    {
                        **base,
                        "methods": list(dict.fromkeys(todo_methods)),
                        "alphas": mixing or sorted(todo_alphas),
                        "splits": sorted(todo_splits),
                        "cost": _cost(ds, todo_methods, mixing, todo_splits),
                    }
                )
    # the longest first: with --jobs, the last task to finish is then a short one
    return sorted(tasks, key=lambda t: -t["cost"])


def _cost(ds: D.Dataset, methods, alphas, splits) -> float:
    """A task's relative cost: rows x members, the embedding's noise about doubling a step."""
    rows = np.mean([len(ds.train_idx[k]) for k in splits])
    members = sum(len(alphas) if METHODS[m].mixes else 1 for m in methods) * len(splits)
    return float(rows * members * (2.5 if METHODS[methods[0]].embedding else 1.0))


def selected(records: list[dict], datasets, methods, splits_of) -> dict:
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


def write_markdown(
    path: str, records: list[dict], datasets, methods, splits_of, settings: dict
) -> dict:
    sel = selected(records, datasets, methods, splits_of)
    lines = ["# UCI regression: test NLL (mean ± std over splits)\n"]
    lines.append(
        "Settings: "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
        + ". alpha chosen per dataset and "
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
                row.append("--")
                row_r.append("--")
                row_a.append("--")
                continue
            nll = [r["test_nll"] for r in s["records"]]
            means[m] = float(np.mean(nll))
            row.append(mean_std(nll))
            row_r.append(mean_std([r["test_rmse"] for r in s["records"]]))
            row_a.append("--" if not METHODS[m].mixes else f"{s['alpha']:g}")
        rows.append(row)
        rows_rmse.append(row_r)
        rows_alpha.append(row_a)
        fam = {m: v for m, v in means.items() if m in PROBMIX_FAMILY and np.isfinite(v)}
        best_m = min(fam, key=fam.get) if fam else None
        paper = PAPER_BEST.get(d)
        summary[d] = dict(
            erm=means.get("erm"),
            best_probmix=None if best_m is None else fam[best_m],
            best_probmix_method=best_m,
            paper_best=None if paper is None else paper[0],
            paper_best_method=None if paper is None else paper[1],
            beats_erm=None
            if best_m is None or "erm" not in means
            else bool(fam[best_m] < means["erm"]),
            beats_paper=None if best_m is None or paper is None else bool(fam[best_m] <= paper[0]),
            splits=len(splits_of[d]),
        )
    lines += ["## Test NLL (ours)\n", markdown_table(header, rows), ""]
    lines += ["## Test RMSE (ours)\n", markdown_table(header, rows_rmse), ""]
    lines += ["## Chosen alpha\n", markdown_table(header, rows_alpha), ""]
    pcols = ["erm", "mix", "m-mix", "lock-m-mix", "probmix", "m-probmix", "lock-m-probmix"]
    prow = [
        [d]
        + [
            ("--" if PAPER_TABLE1.get(d, {}).get(c) is None else f"{PAPER_TABLE1[d][c]:.2f}")
            for c in pcols
        ]
        + [f"{PAPER_BEST[d][0]:.2f} ({PAPER_BEST[d][1]})" if d in PAPER_BEST else "--"]
        for d in datasets
    ]
    lines += [
        "## Paper, Table 1 (test NLL)\n",
        markdown_table(["dataset"] + pcols + ["best in paper"], prow),
        "",
    ]
    srow = []
    for d, s in summary.items():
        srow.append(
            [
                d,
                s["splits"],
                "--" if s["erm"] is None else f"{s['erm']:.2f}",
                "--"
                if s["best_probmix"] is None
                else f"{s['best_probmix']:.2f} ({s['best_probmix_method']})",
                "--"
                if s["paper_best"] is None
                else f"{s['paper_best']:.2f} ({s['paper_best_method']})",
                {True: "yes", False: "no", None: "--"}[s["beats_erm"]],
                {True: "yes", False: "no", None: "--"}[s["beats_paper"]],
            ]
        )
    n_erm = sum(1 for s in summary.values() if s["beats_erm"])
    n_pap = sum(1 for s in summary.values() if s["beats_paper"])
    lines += [
        "## Goals\n",
        markdown_table(
            [
                "dataset",
                "splits",
                "ERM",
                "best ProbMix family",
                "paper best",
                "below ERM",
                "at/below paper best",
            ],
            srow,
        ),
        "",
        f"Best ProbMix-family NLL below ERM on {n_erm} of {len(summary)} datasets; at or below the paper's best on "
        f"{n_pap} of {len(summary)}.",
        "",
    ]
    secs = defaultdict(float)
    for r in records:
        secs[(r["dataset"], r["method"])] += r.get("seconds", 0.0)
    trow = [[d] + [f"{secs[(d, m)]:.0f}" for m in methods] for d in datasets]
    lines += [
        "## Training time (seconds, summed over splits and the alpha grid, this machine)\n",
        markdown_table(header, trow),
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return summary


def run(args) -> int:
    from tqdm import tqdm

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
    if args.test_draws < 1:
        raise ValueError("--test-draws must be at least 1")
    if args.batch_size < 0:
        raise ValueError("--batch-size must be 0 (full batch) or positive")
    if args.backend == "numpyro" and args.batch_size % 2:
        raise ValueError(
            f"--batch-size {args.batch_size}: a minibatch holds anchors and their partners, so it must "
            "be even (or 0 for full batch)"
        )
    splits_of = {n: D.parse_splits(args.splits, ds.n_splits) for n, ds in datasets.items()}
    os.makedirs(args.out, exist_ok=True)
    jpath = os.path.join(args.out, "uci.json")
    # records of the previous release were all scored by the deterministic network (the mean embedding)
    store = RecordStore(jpath, KEY_FIELDS, defaults=dict(predictive="mean", predictive_draws=1))
    tasks = plan(args, datasets, methods, alphas, store)
    if args.backend == "numpyro":
        from .train_numpyro import use_compile_cache

        use_compile_cache()
    print(
        f"uci: {len(datasets)} dataset(s), {len(methods)} method(s), alphas {alphas}, "
        f"{len(tasks)} configuration(s) to train ({len(store.records)} record(s) already in {jpath})",
        flush=True,
    )
    t0 = time.perf_counter()
    bar = tqdm(
        total=sum(len(t["splits"]) * len(t["alphas"]) * len(t["methods"]) for t in tasks),
        unit="run",
        disable=args.quiet,
    )

    def done_task(task, recs):
        store.add(recs)
        bar.set_postfix_str(f"{task['dataset']}/{','.join(task['methods'])}")
        bar.update(len(recs))

    for task, recs in run_tasks(
        tasks,
        run_config,
        executor=args.executor,
        jobs=args.jobs,
        ray_address=args.ray_address,
        init=one_thread_per_worker,  # where configurations run side by side
        init_args=(args.backend,),
    ):
        done_task(task, recs)
    bar.close()
    wall = time.perf_counter() - t0
    settings = dict(
        epochs=args.epochs,
        backend=args.backend,
        batch_size=args.batch_size or "full",
        lr=args.lr,
        hidden="-".join(map(str, args.hidden)),
        beta=args.beta,
        seed=args.seed,
        alphas=",".join(f"{a:g}" for a in alphas),
        predictive=args.predictive,
        test_draws=args.test_draws,
    )
    want = dict(
        epochs=args.epochs,
        backend=args.backend,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        beta=args.beta,
        hidden=settings["hidden"],
    )
    mine = [
        r
        for r in store.records
        if all(r.get(k) == v for k, v in want.items())
        and all(
            r.get(k) == v
            for k, v in predictive_of(r["method"], args.predictive, args.test_draws).items()
        )
        and r["dataset"] in datasets
        and r["split"] in splits_of[r["dataset"]]
        and (r["alpha"] in alphas or not METHODS[r["method"]].mixes)
    ]
    md = os.path.join(args.out, "uci.md")
    summary = write_markdown(md, mine, list(datasets), methods, splits_of, settings)
    print(Path(md).read_text())
    untrained = [r for r in mine if r.get("learned") is False]
    print(f"wall time of this invocation: {wall:.1f} s; wrote {jpath} and {md}")
    write_json(
        os.path.join(args.out, "uci_summary.json"),
        dict(
            summary=summary,
            wall_seconds_last_invocation=wall,
            settings=settings,
            untrained=[
                {k: r[k] for k in ("dataset", "method", "alpha", "split")} for r in untrained
            ],
        ),
    )
    if untrained:
        runs = ", ".join(
            f"{r['dataset']}/{r['method']}/alpha={r['alpha']:g}/split {r['split']}"
            for r in untrained[:10]
        )
        print(
            f"pyro-mixup: error: {len(untrained)} run(s) ended no better on validation than a constant prediction "
            f"(the network did not train): {runs}{' ...' if len(untrained) > 10 else ''}"
        )
        return 1
    return 0
