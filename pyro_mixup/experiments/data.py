"""UCI regression data in the standard split layout (METHOD.md section 5).

A dataset folder holds ``data.txt`` (whitespace-separated rows),
``index_features.txt`` and ``index_target.txt`` (0-based column indices),
``index_train_<k>.txt`` / ``index_test_<k>.txt`` (0-based row indices) and
``n_splits.txt``. :func:`load_dataset` reads any folder in that layout,
:func:`make_split` builds one split (20% of the training rows held out for
validation, inputs and targets standardised on the part used for fitting) and
the toy data sets are drawn by :func:`toy_regression_data` and :func:`rings_data`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Environment variable naming the folder that holds one sub-folder per dataset.
DATA_ENV = "PYRO_MIXUP_UCI_DIR"

REQUIRED = ("data.txt", "index_features.txt", "index_target.txt")


class DataError(ValueError):
    """A dataset folder is missing or not in the UCI split layout."""


@dataclass
class Dataset:
    name: str
    path: str
    x: np.ndarray  # (n, d) float64
    y: np.ndarray  # (n,) float64
    train_idx: list[np.ndarray]
    test_idx: list[np.ndarray]

    @property
    def n_splits(self) -> int:
        return len(self.train_idx)


@dataclass
class Split:
    """One split, standardised on ``fit`` (the training rows minus validation)."""

    dataset: str
    index: int
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    fit_idx: np.ndarray = None  # rows of the dataset in each part
    val_idx: np.ndarray = None
    test_idx: np.ndarray = None

    def y_original(self, y_std_units):
        return np.asarray(y_std_units) * self.y_std + self.y_mean


#: Where the data sits beside a checkout of this repository (used when $PYRO_MIXUP_UCI_DIR is unset).
SHARED_DATA_DIR = os.path.join("..", "shared", "data", "uci")


def default_data_dir() -> str | None:
    """``$PYRO_MIXUP_UCI_DIR``, else ``../shared/data/uci`` if it exists, else None."""
    return os.environ.get(DATA_ENV) or (SHARED_DATA_DIR if os.path.isdir(SHARED_DATA_DIR) else None)


@dataclass
class RawSplit:
    """Training and test rows of one split in original units (the BNN standardises inside its model)."""

    dataset: str
    split: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def raw_split(ds: Dataset, k: int) -> RawSplit:
    if not 0 <= k < ds.n_splits:
        raise ValueError(f"{ds.name} has splits 0..{ds.n_splits - 1}; got {k}")
    tr, te = ds.train_idx[k], ds.test_idx[k]
    return RawSplit(ds.name, k, ds.x[tr], ds.y[tr], ds.x[te], ds.y[te])


def standardisation(x: np.ndarray, y: np.ndarray):
    """(x_loc, x_scale, y_loc, y_scale) of training data by :func:`standardiser`."""
    x_loc, x_scale = standardiser(np.asarray(x, np.float64))
    y_loc, y_scale = standardiser(np.asarray(y, np.float64))
    return x_loc, x_scale, float(y_loc), float(y_scale)


def find_datasets(data_dir: str) -> list[str]:
    """Names of the sub-folders of ``data_dir`` that hold a ``data.txt``, sorted."""
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError(
            f"data folder {data_dir!r} does not exist; pass --data-dir pointing at a folder with one "
            f"sub-folder per dataset in the UCI split layout (or set {DATA_ENV})"
        )
    names = sorted(
        n for n in os.listdir(data_dir) if os.path.isfile(os.path.join(data_dir, n, "data.txt"))
    )
    if not names:
        raise DataError(
            f"no dataset in {data_dir!r}: expected sub-folders holding data.txt, index_features.txt, "
            "index_target.txt, index_train_<k>.txt, index_test_<k>.txt"
        )
    return names


def _read_matrix(path: str) -> np.ndarray:
    try:
        rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not rows:
        raise DataError(f"{path} is empty")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise DataError(f"{path}: rows have different numbers of columns ({sorted(widths)})")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: non-numeric value ({e})") from None


def _read_indices(path: str, upper: int, what: str) -> np.ndarray:
    try:
        text = Path(path).read_text().split()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    try:
        vals = np.array([float(t) for t in text])
    except ValueError:
        raise DataError(f"{path}: {what} indices must be integers") from None
    if vals.size == 0:
        raise DataError(f"{path}: no {what} indices")
    if np.any(vals != np.round(vals)):
        raise DataError(f"{path}: {what} indices must be integers")
    idx = vals.astype(np.int64)
    if idx.min() < 0 or idx.max() >= upper:
        raise DataError(
            f"{path}: {what} index out of range [0, {upper}) (0-based indices expected)"
        )
    return idx


def load_dataset(path: str, name: str | None = None) -> Dataset:
    """Read one dataset folder; raises :class:`DataError` with the reason when it is not in the layout."""
    name = name or os.path.basename(os.path.normpath(path))
    if not os.path.isdir(path):
        raise DataError(f"dataset folder {path!r} does not exist")
    missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise DataError(f"dataset folder {path!r} lacks {', '.join(missing)} (UCI split layout)")
    data = _read_matrix(os.path.join(path, "data.txt"))
    n, ncol = data.shape
    feats = _read_indices(os.path.join(path, "index_features.txt"), ncol, "feature column")
    target = _read_indices(os.path.join(path, "index_target.txt"), ncol, "target column")
    if target.size != 1:
        raise DataError(f"{path}/index_target.txt: expected one target column, got {target.size}")
    if np.isin(target, feats).any():
        raise DataError(f"{path}: the target column is also listed as a feature")
    nfile = os.path.join(path, "n_splits.txt")
    if os.path.isfile(nfile):
        try:
            n_splits = int(Path(nfile).read_text().split()[0])
        except (ValueError, IndexError):
            raise DataError(f"{nfile}: expected the number of splits") from None
    else:
        n_splits = len([f for f in os.listdir(path) if re.fullmatch(r"index_train_\d+\.txt", f)])
    if n_splits < 1:
        raise DataError(f"dataset folder {path!r} has no splits (index_train_<k>.txt)")
    train, test = [], []
    for k in range(n_splits):
        tr = os.path.join(path, f"index_train_{k}.txt")
        te = os.path.join(path, f"index_test_{k}.txt")
        for f in (tr, te):
            if not os.path.isfile(f):
                raise DataError(f"split {k} of {name}: {f} is missing")
        a, b = _read_indices(tr, n, "row"), _read_indices(te, n, "row")
        if np.intersect1d(a, b).size:
            raise DataError(f"split {k} of {name}: training and test rows overlap")
        train.append(a)
        test.append(b)
    return Dataset(name, path, data[:, feats], data[:, target[0]], train, test)


def parse_splits(spec: str | None, n_splits: int) -> list[int]:
    """``None``/"all" -> every split; "0-19", "0,3,5", "0-2,7" -> those (checked against ``n_splits``)."""
    if spec is None or str(spec).strip().lower() in ("", "all"):
        return list(range(n_splits))
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"bad split range {part!r}: end before start")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            out.append(int(part))
        else:
            raise ValueError(f"bad split list {spec!r}: use ranges and lists such as 0-19 or 0,3,5")
    bad = [k for k in out if k >= n_splits]
    if bad:
        raise ValueError(
            f"split(s) {bad} out of range: the data has {n_splits} splits (0-{n_splits - 1})"
        )
    return sorted(dict.fromkeys(out))


def standardiser(a: np.ndarray):
    """Column means and stds of ``a``; a column whose std is below 1e-6 of its magnitude counts
    as constant (std 1, so it stays centred at 0). Why relative: naval has a column with std
    2e-13 around 1; models compute in float32, whose rounding (~1e-7 of the value) divided by
    that std would turn the column into inputs of size 1e5."""
    mean = a.mean(0)
    std = a.std(0)
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean, std


def make_split(ds: Dataset, k: int, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Split ``k``: a seeded ``val_fraction`` of its training rows is held out for validation;
    x and y are standardised with the mean and std of the remaining (fitting) rows."""
    train = ds.train_idx[k]
    rng = np.random.default_rng([seed, k])
    order = rng.permutation(len(train))
    n_val = round(val_fraction * len(train))
    val, fit = train[order[:n_val]], train[order[n_val:]]
    xm, xs = standardiser(ds.x[fit])
    ym, ys = standardiser(ds.y[fit])
    ym, ys = float(ym), float(ys)

    def sx(i):
        return ((ds.x[i] - xm) / xs).astype(np.float32)

    def sy(i):
        return ((ds.y[i] - ym) / ys).astype(np.float32)

    test = ds.test_idx[k]
    return Split(
        ds.name,
        k,
        sx(fit),
        sy(fit),
        sx(val),
        sy(val),
        sx(test),
        sy(test),
        xm,
        xs,
        ym,
        ys,
        fit,
        val,
        test,
    )


