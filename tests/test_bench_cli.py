"""``pyro-mixup bench uci`` end to end, and the NumPyro trainer it runs.

Real NumPyro SVI and Pyro (no mocks); small data and few epochs keep this fast.
The toy commands are tested in ``tests/test_toy.py``.
"""

import json
import os

import numpy as np
import pytest

from pyro_mixup.cli import main
from pyro_mixup.experiments import data as D
from pyro_mixup.experiments.methods import METHOD_NAMES, METHODS, parse_methods
from pyro_mixup.experiments.metrics import unknown_metric_names


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
    assert METHOD_NAMES == [
        "erm",
        "mix",
        "m-mix",
        "lock-mix",
        "lock-m-mix",
        "probmix",
        "m-probmix",
        "lock-probmix",
        "lock-m-probmix",
        "cmixup-probmix",
    ]
    assert [m for m in METHOD_NAMES if METHODS[m].embedding] == ["m-probmix", "lock-m-probmix"]
    # the linear-pooling ablations are registered but not in the default set
    assert [m for m in METHODS if m not in METHOD_NAMES] == [
        "m-probmix-linear",
        "lock-m-probmix-linear",
        "m-probmix-star",
        "lock-m-probmix-star",
    ]
    assert (
        parse_methods("m-probmix-linear") == ["m-probmix-linear"]
        and parse_methods(None) == METHOD_NAMES
    )
    assert parse_methods("probmix, erm") == ["probmix", "erm"]
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("erm,mixup")


