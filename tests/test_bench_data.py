"""The UCI loader of ``pyro_mixup.experiments.data``: layout, indices, splits,
standardisation, NLL in original units, and clear errors."""

import math
import os

import numpy as np
import pytest
import torch

from pyro_mixup.experiments import data as D


def tiny(folder, n=30, n_splits=2, seed=0):
    """A dataset whose target sits between two feature columns."""
    rng = np.random.default_rng(seed)
    f0, f1 = rng.normal(size=n), rng.uniform(size=n) * 10
    y = 3 * f0 + rng.normal(size=n) + 100
    data = np.stack([f0, y, f1], 1)
    train, test = [], []
    for k in range(n_splits):
        perm = np.random.default_rng(k).permutation(n)
        test.append(np.sort(perm[: n // 5]))
        train.append(np.sort(perm[n // 5 :]))
    D.write_dataset(str(folder), data, [0, 2], 1, train, test)
    return data, train, test


def test_feature_and_target_columns(tmp_path):
    data, train, test = tiny(tmp_path / "toy")
    ds = D.load_dataset(str(tmp_path / "toy"))
    assert ds.name == "toy" and ds.n_splits == 2
    np.testing.assert_allclose(ds.x, data[:, [0, 2]])
    np.testing.assert_allclose(ds.y, data[:, 1])
    np.testing.assert_array_equal(ds.train_idx[1], train[1])
    np.testing.assert_array_equal(ds.test_idx[1], test[1])


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, list(range(20))),
        ("all", list(range(20))),
        ("0-19", list(range(20))),
        ("0,3,5", [0, 3, 5]),
        ("2-4,7", [2, 3, 4, 7]),
        ("5,1,5", [1, 5]),
    ],
)
def test_parse_splits(spec, expected):
    assert D.parse_splits(spec, 20) == expected


@pytest.mark.parametrize(
    "spec, msg", [("0-20", "out of range"), ("a-b", "bad split"), ("3-1", "end before start")]
)
def test_parse_splits_errors(spec, msg):
    with pytest.raises(ValueError, match=msg):
        D.parse_splits(spec, 20)


def test_split_parts_and_standardisation(tmp_path):
    data, train, test = tiny(tmp_path / "toy", n=50)
    ds = D.load_dataset(str(tmp_path / "toy"))
    s = D.make_split(ds, 1, seed=3)
    # validation is 20% of the training rows; fit + val = train; test untouched
    assert len(s.val_idx) == round(0.2 * len(train[1]))
    np.testing.assert_array_equal(np.sort(np.concatenate([s.fit_idx, s.val_idx])), train[1])
    np.testing.assert_array_equal(s.test_idx, test[1])
    # standardised with the statistics of the fitting rows only
    x_fit, y_fit = data[s.fit_idx][:, [0, 2]], data[s.fit_idx, 1]
    np.testing.assert_allclose(s.x_fit.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s.x_fit.std(0), 1, atol=1e-5)
    np.testing.assert_allclose(
        s.x_test, (data[test[1]][:, [0, 2]] - x_fit.mean(0)) / x_fit.std(0), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        s.y_val, (data[s.val_idx, 1] - y_fit.mean()) / y_fit.std(), rtol=1e-5, atol=1e-5
    )
    assert s.y_mean == pytest.approx(y_fit.mean()) and s.y_std == pytest.approx(y_fit.std())
    # the same seed gives the same validation rows; another seed other rows
    assert np.array_equal(D.make_split(ds, 1, seed=3).val_idx, s.val_idx)
    assert not np.array_equal(D.make_split(ds, 1, seed=4).val_idx, s.val_idx)


def test_constant_feature_is_kept_finite(tmp_path):
    n = 20
    data = np.stack([np.ones(n), np.arange(n, dtype=float), np.arange(n) * 2.0], 1)
    D.write_dataset(str(tmp_path / "c"), data, [0, 1], 2, [np.arange(15)], [np.arange(15, 20)])
    s = D.make_split(D.load_dataset(str(tmp_path / "c")), 0)
    assert np.all(np.isfinite(s.x_fit)) and np.all(s.x_fit[:, 0] == 0)


def test_scores_in_original_units_by_hand():
    # standardised prediction N(0.5, 0.25^2) with y_mean 1, y_std 2 is N(2, 0.5^2) in original units
    from pyro_mixup.experiments.metrics import gaussian_scores

    y_std_units = (3.0 - 1.0) / 2.0
    s = gaussian_scores([0.5], [0.25], [y_std_units], y_scale=2.0)
    by_hand = 0.5 * math.log(2 * math.pi) + math.log(0.5) + 0.5 * ((3.0 - 2.0) / 0.5) ** 2
    assert s["test_nll"] == pytest.approx(by_hand, rel=1e-9)
    mu, sg, y = np.array([0.1, -1.0, 2.0]), np.array([0.3, 1.5, 0.2]), np.array([40.0, -3.0, 61.0])
    ref = (
        -torch.distributions.Normal(torch.tensor(mu * 25 + 10), torch.tensor(sg * 25))
        .log_prob(torch.tensor(y))
        .mean()
    )
    s = gaussian_scores(mu, sg, (y - 10.0) / 25.0, y_scale=25.0)
    assert s["test_nll"] == pytest.approx(float(ref), rel=1e-9)
    # predictions 10 and 35 against 10 and 40
    assert gaussian_scores([0.0, 1.0], [1.0, 1.0], [0.0, 1.2], y_scale=25.0)[
        "test_rmse"
    ] == pytest.approx(math.sqrt((0 + 5**2) / 2))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(D.DataError, match="does not exist"):
        D.load_dataset(str(tmp_path / "nope"))
    with pytest.raises(D.DataError, match="does not exist"):
        D.find_datasets(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(D.DataError, match="no dataset"):
        D.find_datasets(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "breakage, msg",
    [
        (lambda f: os.remove(f / "index_target.txt"), "lacks index_target.txt"),
        (lambda f: (f / "data.txt").write_text("1 2 3\n4 x 6\n"), "non-numeric"),
        (lambda f: (f / "data.txt").write_text("1 2 3\n4 5\n"), "different numbers of columns"),
        (lambda f: (f / "index_features.txt").write_text("0\n7\n"), "out of range"),
        (lambda f: (f / "index_train_0.txt").write_text("0\n1.5\n"), "integers"),
        (lambda f: os.remove(f / "index_test_1.txt"), "index_test_1.txt is missing"),
        (
            lambda f: (f / "index_test_0.txt").write_text((f / "index_train_0.txt").read_text()),
            "overlap",
        ),
    ],
)
def test_malformed_folder_is_a_clear_error(tmp_path, breakage, msg):
    tiny(tmp_path / "toy")
    breakage(tmp_path / "toy")
    with pytest.raises(D.DataError, match=msg):
        D.load_dataset(str(tmp_path / "toy"))