def load_all(data_dir: str, names: Sequence[str] | None = None) -> dict[str, Dataset]:
    found = find_datasets(data_dir)
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise DataError(f"dataset(s) {unknown} not in {data_dir!r}; found: {', '.join(found)}")
    else:
        names = found
    return {n: load_dataset(os.path.join(data_dir, n), n) for n in names}


def write_dataset(
    folder: str,
    data: np.ndarray,
    features: Sequence[int],
    target: int,
    train: Sequence[Sequence[int]],
    test: Sequence[Sequence[int]],
) -> str:
    """Write a dataset in the UCI split layout (e.g. to benchmark your own data)."""
    os.makedirs(folder, exist_ok=True)
    np.savetxt(os.path.join(folder, "data.txt"), np.asarray(data, dtype=np.float64))
    np.savetxt(
        os.path.join(folder, "index_features.txt"), np.asarray(features, dtype=np.int64), fmt="%d"
    )
    np.savetxt(
        os.path.join(folder, "index_target.txt"), np.asarray([target], dtype=np.int64), fmt="%d"
    )
    for k, (a, b) in enumerate(zip(train, test)):
        np.savetxt(
            os.path.join(folder, f"index_train_{k}.txt"), np.asarray(a, dtype=np.int64), fmt="%d"
        )
        np.savetxt(
            os.path.join(folder, f"index_test_{k}.txt"), np.asarray(b, dtype=np.int64), fmt="%d"
        )
    with open(os.path.join(folder, "n_splits.txt"), "w") as f:
        f.write(f"{len(train)}\n")
    return folder


def toy_regression_data(seed: int, n_train: int = 100, n_test: int = 500):
    """The paper's toy regression: ``y = x^3 + N(0, 9)``; train and in-distribution
    ``x ~ U(-4, 4)``, out-of-distribution ``x ~ U(4, 6)``."""
    rng = np.random.default_rng(seed)

    def draw(lo, hi, n):
        x = rng.uniform(lo, hi, n)
        return x, x**3 + 3.0 * rng.normal(size=n)

    return dict(train=draw(-4, 4, n_train), id=draw(-4, 4, n_test), ood=draw(4, 6, n_test))


def rings_data(seed: int, n_train: int = 100, n_test: int = 1000, noise_var: float = 0.09):
    """Three noisy rings of radii 0.5, 1.5, 2.5 (classes 0, 1, 2)."""
    rng = np.random.default_rng(seed)
    radii = np.array([0.5, 1.5, 2.5])

    def draw(n):
        k = rng.integers(0, 3, n)
        w = rng.uniform(0, 2 * math.pi, n)
        x = radii[k, None] * np.stack([np.cos(w), np.sin(w)], 1) + math.sqrt(
            noise_var
        ) * rng.normal(size=(n, 2))
        return x, k

    return dict(train=draw(n_train), test=draw(n_test))