@pytest.mark.parametrize(
    "backend, methods",
    [
        ("pyro", "erm,mix,lock-m-mix,m-probmix,cmixup-probmix"),
        ("numpyro", "erm,probmix,lock-m-probmix"),
    ],
)
def test_uci_end_to_end_and_resumable(tmp_path, capsys, backend, methods):
    data_dir = tiny_uci(str(tmp_path / "uci"))
    out = str(tmp_path / "out")
    argv = [
        "bench",
        "uci",
        "--data-dir",
        data_dir,
        "--splits",
        "0-1",
        "--epochs",
        "4",
        "--backend",
        backend,
        "--methods",
        methods,
        "--alphas",
        "0.5",
        "--batch-size",
        "8",
        "--out",
        out,
        "--quiet",
    ]
    assert main(argv) == 0
    recs = json.load(open(os.path.join(out, "uci.json")))
    assert not [k for r in recs for k in unknown_metric_names(r)]  # one vocabulary
    names = methods.split(",")
    assert len(recs) == 2 * len(names)
    assert {(r["method"], r["split"]) for r in recs} == {(m, k) for m in names for k in (0, 1)}
    for r in recs:
        assert r["dataset"] == "tinyset" and r["backend"] == backend and r["batch_size"] == 8
        for key in (
            "test_nll",
            "test_rmse",
            "coverage_90",
            "best_epoch",
            "seconds",
            "alpha",
            "learned",
        ):
            assert key in r
        assert np.isfinite(r["test_nll"]) and r["test_rmse"] > 0 and 1 <= r["best_epoch"] <= 4
        # embedding networks are scored with the marginal predictive over their embedding
        embedding = METHODS[r["method"]].embedding
        assert (r["predictive"], r["predictive_draws"]) == (
            ("marginal", 1000) if embedding else ("mean", 1)
        )
        assert ("test_nll_mean_embedding" in r) == embedding
        if embedding:
            assert (
                np.isfinite(r["test_nll_mean_embedding"])
                and r["test_nll"] != r["test_nll_mean_embedding"]
            )
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
    rc = main(
        [
            "bench",
            "uci",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    tiny_uci(str(tmp_path / "uci"))
    os.remove(tmp_path / "uci" / "tinyset" / "index_features.txt")
    rc = main(
        [
            "bench",
            "uci",
            "--data-dir",
            str(tmp_path / "uci"),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert rc == 2
    assert "lacks index_features.txt" in capsys.readouterr().err


def _split(n=96, d=2, seed=0, index=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 32, d)).astype(np.float32)
    y = (np.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * rng.normal(size=n + 32)).astype(np.float32)
    y = (y - y[:n].mean()) / y[:n].std()
    return D.Split(
        "toy",
        index,
        x[:n],
        y[:n],
        x[n : n + 16],
        y[n : n + 16],
        x[n + 16 :],
        y[n + 16 :],
        np.zeros(d),
        np.ones(d),
        0.0,
        1.0,
    )


@pytest.mark.parametrize(
    "methods",
    [
        ("erm",),
        ("lock-mix", "mix"),
        ("m-probmix", "lock-m-probmix"),
        ("probmix", "lock-probmix", "cmixup-probmix"),
        ("m-probmix-linear", "lock-m-probmix-linear"),
        ("m-probmix-star", "lock-m-probmix-star"),
    ],
)
def test_every_method_lowers_its_training_loss_numpyro(methods):
    # one compiled trainer per graph: members of a graph (random and table pairings) train side by side
    from pyro_mixup.experiments import train_numpyro as T

    splits = [_split(index=0), _split(seed=1, index=1)]
    cfg = T.TrainConfig(epochs=60, lr=0.01, batch_size=16)
    out = T.run_members(splits, methods, [0.5], cfg, seed=0, hidden=(16, 8))
    assert len(out) == len(methods) * 2
    for (m, alpha, k), r in out.items():
        assert alpha == (0.5 if METHODS[m].mixes else 0.0)
        assert np.isfinite(r["test_nll"]) and r["test_rmse"] > 0 and 0 <= r["coverage_90"] <= 1
        assert r["train_loss_last"] < r["train_loss_first"] - 0.2, (m, k, r)
        assert r["learned"] and r["steps"] == 60 * (96 // 16)


def test_members_trained_together_equal_members_trained_alone():
    # grouping (methods of one graph, alphas, splits) must not change any member's result,
    # or a resumed run would differ from a fresh one
    from pyro_mixup.experiments import train_numpyro as T

    splits = [_split(index=0), _split(seed=1, index=3)]
    cfg = T.TrainConfig(epochs=15, lr=0.01, batch_size=16)
    together = T.run_members(
        splits, ["probmix", "lock-probmix"], [0.2, 1.0], cfg, seed=5, hidden=(8,)
    )
    alone = T.run_members(splits[1:], ["probmix"], [1.0], cfg, seed=5, hidden=(8,))
    a, b = together[("probmix", 1.0, 3)], alone[("probmix", 1.0, 3)]
    assert a["test_nll"] == pytest.approx(b["test_nll"], rel=1e-5)
    assert a["best_epoch"] == b["best_epoch"]
    assert together[("probmix", 0.2, 3)]["test_nll"] != a["test_nll"]  # alpha does reach the draws


def test_trainer_refuses_an_odd_minibatch():
    from pyro_mixup.experiments import train_numpyro as T

    with pytest.raises(ValueError, match="even"):
        T.TrainConfig(batch_size=15).batch_plan(48)
    assert T.TrainConfig(batch_size=0).batch_plan(48) == (48, 1)


def test_full_batch_trains_with_table_and_random_partners():
    from pyro_mixup.experiments import train_numpyro as T

    cfg = T.TrainConfig(epochs=40, lr=0.01, batch_size=0)
    out = T.run_members([_split()], ["mix", "lock-mix"], [0.5], cfg, seed=0, hidden=(16,))
    for r in out.values():
        assert r["steps"] == 40 and r["train_loss_last"] < r["train_loss_first"] - 0.1


def test_uci_flags_a_network_that_did_not_train(tmp_path, capsys):
    # lr so small the network stays where it started: no better than a constant prediction
    data_dir = tiny_uci(str(tmp_path / "uci"))
    rc = main(
        [
            "bench",
            "uci",
            "--data-dir",
            data_dir,
            "--splits",
            "0",
            "--epochs",
            "3",
            "--methods",
            "erm",
            "--lr",
            "1e-9",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert rc == 1
    assert "did not train" in capsys.readouterr().out
    summary = json.load(open(tmp_path / "o" / "uci_summary.json"))
    assert summary["untrained"] == [
        {"dataset": "tinyset", "method": "erm", "alpha": 0.0, "split": 0}
    ]


def test_uci_keeps_marginal_and_mean_embedding_records_apart(tmp_path, capsys):
    data_dir = tiny_uci(str(tmp_path / "uci"))
    out = str(tmp_path / "out")
    argv = [
        "bench",
        "uci",
        "--data-dir",
        data_dir,
        "--splits",
        "0",
        "--epochs",
        "3",
        "--methods",
        "erm,m-probmix",
        "--alphas",
        "0.5",
        "--batch-size",
        "8",
        "--out",
        out,
        "--quiet",
    ]
    assert main(argv + ["--test-draws", "50"]) == 0
    assert (
        main(argv + ["--predictive", "mean"]) == 0
    )  # ERM is not trained again; M-ProbMix is scored anew
    recs = json.load(open(os.path.join(out, "uci.json")))
    got = sorted((r["method"], r["predictive"], r["predictive_draws"]) for r in recs)
    assert got == [("erm", "mean", 1), ("m-probmix", "marginal", 50), ("m-probmix", "mean", 1)]
    assert main(argv + ["--test-draws", "0"]) == 2
    # records of the previous release (no predictive fields) were scored by the mean embedding: they are reused
    old = [
        {k: v for k, v in r.items() if k not in ("predictive", "predictive_draws")}
        for r in recs
        if r["predictive"] == "mean"
    ]
    json.dump(old, open(os.path.join(out, "uci.json"), "w"))
    capsys.readouterr()
    assert main(argv + ["--predictive", "mean"]) == 0
    assert "0 configuration(s) to train" in capsys.readouterr().out


def test_alpha_zero_is_no_mixing():
    # lam = 1 exactly: ProbMix with alpha 0 trains as ERM does (same key, same steps), never NaN
    import jax
    import jax.numpy as jnp

    from pyro_mixup.experiments import train_numpyro as T
    from pyro_mixup.experiments.nets_numpyro import GaussianMLP

    s = _split()
    cfg = T.TrainConfig(epochs=10, lr=0.01, batch_size=16)
    data = [jnp.asarray(getattr(s, a))[None] for a in ("x_fit", "y_fit", "x_val", "y_val")]
    _index, cand, cdf = T.partner_tables([], [s])
    out = {}
    for m in ("erm", "probmix"):
        train = T.build(GaussianMLP(s.x_fit.shape[1], (16,)), METHODS[m], cfg, s.x_fit.shape[0])
        out[m] = train(
            jax.random.key(0)[None],
            jnp.zeros(1),
            jnp.zeros(1, int),
            -jnp.ones(1, int),
            *data,
            cand,
            cdf,
        )
    assert np.isfinite(np.asarray(out["probmix"]["val_nll"])).all()
    np.testing.assert_allclose(
        np.asarray(out["probmix"]["train_loss"]), np.asarray(out["erm"]["train_loss"]), rtol=1e-4
    )


def test_m_probmix_star_has_its_own_network():
    # 64-32 whatever the protocol's hidden sizes, and a separate variance network of width 64
    from pyro_mixup.experiments import train_numpyro as T
    from pyro_mixup.experiments import train_pyro as P

    net = T.network(METHODS["m-probmix-star"], 3, (128, 32))
    shapes = net.shapes()
    assert net.sizes == [3, 64, 32, 2] and "emb_a" not in shapes
    assert (shapes["var_w0"], shapes["var_w1"]) == ((3, 64), (64, 64))
    torch_net, _ = P.fit_net(
        "lock-m-probmix-star",
        np.random.default_rng(0).normal(size=(20, 3)),
        np.zeros(20),
        hidden=(128, 32),
        epochs=2,
    )
    assert [layer.out_features for layer in torch_net.layers] == [64, 32, 2]
    assert torch_net.variance[0].out_features == 64 and torch_net.variance[2].out_features == 64
