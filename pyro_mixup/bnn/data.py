"""UCI splits for the BNN, for existing code: :func:`load_split` and :func:`n_splits`
over :mod:`pyro_mixup.experiments.data`, which reads and checks the layout."""

from __future__ import annotations

import os

from ..experiments.data import (
    DATA_ENV,
    RawSplit,
    default_data_dir,
    load_dataset,
    raw_split,
    standardisation,
)

#: A split's training and test rows in original units (``dataset, split, x_train, y_train, x_test, y_test``).
Split = RawSplit

__all__ = ["DATA_ENV", "Split", "default_data_dir", "load_split", "n_splits", "standardisation"]


def n_splits(data_dir: str | os.PathLike[str], dataset: str) -> int:
    """The number of train/test splits of ``<data_dir>/<dataset>``."""
    return load_dataset(os.path.join(data_dir, dataset), dataset).n_splits


def load_split(data_dir: str | os.PathLike[str], dataset: str, split: int) -> RawSplit:
    """Train/test arrays of split ``split`` of ``<data_dir>/<dataset>`` (float64; y is 1-D)."""
    return raw_split(load_dataset(os.path.join(data_dir, dataset), dataset), split)
