"""A small loader for UCI regression sets in the standard 20-split layout
(``data.txt``, ``index_features.txt``, ``index_target.txt``,
``index_train_<k>.txt``, ``index_test_<k>.txt``, ``n_splits.txt``; 0-based indices).

Kept local to :mod:`pyro_mixup.bnn` so the ``bnn`` command does not depend on
the benchmark package; :func:`load_split` reads any directory in that layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Environment variable naming the folder that holds ``<dataset>/data.txt``.
DATA_ENV = "PYRO_MIXUP_UCI"


def default_data_dir() -> str:
    return os.environ.get(DATA_ENV, os.path.join("..", "shared", "data", "uci"))


@dataclass
class Split:
    dataset: str
    split: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _ints(path: Path) -> np.ndarray:
    return np.atleast_1d(np.loadtxt(path, dtype=np.int64))


def n_splits(data_dir, dataset) -> int:
    root = Path(data_dir) / dataset
    f = root / "n_splits.txt"
    if f.exists():
        return int(np.loadtxt(f))
    return len(list(root.glob("index_train_*.txt")))


def load_split(data_dir, dataset: str, split: int) -> Split:
    """Train/test arrays of one split (float64; y is 1-D)."""
    root = Path(data_dir) / dataset
    if not (root / "data.txt").exists():
        raise FileNotFoundError(f"no UCI data at {root} (expected {root / 'data.txt'})")
    data = np.loadtxt(root / "data.txt", ndmin=2)
    feat = _ints(root / "index_features.txt")
    target = int(_ints(root / "index_target.txt")[0])
    tr = _ints(root / f"index_train_{split}.txt")
    te = _ints(root / f"index_test_{split}.txt")
    x, y = data[:, feat], data[:, target]
    return Split(dataset, split, x[tr], y[tr], x[te], y[te])


def standardisation(x: np.ndarray, y: np.ndarray):
    """(x_loc, x_scale, y_loc, y_scale) from training data; constant columns get scale 1."""
    x_loc, x_scale = x.mean(0), x.std(0)
    x_scale = np.where(x_scale > 0, x_scale, 1.0)
    y_loc, y_scale = float(y.mean()), float(y.std()) or 1.0
    return x_loc, x_scale, y_loc, y_scale
