"""The paper's toy experiments (METHOD.md section 4), trained with the Pyro handlers.

- Regression: ``y = x^3 + eps``, ``eps ~ N(0, 9)``; 100 training points with
  ``x ~ U(-4, 4)``; in-distribution test ``x ~ U(-4, 4)`` and
  out-of-distribution test ``x ~ U(4, 6)``. Heteroscedastic Gaussian MLP
  128-64, full batch, Adam lr 0.01, 500 epochs. Inputs are scaled by 1/4 and
  y by its training std for training; NLL and MSE are reported in the
  original units.
- Classification: three noisy rings ``x = r_k (cos w, sin w) + eps``,
  ``eps ~ N(0, 0.09 I)``, radii 0.5 / 1.5 / 2.5, 100 training points, same
  network and training; accuracy and NLL on 1000 test points.
"""

from __future__ import annotations

import math
import os
import time
from typing import Dict, List

import numpy as np

from .methods import parse_methods
from .report import markdown_table, mean_std, write_json

X_SCALE = 4.0


def toy_regression_data(seed: int, n_train: int = 100, n_test: int = 500):
    rng = np.random.default_rng(seed)

    def draw(lo, hi, n):
        x = rng.uniform(lo, hi, n)
        return x, x**3 + 3.0 * rng.normal(size=n)

    return dict(train=draw(-4, 4, n_train), id=draw(-4, 4, n_test), ood=draw(4, 6, n_test))


def rings_data(seed: int, n_train: int = 100, n_test: int = 1000, noise_var: float = 0.09):
    rng = np.random.default_rng(seed)
    radii = np.array([0.5, 1.5, 2.5])

    def draw(n):
        k = rng.integers(0, 3, n)
        w = rng.uniform(0, 2 * math.pi, n)
        x = radii[k, None] * np.stack([np.cos(w), np.sin(w)], 1) + math.sqrt(noise_var) * rng.normal(size=(n, 2))
        return x, k

    return dict(train=draw(n_train), test=draw(n_test))


def _gauss_nll(mu, sigma, y):
    return float(np.mean(0.5 * math.log(2 * math.pi) + np.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2))


def run_toy_regression(methods: List[str], runs: int, epochs: int, lr: float, alpha: float, beta: float,
                       seed: int, hidden=(128, 64), progress=True):
    from tqdm import tqdm

    from .train_pyro import fit, predict_regression

    grid = np.linspace(-4.5, 6.5, 300)
    records, curves = [], {}
    bar = tqdm(total=len(methods) * runs, desc="toy regression", unit="fit", disable=not progress)
    for m in methods:
        for r in range(runs):
            d = toy_regression_data(seed + r)
            x, y = d["train"]
            ys = float(y.std())
            t0 = time.perf_counter()
            net, losses = fit(m, x[:, None] / X_SCALE, y / ys, hidden=hidden, epochs=epochs, lr=lr,
                              alpha=alpha, beta=beta, seed=seed * 1000 + r)
            rec = dict(method=m, run=r, alpha=alpha if m != "erm" else 0.0, beta=beta, epochs=epochs,
                       seconds=time.perf_counter() - t0, train_loss_first=float(losses[0]),
                       train_loss_last=float(losses[-1]))
            for part in ("id", "ood"):
                xt, yt = d[part]
                mu, sg = predict_regression(net, xt[:, None] / X_SCALE)
                rec[f"{part}_nll"] = _gauss_nll(mu * ys, sg * ys, yt)
                rec[f"{part}_mse"] = float(np.mean((mu * ys - yt) ** 2))
            records.append(rec)
            if r == 0:
                mu, sg = predict_regression(net, grid[:, None] / X_SCALE)
                curves[m] = dict(x=grid.tolist(), mean=(mu * ys).tolist(), std=(sg * ys).tolist(),
                                 x_train=x.tolist(), y_train=y.tolist())
            bar.update(1)
    bar.close()
    return records, curves


def regression_table(records, methods) -> str:
    rows = []
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        rows.append([m] + [mean_std([r[k] for r in rs]) for k in ("id_nll", "ood_nll", "id_mse", "ood_mse")])
    return markdown_table(["method", "ID NLL", "OOD NLL", "ID MSE", "OOD MSE"], rows)


