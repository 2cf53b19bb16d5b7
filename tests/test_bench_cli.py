"""``pyro-mixup demo`` / ``bench``: end to end on tiny budgets, and every method trains.

Real Pyro and NumPyro (no mocks); small data and few epochs keep this fast.
"""

import json
import os

import numpy as np
import pytest

from pyro_mixup.bench import data as D
from pyro_mixup.bench.methods import METHOD_NAMES, METHODS, parse_methods
from pyro_mixup.cli import main


def tiny_uci(folder, n=40, n_splits=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=n) + 7
    data = np.concatenate([x, y[:, None]], 1)
    train, test = [], []
    for k in range(n_splits):
        perm = np.random.default_rng(k).permutation(n)
        test.append(np.sort(perm[:8]))
        train.append(np.sort(perm[8:]))
    D.write_dataset(os.path.join(folder, "tinyset"), data, [0, 1, 2], 3, train, test)
    return folder


def test_the_ten_methods():
    assert METHOD_NAMES == ["erm", "mix", "m-mix", "lock-mix", "lock-m-mix", "probmix", "m-probmix",
                            "lock-probmix", "lock-m-probmix", "cmixup-probmix"]
    assert [m for m in METHOD_NAMES if METHODS[m].embedding] == ["m-probmix", "lock-m-probmix"]
    assert parse_methods("probmix, erm") == ["probmix", "erm"]
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("erm,mixup")


@pytest.mark.parametrize("backend, methods", [("pyro", "erm,mix,lock-m-mix,m-probmix,cmixup-probmix"),
                                               ("numpyro", "erm,lock-m-probmix")])
def test_uci_end_to_end_and_resumable(tmp_path, capsys, backend, methods):
    data_dir = tiny_uci(str(tmp_path / "uci"))
    out = str(tmp_path / "out")
    argv = ["bench", "uci", "--data-dir", data_dir, "--splits", "0-1", "--epochs", "4", "--backend", backend,
            "--methods", methods, "--alphas", "0.5", "--out", out, "--quiet"]
    assert main(argv) == 0
    recs = json.load(open(os.path.join(out, "uci.json")))
    names = methods.split(",")
    assert len(recs) == 2 * len(names)
    assert {(r["method"], r["split"]) for r in recs} == {(m, k) for m in names for k in (0, 1)}
    for r in recs:
        assert r["dataset"] == "tinyset" and r["backend"] == backend
        for key in ("test_nll", "test_rmse", "best_epoch", "seconds", "alpha"):
            assert key in r
        assert np.isfinite(r["test_nll"]) and r["test_rmse"] > 0 and 1 <= r["best_epoch"] <= 4
    md = open(os.path.join(out, "uci.md")).read()
    assert "| tinyset |" in md and "Paper, Table 1" in md and "±" in md
    # resumable: a second call trains nothing and keeps the records
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 configuration(s) to train" in capsys.readouterr().out
    assert len(json.load(open(os.path.join(out, "uci.json")))) == len(recs)
    # one more split only trains that split
    assert main(argv[:4] + ["--splits", "0-2"] + argv[6:]) == 0
    assert len(json.load(open(os.path.join(out, "uci.json")))) == 3 * len(names)


def test_uci_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    rc = main(["bench", "uci", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    tiny_uci(str(tmp_path / "uci"))
    os.remove(tmp_path / "uci" / "tinyset" / "index_features.txt")
    rc = main(["bench", "uci", "--data-dir", str(tmp_path / "uci"), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "lacks index_features.txt" in capsys.readouterr().err


def test_demo_tiny(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo", "--runs", "2", "--epochs", "5", "--methods", "erm,m-probmix", "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "OOD NLL" in text and "| m-probmix |" in text
    res = json.load(open(os.path.join(out, "toy_regression.json")))
    assert len(res["records"]) == 4
    assert all(np.isfinite(r["ood_nll"]) and r["ood_mse"] > 0 for r in res["records"])
    assert os.path.getsize(os.path.join(out, "toy_regression.png")) > 1000


def test_toy_classification_tiny(tmp_path, capsys):
    out = str(tmp_path / "rings")
    assert main(["bench", "toy-classification", "--runs", "1", "--epochs", "5", "--methods", "erm,probmix,mix",
                 "--out", out, "--quiet"]) == 0
    res = json.load(open(os.path.join(out, "toy_classification.json")))
    assert [r["method"] for r in res["records"]] == ["erm", "probmix", "mix"]
    assert all(0 <= r["accuracy"] <= 1 and r["nll"] > 0 for r in res["records"])
    assert os.path.getsize(os.path.join(out, "toy_classification.png")) > 1000


def _toy(n=64):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(n, 2))
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.normal(size=n)
    return x, (y - y.mean()) / y.std()


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_lowers_its_training_loss_pyro(method):
    from pyro_mixup.bench.train_pyro import fit

    x, y = _toy()
    _, losses = fit(method, x, y, hidden=(32, 16), epochs=150, lr=0.01, alpha=0.5, seed=0)
    assert np.all(np.isfinite(losses))
    assert losses[-20:].mean() < losses[:5].mean() - 0.2


@pytest.mark.parametrize("method, mode", [("erm", None), ("lock-mix", None), ("m-probmix", None),
                                          ("cmixup-probmix", None), ("lock-m-probmix", "engine")])
def test_methods_lower_their_training_loss_numpyro(method, mode):
    # one method per code path of the JAX trainer (each costs a compilation):
    # no handler, mixup with a table, the embedding layer, probmix with a weighted table;
    # and the fallback that builds the losses from pool_pairs when the handlers are missing
    from pyro_mixup.bench import train_numpyro as T

    x, y = _toy(48)
    xv, yv = _toy(16)
    split = D.Split("toy", 0, x.astype(np.float32), y.astype(np.float32), xv.astype(np.float32),
                    yv.astype(np.float32), xv.astype(np.float32), yv.astype(np.float32),
                    np.zeros(2), np.ones(2), 0.0, 1.0)
    cfg = T.Config(epochs=120, lr=0.01, hidden=(16, 8))
    (r,) = T.run_splits([split], method, 0.5, 0.0, cfg, seed=0, mode=mode)
    assert r["mode"] == (mode or ("handlers" if T.handlers_available() else "engine"))
    assert np.isfinite(r["train_loss_last"]) and np.isfinite(r["test_nll"])
    assert r["train_loss_last"] < r["train_loss_first"] - 0.2
