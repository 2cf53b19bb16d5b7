"""UCI splits for the BNN experiments, read through the benchmark loader
(:mod:`pyro_mixup.bench.data`), which validates the layout and gives clear
errors; this module only reshapes its output for :mod:`pyro_mixup.bnn`."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..bench.data import DATA_ENV, load_dataset, standardiser

__all__ = ["DATA_ENV", "Split", "default_data_dir", "n_splits", "load_split", "standardisation"]


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


def n_splits(data_dir, dataset) -> int:
    return load_dataset(os.path.join(data_dir, dataset), dataset).n_splits


def load_split(data_dir, dataset: str, split: int) -> Split:
    """Train/test arrays of one split (float64; y is 1-D)."""
    ds = load_dataset(os.path.join(data_dir, dataset), dataset)
    if not 0 <= split < ds.n_splits:
        raise ValueError(f"{dataset} has splits 0..{ds.n_splits - 1}; got {split}")
    tr, te = ds.train_idx[split], ds.test_idx[split]
    return Split(dataset, split, ds.x[tr], ds.y[tr], ds.x[te], ds.y[te])


def standardisation(x: np.ndarray, y: np.ndarray):
    """(x_loc, x_scale, y_loc, y_scale) from training data, by the benchmark's rule
    (:func:`pyro_mixup.bench.data.standardiser`): (near-)constant columns get scale 1."""
    x_loc, x_scale = standardiser(np.asarray(x, np.float64))
    y_loc, y_scale = standardiser(np.asarray(y, np.float64))
    return x_loc, x_scale, float(y_loc), float(y_scale)
