"""Tables, JSON and figures of the benchmark commands."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

#: Table 1 of the paper (test NLL); kin8nm and naval as printed there.
PAPER_TABLE1 = {
    "bostonHousing": {
        "erm": 3.37,
        "mix": 3.32,
        "m-mix": 3.72,
        "lock-m-mix": 3.31,
        "probmix": 3.21,
        "m-probmix": 3.12,
        "lock-m-probmix": 3.09,
    },
    "concrete": {
        "erm": 4.50,
        "mix": 3.71,
        "m-mix": 3.81,
        "lock-m-mix": 3.69,
        "probmix": 3.50,
        "m-probmix": 3.35,
        "lock-m-probmix": 3.37,
    },
    "energy": {
        "erm": 1.24,
        "mix": 1.14,
        "m-mix": 1.25,
        "lock-m-mix": 1.00,
        "probmix": 0.77,
        "m-probmix": 0.74,
        "lock-m-probmix": 0.93,
    },
    "kin8nm": {
        "erm": -1.14,
        "mix": -1.01,
        "m-mix": -1.16,
        "lock-m-mix": -1.07,
        "probmix": -1.12,
        "m-probmix": -1.20,
        "lock-m-probmix": -1.18,
    },
    "naval-propulsion-plant": {
        "erm": -5.89,
        "mix": -6.15,
        "m-mix": -6.28,
        "lock-m-mix": -6.47,
        "probmix": -6.36,
        "m-probmix": -6.13,
        "lock-m-probmix": -5.44,
    },
    "power-plant": {
        "erm": 2.86,
        "mix": 2.82,
        "m-mix": 2.84,
        "lock-m-mix": 2.85,
        "probmix": 2.79,
        "m-probmix": 2.82,
        "lock-m-probmix": 2.84,
    },
    "wine-quality-red": {
        "erm": 1.96,
        "mix": 1.84,
        "m-mix": 1.87,
        "lock-m-mix": 1.99,
        "probmix": 1.50,
        "m-probmix": 1.26,
        "lock-m-probmix": 1.15,
    },
    "yacht": {
        "erm": 0.44,
        "mix": 1.70,
        "m-mix": 0.49,
        "lock-m-mix": 0.32,
        "probmix": 1.39,
        "m-probmix": 0.27,
        "lock-m-probmix": 0.26,
    },
}
#: The best number of the paper per dataset, any method (incl. its M-ProbMix* variant).
PAPER_BEST = {
    "bostonHousing": (2.52, "LocK M-ProbMix*"),
    "concrete": (3.07, "LocK M-ProbMix*"),
    "energy": (0.74, "M-ProbMix"),
    "kin8nm": (-1.20, "M-ProbMix"),
    "naval-propulsion-plant": (-6.47, "LocK M-Mix"),
    "power-plant": (2.79, "ProbMix"),
    "wine-quality-red": (1.12, "LocK M-ProbMix*"),
    "yacht": (0.26, "LocK M-ProbMix"),
}

#: Table 5 of the paper (METHOD.md section 6): toy regression, OOD test NLL in standardised
#: units, mean and std over 10 runs, beta ~ 0; alpha 0 is the paper's 1e-32 (no mixing).
PAPER_TABLE5_METHODS = (
    "mix",
    "lock-mix",
    "m-mix",
    "lock-m-mix",
    "probmix",
    "lock-probmix",
    "m-probmix",
    "lock-m-probmix",
)
PAPER_TABLE5 = {
    0.0: (
        (87.1, 10.5),
        (143.2, 31.7),
        (87.1, 10.5),
        (143.2, 31.7),
        (92.6, 13.0),
        (229.4, 133.6),
        (29.5, 6.5),
        (78.6, 62.4),
    ),
    0.01: (
        (98.6, 24.2),
        (110.7, 11.0),
        (162.5, 47.9),
        (152.3, 45.4),
        (78.1, 8.1),
        (132.7, 38.7),
        (27.5, 6.2),
        (18.6, 6.3),
    ),
    0.05: (
        (176.3, 45.5),
        (167.1, 52.8),
        (136.2, 33.5),
        (147.1, 25.8),
        (117.8, 27.0),
        (157.2, 18.1),
        (31.0, 5.4),
        (16.9, 2.2),
    ),
    0.1: (
        (258.9, 51.1),
        (202.1, 41.7),
        (148.5, 29.9),
        (177.8, 26.7),
        (173.1, 27.3),
        (258.4, 52.7),
        (25.9, 6.0),
        (32.8, 8.1),
    ),
    0.25: (
        (270.3, 62.2),
        (207.5, 44.5),
        (140.3, 33.5),
        (204.3, 58.1),
        (302.0, 30.8),
        (120.2, 18.4),
        (22.9, 6.7),
        (19.1, 3.9),
    ),
    0.5: (
        (306.0, 38.9),
        (219.1, 57.7),
        (136.4, 23.8),
        (202.4, 34.3),
        (313.6, 59.6),
        (176.2, 55.0),
        (47.7, 12.2),
        (16.9, 3.0),
    ),
    1.0: (
        (310.3, 52.3),
        (256.7, 85.0),
        (134.1, 34.0),
        (186.3, 42.7),
        (370.1, 54.3),
        (117.4, 18.6),
        (37.1, 13.4),
        (23.8, 5.6),
    ),
}


def paper_table5(method: str, alpha: float):
    """The paper's (mean, std) OOD NLL of ``method`` at ``alpha``, or None."""
    if method not in PAPER_TABLE5_METHODS or alpha not in PAPER_TABLE5:
        return None
    return PAPER_TABLE5[alpha][PAPER_TABLE5_METHODS.index(method)]


def mean_std(values: Sequence[float]) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "--"
    if not np.all(np.isfinite(v)):
        return "nan"
    return f"{v.mean():.2f} ± {v.std():.2f}"


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 2) -> str:
    return "--" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def panels(count: int, width: float = 3.0, height: float = 2.6, max_cols: int = 5):
    """A matplotlib figure of ``count`` panels sharing axes (the spare ones hidden): ``(fig, axes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(max_cols, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), sharex=True, sharey=True, squeeze=False
    )
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat[:count])