def regression_figure(curves: Dict, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, m in zip(axes.flat, names):
        c = curves[m]
        x, mu, sd = (np.asarray(c[k]) for k in ("x", "mean", "std"))
        ax.axvspan(4, 6.5, color="0.92", lw=0)
        ax.plot(x, x**3, "k--", lw=0.8, label="x^3")
        ax.fill_between(x, mu - 1.96 * sd, mu + 1.96 * sd, color="C0", alpha=0.3, lw=0, label="95%")
        ax.plot(x, mu, "C0", lw=1.2, label="mean")
        ax.plot(c["x_train"], c["y_train"], "o", ms=2, color="C3", label="train")
        ax.set_title(m, fontsize=9)
        ax.set_ylim(-150, 300)
    axes.flat[0].legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_toy_classification(methods, runs, epochs, lr, alpha, beta, seed, hidden=(128, 64), progress=True):
    from tqdm import tqdm

    from .train_pyro import fit, predict_proba

    g = np.linspace(-3.5, 3.5, 120)
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    records, maps = [], {}
    bar = tqdm(total=len(methods) * runs, desc="toy classification", unit="fit", disable=not progress)
    for m in methods:
        for r in range(runs):
            d = rings_data(seed + r)
            x, y = d["train"]
            t0 = time.perf_counter()
            net, losses = fit(m, x, y, classification=True, n_classes=3, hidden=hidden, epochs=epochs, lr=lr,
                              alpha=alpha, beta=beta, seed=seed * 1000 + r)
            xt, yt = d["test"]
            p = predict_proba(net, xt)
            records.append(dict(method=m, run=r, alpha=alpha if m != "erm" else 0.0, beta=beta, epochs=epochs,
                                seconds=time.perf_counter() - t0, accuracy=float(np.mean(p.argmax(1) == yt)),
                                nll=float(-np.mean(np.log(np.clip(p[np.arange(len(yt)), yt], 1e-12, None)))),
                                train_loss_first=float(losses[0]), train_loss_last=float(losses[-1])))
            if r == 0:
                maps[m] = dict(probs=predict_proba(net, grid).reshape(len(g), len(g), 3), x=x, y=y, g=g)
            bar.update(1)
    bar.close()
    return records, maps


def classification_table(records, methods) -> str:
    rows = []
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        rows.append([m, mean_std([r["accuracy"] for r in rs]), mean_std([r["nll"] for r in rs])])
    return markdown_table(["method", "test accuracy", "test NLL"], rows)


def classification_figure(maps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    colors = np.array([[0.85, 0.3, 0.3], [0.3, 0.6, 0.3], [0.3, 0.4, 0.85]])
    for ax, m in zip(axes.flat, names):
        c = maps[m]
        img = c["probs"] @ colors
        g = c["g"]
        ax.imshow(img, origin="lower", extent=(g[0], g[-1], g[0], g[-1]), alpha=0.6)
        ax.contour(g, g, c["probs"].argmax(-1), levels=[0.5, 1.5], colors="k", linewidths=0.6)
        ax.scatter(c["x"][:, 0], c["x"][:, 1], c=colors[c["y"]], s=5, edgecolors="k", linewidths=0.2)
        ax.set_title(m, fontsize=9)
        ax.set_xticks([]); ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=55)
    plt.close(fig)


def _one_thread():
    """Tiny networks: one torch thread is faster than two (and shares the cores politely)."""
    import torch

    torch.set_num_threads(1)


def cmd_toy_regression(args) -> int:
    _one_thread()
    methods = parse_methods(args.methods)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    records, curves = run_toy_regression(methods, args.runs, args.epochs, args.lr, args.alpha, args.beta, args.seed,
                                         progress=not args.quiet)
    wall = time.perf_counter() - t0
    table = regression_table(records, methods)
    fig = os.path.join(args.out, "toy_regression.png")
    regression_figure(curves, fig, "y = x^3 + N(0, 9): predictive mean and 95% band (run 0); grey: OOD x in [4, 6]")
    write_json(os.path.join(args.out, "toy_regression.json"),
               dict(settings=dict(runs=args.runs, epochs=args.epochs, lr=args.lr, alpha=args.alpha, beta=args.beta,
                                  seed=args.seed, hidden=[128, 64]), wall_seconds=wall, records=records))
    print(f"\nToy regression (mean ± std over {args.runs} runs; NLL per point and MSE in original units; "
          f"alpha = {args.alpha:g}, beta = {args.beta:g}, {args.epochs} epochs)\n")
    print(table)
    print(f"\nwall time {wall:.1f} s; wrote {fig} and {os.path.join(args.out, 'toy_regression.json')}")
    return 0


def cmd_toy_classification(args) -> int:
    _one_thread()
    methods = parse_methods(args.methods)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    records, maps = run_toy_classification(methods, args.runs, args.epochs, args.lr, args.alpha, args.beta, args.seed,
                                           progress=not args.quiet)
    wall = time.perf_counter() - t0
    table = classification_table(records, methods)
    fig = os.path.join(args.out, "toy_classification.png")
    classification_figure(maps, fig)
    write_json(os.path.join(args.out, "toy_classification.json"),
               dict(settings=dict(runs=args.runs, epochs=args.epochs, lr=args.lr, alpha=args.alpha, beta=args.beta,
                                  seed=args.seed, hidden=[128, 64]), wall_seconds=wall, records=records))
    print(f"\nToy classification, three noisy rings (mean ± std over {args.runs} runs; alpha = {args.alpha:g})\n")
    print(table)
    print(f"\nwall time {wall:.1f} s; wrote {fig} and {os.path.join(args.out, 'toy_classification.json')}")
    return 0
