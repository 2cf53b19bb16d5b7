"""The paper's toy regression protocol (METHOD.md section 6), on the NumPyro trainer.

``pyro-mixup bench toy-regression --protocol paper``: ``y = x^3 + N(0, 9)``, 100
training points ``x ~ U(-4, 4)`` split 80/20 into fitting and validation rows;
x and y standardised with the fitting rows' statistics; MLP 128-64, full batch,
Adam lr 0.01 (gradients clipped to global norm 100, as every experiment here),
500 epochs, the best-validation weights kept; M-* methods at the first hidden
layer (d_z = 128); 10 runs; every alpha of the grid {0 (no mixing: the paper's
1e-32), 0.01, 0.05, 0.1, 0.25, 0.5, 1} and beta in {0, 0.01}. Networks with an
embedding predict with the marginal over the embedding
(:func:`pyro_mixup.numpyro.marginal_predictive`), validation included.

Reported: every alpha row of the OOD (and ID) NLL in standardised units, as the
paper's Table 5; per method the (alpha, beta) chosen on validation NLL, with its
NLL in standardised and raw units; the embedding's mean std during training; a
figure of the marginal predictive's mean and 95% band per method (run 0).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from . import data as D
from .methods import METHODS
from .report import PAPER_TABLE5, markdown_table, mean_std, paper_table5

PAPER_ALPHAS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
PAPER_BETAS = (0.0, 0.01)
HIDDEN = (128, 64)
#: Epochs between two entries of a record's ``embed_scale`` trace.
SCALE_EVERY = 25


def toy_splits(runs: int, seed: int, n_val: int = 20) -> list[tuple]:
    """Per run: its :class:`~pyro_mixup.experiments.data.Split` (test = the ID rows),
    and the standardised OOD rows ``(x, y)``."""
    out = []
    for r in range(runs):
        d = D.toy_regression_data(seed + r)
        x, y = d["train"]
        order = np.random.default_rng([seed, r]).permutation(len(x))
        fit, val = order[n_val:], order[:n_val]
        xm, xs, ym, ys = x[fit].mean(), x[fit].std(), y[fit].mean(), y[fit].std()

        def sx(a):
            return ((a - xm) / xs).astype(np.float32)[:, None]  # noqa: B023

        def sy(a):
            return ((a - ym) / ys).astype(np.float32)  # noqa: B023

        split = D.Split(
            "toy",
            r,
            sx(x[fit]),
            sy(y[fit]),
            sx(x[val]),
            sy(y[val]),
            sx(d["id"][0]),
            sy(d["id"][1]),
            np.array([xm]),
            np.array([xs]),
            float(ym),
            float(ys),
        )
        out.append((split, (sx(d["ood"][0]), sy(d["ood"][1]))))
    return out


def run_paper_protocol(
    methods: Sequence[str],
    alphas=PAPER_ALPHAS,
    betas=PAPER_BETAS,
    runs: int = 10,
    epochs: int = 500,
    lr: float = 0.01,
    seed: int = 0,
    test_draws: int = 1000,
    val_draws: int = 100,
    predictive: str = "marginal",
    progress: bool = True,
):
    """Train and score every (method, alpha, beta, run); returns ``(records, curves)``,
    ``curves[(method, alpha, beta)]`` the predictive of run 0 on a grid of x."""
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from . import train_numpyro as T

    data = toy_splits(runs, seed)
    splits = [s for s, _ in data]
    grid_raw = np.linspace(-4.5, 6.5, 221)
    groups = defaultdict(list)
    for m in methods:
        groups[T.same_graph(METHODS[m])].append(m)
    tasks = [
        (b, g)
        for b in betas
        for g in groups.values()
        if b == betas[0] or any(METHODS[m].mixes for m in g)
    ]
    records, curves = [], {}
    for beta, group in tqdm(tasks, desc="toy (paper protocol)", unit="graph", disable=not progress):
        cfg = T.TrainConfig(
            epochs=epochs,
            lr=lr,
            batch_size=0,
            beta=beta,
            predictive=predictive,
            test_draws=test_draws,
            val_draws=val_draws,
        )
        t0 = time.perf_counter()
        net, members, res = T.train_members(splits, group, alphas, cfg, seed, HIDDEN)
        run_of = [i for _, _, i in members]
        ones = [1.0] * len(members)
        scores = {}
        for part, xs, ys in (
            ("id", [s.x_test for s in splits], [s.y_test for s in splits]),
            ("ood", [o[0] for _, o in data], [o[1] for _, o in data]),
        ):
            scores[part] = T.predictive_scores(
                net,
                cfg,
                res["params"],
                res["keys"],
                np.stack([xs[i] for i in run_of]),
                np.stack([ys[i] for i in run_of]),
                ones,
            )
        seconds = time.perf_counter() - t0
        val, best, scale = (np.asarray(res[k]) for k in ("val_nll", "best_epoch", "embed_scale"))
        for j, (m, a, i) in enumerate(members):
            log_ys = math.log(splits[i].y_std)
            rec = dict(
                method=m,
                alpha=a,
                beta=beta if METHODS[m].mixes else 0.0,
                run=i,
                val_nll=float(val[j]),
                best_epoch=int(best[j]),
                seconds=seconds / len(members),
            )
            for part in ("id", "ood"):
                s = scores[part][j]
                rec.update(
                    {
                        # the shared vocabulary: original units of y, as in the demo's records;
                        # the paper's Table 5 is in standardised units
                        f"{part}_nll": s["test_nll"] + log_ys,
                        f"{part}_nll_standardised": s["test_nll"],
                        f"{part}_mse": (s["test_rmse"] * splits[i].y_std) ** 2,
                    }
                )
                if "test_nll_mean_embedding" in s:
                    rec[f"{part}_nll_mean_embedding"] = s["test_nll_mean_embedding"] + log_ys
            rec.update(
                predictive=scores["id"][j]["predictive"],
                predictive_draws=scores["id"][j]["predictive_draws"],
            )
            if net.embedding:
                rec["embed_scale"] = [float(v) for v in scale[j][::SCALE_EVERY]] + [
                    float(scale[j][-1])
                ]
            records.append(rec)
        # the predictive of run 0 on a grid, for the figure
        first = [j for j, (_, _, i) in enumerate(members) if i == 0]
        s0 = splits[0]
        grid = ((grid_raw - s0.x_mean[0]) / s0.x_std[0]).astype(np.float32)[:, None]
        pick = jnp.asarray(first)
        take = jax.tree.map(lambda v: v[pick], res["params"])  # noqa: B023
        marginal = net.embedding and predictive == "marginal"
        _ld, means, stds = T._scorer(
            net, test_draws if marginal else 1, "sample" if marginal else "mean"
        )(
            take,
            res["keys"][pick],
            jnp.asarray(np.stack([grid] * len(first))),
            jnp.zeros((len(first), len(grid))),
        )
        for k, j in enumerate(first):
            m, a, _ = members[j]
            curves[(m, a, beta if METHODS[m].mixes else 0.0)] = dict(
                x=grid[:, 0].tolist(),
                means=np.asarray(means[k]),
                stds=np.asarray(stds[k]),
                x_train=s0.x_fit[:, 0].tolist(),
                y_train=s0.y_fit.tolist(),
                x_mean=float(s0.x_mean[0]),
                x_std=float(s0.x_std[0]),
                y_mean=s0.y_mean,
                y_std=s0.y_std,
            )
    return records, curves


def chosen(records: list[dict], methods: Sequence[str]) -> dict[str, tuple]:
    """Per method the (alpha, beta) of lowest mean validation NLL over runs."""
    out = {}
    for m in methods:
        by = defaultdict(list)
        for r in records:
            if r["method"] == m:
                by[(r["alpha"], r["beta"])].append(r["val_nll"])
        if by:
            out[m] = min(by, key=lambda k: (np.mean(by[k]), k))
    return out


def _cells(records, m, alpha, beta, key):
    return [
        r[key] for r in records if r["method"] == m and r["alpha"] == alpha and r["beta"] == beta
    ]


def alpha_table(records, methods, alphas, beta, key="ood_nll_standardised") -> str:
    rows = []
    for a in alphas:
        row = [f"{a:g}" + (" (none)" if a == 0 else "")]
        for m in methods:
            b = beta if METHODS[m].mixes else 0.0
            vals = _cells(records, m, a if METHODS[m].mixes else 0.0, b, key)
            row.append(mean_std(vals))
        rows.append(row)
    return markdown_table(["alpha"] + list(methods), rows)


def paper_table() -> str:
    from .report import PAPER_TABLE5_METHODS

    rows = [
        [f"{a:g}" + (" (1e-32)" if a == 0 else "")] + [f"{m:.1f} ± {s:.1f}" for m, s in v]
        for a, v in PAPER_TABLE5.items()
    ]
    return markdown_table(["alpha"] + list(PAPER_TABLE5_METHODS), rows)


def chosen_table(records, methods) -> str:
    pick = chosen(records, methods)
    rows = []
    for m, (a, b) in pick.items():
        rs = [r for r in records if r["method"] == m and r["alpha"] == a and r["beta"] == b]
        best = [paper_table5(m, al) for al in PAPER_ALPHAS]
        best = [p for p in best if p is not None]
        paper = f"{min(best)[0]:.1f} ± {min(best)[1]:.1f}" if best else "--"
        scale = "--"
        if "embed_scale" in rs[0]:
            scale = f"{np.mean([r['embed_scale'][0] for r in rs]):.3f} -> {np.mean([r['embed_scale'][-1] for r in rs]):.3f}"
        rows.append(
            [
                m,
                f"{a:g}",
                f"{b:g}",
                mean_std([r["val_nll"] for r in rs]),
                mean_std([r["id_nll_standardised"] for r in rs]),
                mean_std([r["ood_nll_standardised"] for r in rs]),
                mean_std([r["ood_nll"] for r in rs]),
                paper,
                scale,
            ]
        )
    return markdown_table(
        [
            "method",
            "alpha",
            "beta",
            "val NLL",
            "ID NLL",
            "OOD NLL",
            "OOD NLL (raw units)",
            "paper's best OOD NLL (any alpha)",
            "embedding std (first -> last epoch)",
        ],
        rows,
    )


def figure(curves: dict, picks: dict[str, tuple], path: str) -> None:
    """Like the paper's Figure 4: mean and 95% band of the predictive, standardised units, one panel per method."""
    import matplotlib.pyplot as plt

    from .metrics import mixture_quantile
    from .report import panels

    names = [m for m in picks if (m, *picks[m]) in curves]
    fig, axes = panels(len(names))
    for ax, m in zip(axes, names):
        c = curves[(m, *picks[m])]
        x, means, stds = np.asarray(c["x"]), c["means"], c["stds"]
        lo, hi = mixture_quantile(means, stds, 0.025), mixture_quantile(means, stds, 0.975)
        x_raw = x * c["x_std"] + c["x_mean"]
        ax.axvspan((4 - c["x_mean"]) / c["x_std"], x[-1], color="0.92", lw=0)
        ax.plot(x, (x_raw**3 - c["y_mean"]) / c["y_std"], "k--", lw=0.8, label="x^3")
        ax.fill_between(x, lo, hi, color="C0", alpha=0.3, lw=0, label="95%")
        ax.plot(x, means.mean(0), "C0", lw=1.2, label="mean")
        ax.plot(c["x_train"], c["y_train"], "o", ms=2, color="C3", label="train")
        a, b = picks[m]
        ax.set_title(f"{m} (alpha {a:g}, beta {b:g})", fontsize=8)
        ax.set_ylim(-3, 10)
    axes[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(
        "marginal predictive, standardised units; grey: out of distribution (x > 4)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def cmd(args) -> int:
    """``bench toy-regression --protocol paper``: tables, ``toy_paper.json``, ``.md`` and ``.png`` in ``--out``."""
    import os

    from .methods import parse_methods
    from .results import write_json
    from .train_numpyro import use_compile_cache

    methods = parse_methods(args.methods)
    alphas = _floats(args.alphas, "--alphas", zero_ok=True) if args.alphas else PAPER_ALPHAS
    betas = _floats(args.betas, "--betas", zero_ok=True) if args.betas else PAPER_BETAS
    runs = 10 if args.runs is None else args.runs
    if runs < 1 or args.epochs < 1 or args.test_draws < 1 or args.val_draws < 0:
        raise ValueError(
            "--runs, --epochs and --test-draws must be at least 1, --val-draws at least 0"
        )
    use_compile_cache()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    records, curves = run_paper_protocol(
        methods,
        alphas,
        betas,
        runs,
        args.epochs,
        args.lr,
        args.seed,
        args.test_draws,
        args.val_draws,
        args.predictive,
        progress=not args.quiet,
    )
    wall = time.perf_counter() - t0
    picks = chosen(records, methods)
    png, md, js = (os.path.join(args.out, f"toy_paper.{e}") for e in ("png", "md", "json"))
    figure(curves, picks, png)
    settings = dict(
        runs=runs,
        epochs=args.epochs,
        lr=args.lr,
        alphas=list(alphas),
        betas=list(betas),
        seed=args.seed,
        hidden=list(HIDDEN),
        predictive=args.predictive,
        test_draws=args.test_draws,
        val_draws=args.val_draws,
        backend="numpyro",
        batch_size="full",
    )
    parts = [
        f"# Toy regression, the paper's protocol\n\nSettings: {settings}. NLL per point in standardised units "
        "(the paper's) unless marked raw; mean ± std over runs.\n",
        "## Chosen on validation NLL\n",
        chosen_table(records, methods),
    ]
    for b in betas:
        parts += [
            f"\n## OOD NLL by alpha, beta {b:g}\n",
            alpha_table(records, methods, alphas, b, "ood_nll_standardised"),
            f"\n## ID NLL by alpha, beta {b:g}\n",
            alpha_table(records, methods, alphas, b, "id_nll_standardised"),
        ]
    parts += ["\n## The paper's Table 5 (OOD NLL, beta ~ 0)\n", paper_table()]
    text = "\n".join(parts) + "\n"
    with open(md, "w") as f:
        f.write(text)
    write_json(
        js,
        dict(
            settings=settings,
            wall_seconds=wall,
            chosen={m: dict(alpha=a, beta=b) for m, (a, b) in picks.items()},
            records=records,
        ),
    )
    print(text)
    print(f"wall time {wall:.1f} s; wrote {png}, {md} and {js}")
    return 0


def _floats(text: str, flag: str, zero_ok: bool = False) -> tuple:
    try:
        vals = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag} must be a comma list of numbers; got {text!r}") from None
    if not vals or any(not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok) for v in vals):
        raise ValueError(f"{flag} must be a comma list of numbers >= 0; got {text!r}")
    return vals
