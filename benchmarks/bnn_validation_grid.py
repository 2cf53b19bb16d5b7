"""Choose the BNN's training settings on held-out training rows, per dataset and method.

``pyro-mixup bnn`` trains every method with one fixed setting (``--kl-weight``,
``--lr``). This script asks whether that setting handicaps a method: for each
dataset, method and setting in a small grid it trains on the first 80% of each
split's training rows (a fixed random permutation per split) and scores the
other 20% (NLL, RMSE, 90% coverage, as ``pyro-mixup bnn`` scores the test set).
The test rows are never read. It prints a table, marks the setting with the
lowest mean validation NLL over the splits per dataset and method (a setting
whose mean is NaN, a diverged fit, is never chosen), writes everything as JSON,
and prints the ``pyro-mixup bnn`` commands that run the chosen settings on the
test rows.

    python benchmarks/bnn_validation_grid.py --dataset yacht,energy --methods erm,m-probmix \\
        --splits 0-4 --grid 0.1:0.005,1:0.005,0.1:0.001,1:0.001 --out results/bnn-grid.json

Each grid entry is ``kl_weight:lr``; the other settings are ``pyro-mixup bnn``'s
defaults (NumPyro backend, full batch, ``--epochs`` 4000, one hidden layer of 50,
alpha 0.5, prior scale 1, 500 draws).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from pyro_mixup import diagnostics
from pyro_mixup.experiments import data as D
from pyro_mixup.experiments.bnn import BNN_METHODS
from pyro_mixup.experiments.bnn import models_numpyro as M
from pyro_mixup.experiments.methods import parse_methods

VALIDATION_FRACTION = 0.2


def inner_split(split_data):
    """(x_fit, y_fit, x_val, y_val): a fixed random 80/20 cut of the split's training rows."""
    n = len(split_data.y_train)
    order = np.random.default_rng(split_data.split).permutation(n)
    cut = n - max(1, round(VALIDATION_FRACTION * n))
    fit, val = order[:cut], order[cut:]
    return (
        split_data.x_train[fit],
        split_data.y_train[fit],
        split_data.x_train[val],
        split_data.y_train[val],
    )


def score(method, inner, splits, kl_weight, lr, args):
    """Mean validation metrics over ``splits`` (trained together, vmapped)."""
    fitted = M.fit_splits(
        method,
        [(x, y) for x, y, _, _ in inner],
        hidden=args.hidden_sizes,
        alpha=args.alpha,
        epochs=args.epochs,
        lr=lr,
        kl_weight=kl_weight,
        seeds=[args.seed + k for k in splits],
        progress=False,
    )
    rows = []
    for k, (model, guide, params, _), (_, _, x_val, y_val) in zip(splits, fitted, inner):
        idata = diagnostics.to_inference_data(
            model,
            guide,
            np.asarray(x_val, np.float32),
            np.asarray(y_val, np.float32),
            params=params,
            num_samples=args.num_samples,
            rng_seed=args.seed + k,
        )
        m = diagnostics.test_metrics(idata, "y", interval=0.9)
        rows.append([m["nll"], m["rmse"], m["coverage"]])
    rows = np.asarray(rows)
    return {
        "val_nll": float(rows[:, 0].mean()),
        "val_nll_std": float(rows[:, 0].std()),
        "val_rmse": float(rows[:, 1].mean()),
        "val_cov90": float(rows[:, 2].mean()),
        "per_split_nll": rows[:, 0].tolist(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=D.default_data_dir())
    p.add_argument("--dataset", default="yacht")
    p.add_argument("--methods", default="erm,m-probmix")
    p.add_argument("--splits", default="0-4")
    p.add_argument(
        "--grid",
        default="0.1:0.005,1:0.005,0.1:0.001,1:0.001",
        help="kl_weight:lr pairs, comma-separated",
    )
    p.add_argument("--epochs", type=int, default=4000)
    p.add_argument("--hidden", default="50", help="hidden widths, comma-separated (default: 50)")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument(
        "--bnn-out",
        default="results/bnn-selected",
        help="--out of the printed pyro-mixup bnn commands",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bnn-grid.json")
    args = p.parse_args(argv)
    args.hidden_sizes = tuple(int(h) for h in str(args.hidden).split(",") if h.strip())
    grid = [
        tuple(float(v) for v in item.split(":")) for item in args.grid.split(",") if item.strip()
    ]
    methods = parse_methods(args.methods, list(BNN_METHODS))
    records = []
    t_start = time.time()
    jobs = [
        (d.strip(), m, g)
        for d in args.dataset.split(",")
        if d.strip()
        for m in methods
        for g in grid
    ]
    for dataset, method, (kl_weight, lr) in tqdm(jobs, desc="settings"):
        ds = D.load_dataset(f"{args.data_dir}/{dataset}", dataset)
        splits = D.parse_splits(args.splits, ds.n_splits)
        inner = [inner_split(D.raw_split(ds, k)) for k in splits]
        t0 = time.time()
        rec = {
            "dataset": dataset,
            "method": method,
            "kl_weight": kl_weight,
            "lr": lr,
            "splits": splits,
            **score(method, inner, splits, kl_weight, lr, args),
            "seconds": round(time.time() - t0, 1),
        }
        records.append(rec)
        tqdm.write(
            f"{dataset:>18} {method:>9} kl_weight {kl_weight:<5g} lr {lr:<6g} val NLL {rec['val_nll']:8.3f}"
            f"  RMSE {rec['val_rmse']:8.3f}  cov90 {rec['val_cov90']:.3f}"
        )
        jax.clear_caches()  # every setting compiles its own functions: keep LLVM's memory bounded
    best = {}
    for r in records:
        key = (r["dataset"], r["method"])
        if np.isfinite(r["val_nll"]) and (key not in best or r["val_nll"] < best[key]["val_nll"]):
            best[key] = r
    lines = [
        "| dataset | method | kl_weight | lr | val NLL | val RMSE | val cov90 | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        chosen = "yes" if best.get((r["dataset"], r["method"])) is r else ""
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['kl_weight']:g} | {r['lr']:g} | {r['val_nll']:.3f} ± "
            f"{r['val_nll_std']:.3f} | {r['val_rmse']:.3f} | {r['val_cov90']:.3f} | {chosen} |"
        )
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "settings": vars(args),
                "records": records,
                "chosen": [
                    {"dataset": d, "method": m, "kl_weight": r["kl_weight"], "lr": r["lr"]}
                    for (d, m), r in best.items()
                ],
                "seconds": round(time.time() - t_start, 1),
            },
            indent=2,
        )
    )
    print(f"wrote {out} ({time.time() - t_start:.0f} s)")
    print("\nthe chosen settings on the test rows (all splits):")
    for (dataset, method), r in best.items():
        print(
            f"pyro-mixup bnn --data-dir {args.data_dir} --dataset {dataset} --methods {method} --backend numpyro "
            f"--epochs {args.epochs} --hidden {args.hidden} --alpha {args.alpha:g} --seed {args.seed} "
            f"--num-samples {args.num_samples} --kl-weight {r['kl_weight']:g} --lr {r['lr']:g} --out {args.bnn_out}"
        )


if __name__ == "__main__":
    main()
