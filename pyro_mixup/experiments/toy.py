"""The paper's toy experiments (METHOD.md section 4), trained with the Pyro handlers.

- Regression (:func:`~pyro_mixup.experiments.data.toy_regression_data`):
  ``y = x^3 + eps``, ``eps ~ N(0, 9)``; 100 training points with
  ``x ~ U(-4, 4)``; in-distribution test ``x ~ U(-4, 4)`` and
  out-of-distribution test ``x ~ U(4, 6)``. Heteroscedastic Gaussian MLP
  128-64, full batch, Adam lr 0.01, 500 epochs. Inputs are scaled by 1/4 and
  y by its training std for training; NLL and MSE are reported in the
  original units.
- Classification (:func:`~pyro_mixup.experiments.data.rings_data`): three
  noisy rings, 100 training points, same network and training; accuracy and
  NLL on 1000 test points. C-Mixup is not run: it pairs by a kernel on a
  continuous label.

Every network is trained by :func:`pyro_mixup.experiments.train_pyro.fit_net`.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from ..core.predictive import DEFAULT_NUM_DRAWS
from .data import rings_data, toy_regression_data
from .methods import METHOD_NAMES, METHODS, parse_methods
from .metrics import mixture_quantile
from .report import markdown_table, mean_std, panels
from .results import write_json

X_SCALE = 4.0
#: The methods for class labels: all but those pairing by a kernel on the label (C-Mixup).
CLASSIFICATION_METHODS = [n for n in METHOD_NAMES if METHODS[n].pairing != "label"]


def _fits(desc: str, methods: list[str], runs: int, progress: bool):
    """Every (method, run), with a progress bar."""
    from tqdm import tqdm

    with tqdm(total=len(methods) * runs, desc=desc, unit="fit", disable=not progress) as bar:
        for m in methods:
            for r in range(runs):
                yield m, r
                bar.update(1)


def _record(
    m: str, r: int, alpha: float, beta: float, epochs: int, t0: float, losses, **scores
) -> dict:
    return dict(
        method=m,
        run=r,
        alpha=alpha if METHODS[m].mixes else 0.0,
        beta=beta,
        epochs=epochs,
        seconds=time.perf_counter() - t0,
        **scores,
        train_loss_first=float(losses[0]),
        train_loss_last=float(losses[-1]),
    )


def run_toy_regression(
    methods: list[str],
    runs: int,
    epochs: int,
    lr: float,
    alpha: float,
    beta: float,
    seed: int,
    hidden=(128, 64),
    progress=True,
    predictive: str = "marginal",
    test_draws: int = DEFAULT_NUM_DRAWS,
):
    from .train_pyro import fit_net, predictive_draws

    grid = np.linspace(-4.5, 6.5, 300)
    records, curves = [], {}
    for m, r in _fits("toy regression", methods, runs, progress):
        d = toy_regression_data(seed + r)
        x, y = d["train"]
        ys = float(y.std())
        t0 = time.perf_counter()
        net, losses = fit_net(
            m,
            x[:, None] / X_SCALE,
            y / ys,
            hidden=hidden,
            epochs=epochs,
            lr=lr,
            alpha=alpha,
            beta=beta,
            seed=seed * 1000 + r,
        )
        scores = {}
        for part in ("id", "ood"):
            xt, yt = d[part]
            means, _, ld = predictive_draws(
                net, xt[:, None] / X_SCALE, yt / ys, predictive, test_draws
            )
            scores[f"{part}_nll"] = float(-ld.mean()) + math.log(ys)
            scores[f"{part}_mse"] = float(np.mean((means.mean(0) * ys - yt) ** 2))
        scores["predictive_draws"] = len(means)
        records.append(_record(m, r, alpha, beta, epochs, t0, losses, **scores))
        if r == 0:
            means, stds, _ = predictive_draws(
                net, grid[:, None] / X_SCALE, None, predictive, test_draws
            )
            curves[m] = dict(
                x=grid.tolist(),
                means=means * ys,
                stds=stds * ys,
                x_train=x.tolist(),
                y_train=y.tolist(),
            )
    return records, curves


def regression_table(records, methods) -> str:
    rows = []
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        rows.append(
            [m] + [mean_std([r[k] for r in rs]) for k in ("id_nll", "ood_nll", "id_mse", "ood_mse")]
        )
    return markdown_table(["method", "ID NLL", "OOD NLL", "ID MSE", "OOD MSE"], rows)


def regression_figure(curves: dict, path: str, title: str = "") -> None:
    import matplotlib.pyplot as plt

    names = list(curves)
    fig, axes = panels(len(names))
    for ax, m in zip(axes, names):
        c = curves[m]
        x = np.asarray(c["x"])
        lo, hi = (
            mixture_quantile(c["means"], c["stds"], 0.025),
            mixture_quantile(c["means"], c["stds"], 0.975),
        )
        ax.axvspan(4, 6.5, color="0.92", lw=0)
        ax.plot(x, x**3, "k--", lw=0.8, label="x^3")
        ax.fill_between(x, lo, hi, color="C0", alpha=0.3, lw=0, label="95%")
        ax.plot(x, c["means"].mean(0), "C0", lw=1.2, label="mean")
        ax.plot(c["x_train"], c["y_train"], "o", ms=2, color="C3", label="train")
        ax.set_title(m, fontsize=9)
        ax.set_ylim(-150, 300)
    axes[0].legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_toy_classification(
    methods,
    runs,
    epochs,
    lr,
    alpha,
    beta,
    seed,
    hidden=(128, 64),
    progress=True,
    predictive: str = "marginal",
    test_draws: int = DEFAULT_NUM_DRAWS,
):
    from .train_pyro import fit_net, predict_proba

    g = np.linspace(-3.5, 3.5, 120)
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    records, maps = [], {}
    for m, r in _fits("toy classification", methods, runs, progress):
        d = rings_data(seed + r)
        x, y = d["train"]
        t0 = time.perf_counter()
        net, losses = fit_net(
            m,
            x,
            y,
            classification=True,
            n_classes=3,
            hidden=hidden,
            epochs=epochs,
            lr=lr,
            alpha=alpha,
            beta=beta,
            seed=seed * 1000 + r,
        )
        xt, yt = d["test"]
        p = predict_proba(net, xt, predictive, test_draws)
        records.append(
            _record(
                m,
                r,
                alpha,
                beta,
                epochs,
                t0,
                losses,
                test_accuracy=float(np.mean(p.argmax(1) == yt)),
                test_nll=float(-np.mean(np.log(np.clip(p[np.arange(len(yt)), yt], 1e-12, None)))),
            )
        )
        if r == 0:
            maps[m] = dict(
                probs=predict_proba(net, grid, predictive, test_draws).reshape(len(g), len(g), 3),
                x=x,
                y=y,
                g=g,
            )
    return records, maps


def classification_table(records, methods) -> str:
    rows = []
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        rows.append(
            [m, mean_std([r["test_accuracy"] for r in rs]), mean_std([r["test_nll"] for r in rs])]
        )
    return markdown_table(["method", "test accuracy", "test NLL"], rows)


def classification_figure(maps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    colors = np.array([[0.85, 0.3, 0.3], [0.3, 0.6, 0.3], [0.3, 0.4, 0.85]])
    for ax, m in zip(axes.flat, names):
        c = maps[m]
        img = c["probs"] @ colors
        g = c["g"]
        ax.imshow(img, origin="lower", extent=(g[0], g[-1], g[0], g[-1]), alpha=0.6)
        ax.contour(g, g, c["probs"].argmax(-1), levels=[0.5, 1.5], colors="k", linewidths=0.6)
        ax.scatter(
            c["x"][:, 0], c["x"][:, 1], c=colors[c["y"]], s=5, edgecolors="k", linewidths=0.2
        )
        ax.set_title(m, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=55)
    plt.close(fig)


def _command(args, name: str, methods: list[str], run, table, figure, title: str) -> int:
    """Train every method and run, then write ``<out>/<name>.json`` and ``.png`` and print the table."""
    import torch

    torch.set_num_threads(
        1
    )  # tiny networks: one torch thread is faster than two (and shares the cores politely)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    # the predictive of embedding networks (the demo and toy-classification: the defaults)
    extra = dict(
        predictive=getattr(args, "predictive", "marginal"),
        test_draws=getattr(args, "test_draws", DEFAULT_NUM_DRAWS),
    )
    records, plot = run(
        methods,
        args.runs,
        args.epochs,
        args.lr,
        args.alpha,
        args.beta,
        args.seed,
        progress=not args.quiet,
        **extra,
    )
    wall = time.perf_counter() - t0
    fig, path = os.path.join(args.out, f"{name}.png"), os.path.join(args.out, f"{name}.json")
    figure(plot, fig)
    write_json(
        path,
        dict(
            settings=dict(
                runs=args.runs,
                epochs=args.epochs,
                lr=args.lr,
                alpha=args.alpha,
                beta=args.beta,
                seed=args.seed,
                hidden=[128, 64],
                **extra,
            ),
            wall_seconds=wall,
            records=records,
        ),
    )
    print(f"\n{title}\n")
    print(table(records, methods))
    print(f"\nwall time {wall:.1f} s; wrote {fig} and {path}")
    return 0


def cmd_toy_regression(args) -> int:
    return _command(
        args,
        "toy_regression",
        parse_methods(args.methods),
        run_toy_regression,
        regression_table,
        lambda curves, fig: regression_figure(
            curves,
            fig,
            "y = x^3 + N(0, 9): predictive mean and 95% band (run 0); grey: OOD x in [4, 6]",
        ),
        f"Toy regression (mean ± std over {args.runs} runs; NLL per point and MSE in original units; "
        f"alpha = {args.alpha:g}, beta = {args.beta:g}, {args.epochs} epochs; M-ProbMix: "
        f"{getattr(args, 'predictive', 'marginal')} predictive over the embedding)",
    )


def cmd_toy_classification(args) -> int:
    try:
        methods = parse_methods(args.methods, CLASSIFICATION_METHODS)
    except ValueError as e:
        raise ValueError(
            f"{e} (C-Mixup pairs by a kernel on a continuous label; the rings have classes)"
        ) from None
    return _command(
        args,
        "toy_classification",
        methods,
        run_toy_classification,
        classification_table,
        classification_figure,
        f"Toy classification, three noisy rings (mean ± std over {args.runs} runs; alpha = {args.alpha:g})",
    )
