"""BNN building blocks (Pyro and NumPyro) and the ``pyro-mixup bnn`` command,
on real SVI: log-likelihoods against an independent NumPy forward pass, the
embedding noise being marginalised, every method training, the CLI end to end
on a tiny dataset written in the UCI layout."""

import json
import math
import warnings

import arviz  # noqa: F401  (the test extra installs it)
import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from scipy import stats

from pyro_mixup import diagnostics
from pyro_mixup.bnn.data import load_split, n_splits  # the former module names (shims) keep working
from pyro_mixup.experiments.bnn import BNN_METHODS
from pyro_mixup.experiments.bnn import models_pyro as MP
from pyro_mixup.experiments.bnn.cli import _parse_splits
from pyro_mixup.experiments.data import standardisation
from pyro_mixup.experiments.metrics import unknown_metric_names


@pytest.fixture(autouse=True)
def _fresh():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    # tiny networks: one torch thread is several times faster than two on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _toy(n=48, d=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, d))
    y = (
        3.0
        + np.sin(2 * x[:, 0])
        + 0.5 * x[:, 1]
        + (0.1 + 0.2 * np.abs(x[:, 0])) * rng.standard_normal(n)
    )
    return x, y


def write_uci(root, name="tiny", n=40, d=3, splits=2, seed=0):
    """A tiny dataset in the standard UCI layout (target in the last column)."""
    x, y = _toy(n, d, seed)
    folder = root / name
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.txt", np.column_stack([x, y]))
    np.savetxt(folder / "index_features.txt", np.arange(d), fmt="%d")
    np.savetxt(folder / "index_target.txt", [d], fmt="%d")
    rng = np.random.default_rng(seed + 1)
    for k in range(splits):
        perm = rng.permutation(n)
        np.savetxt(folder / f"index_train_{k}.txt", np.sort(perm[: n - n // 5]), fmt="%d")
        np.savetxt(folder / f"index_test_{k}.txt", np.sort(perm[n - n // 5 :]), fmt="%d")
    (folder / "n_splits.txt").write_text(f"{splits}\n")
    return x, y


# --- data ------------------------------------------------------------------------


def test_loader_reads_the_uci_layout(tmp_path):
    x, y = write_uci(tmp_path, n=30, d=2, splits=3)
    assert n_splits(tmp_path, "tiny") == 3
    s = load_split(tmp_path, "tiny", 1)
    test_idx = np.loadtxt(tmp_path / "tiny" / "index_test_1.txt", dtype=int)
    np.testing.assert_allclose(s.x_test, x[test_idx], rtol=1e-12)
    np.testing.assert_allclose(s.y_test, y[test_idx], rtol=1e-12)
    assert s.x_train.shape == (24, 2) and s.y_train.shape == (24,)
    with pytest.raises(ValueError, match="does not exist"):
        load_split(tmp_path, "missing", 0)


def test_standardisation_and_split_parsing():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    x_loc, x_scale, y_loc, y_scale = standardisation(x, np.array([0.0, 2.0]))
    np.testing.assert_allclose(x_loc, [2.0, 5.0])
    np.testing.assert_allclose(x_scale, [1.0, 1.0])  # constant column -> scale 1
    assert (y_loc, y_scale) == (1.0, 1.0)
    # a column constant up to float noise (naval has one: std 2e-13 around 1) counts as constant;
    # dividing by its std would blow float32 rounding up to inputs of size 1e5
    noisy = np.column_stack(
        [np.linspace(0, 1, 50), 0.998 + 1e-13 * np.random.default_rng(0).standard_normal(50)]
    )
    _, x_scale, _, _ = standardisation(noisy, np.linspace(0, 1, 50))
    assert x_scale[1] == 1.0 and x_scale[0] == pytest.approx(np.linspace(0, 1, 50).std())
    assert _parse_splits("all", 4) == [0, 1, 2, 3]
    assert _parse_splits("2", 4) == [2]
    assert _parse_splits("1-3", 4) == [1, 2, 3]
    assert _parse_splits("0,3", 4) == [0, 3]
    with pytest.raises(SystemExit):
        _parse_splits("5,6", 4)


# --- the Pyro BNN ----------------------------------------------------------------


def _numpy_forward(post, x, model, i):
    """loc, scale of draw i from the posterior group, by hand."""
    h = (x - model.x_loc.numpy()) / model.x_scale.numpy()
    for j in range(len(model.hidden_sizes)):
        w, b = post[f"layers.{j}.weight"].values[0, i], post[f"layers.{j}.bias"].values[0, i]
        h = np.maximum(h @ w.T + b, 0.0)
    w, b = post["head.weight"].values[0, i], post["head.bias"].values[0, i]
    out = h @ w.T + b
    mu, sigma = out[:, 0], np.logaddexp(0.0, out[:, 1]) + model.min_scale
    return float(model.y_loc) + float(model.y_scale) * mu, float(model.y_scale) * sigma


def test_pyro_bnn_loglik_equals_independent_forward_pass():
    x, y = _toy()
    model = MP.make_model("erm", x[:40], y[:40], hidden=(6, 5))
    guide = MP.fit(model, x[:40], y[:40], epochs=60, progress=False)
    idata = diagnostics.to_inference_data(model, guide, x[40:], y[40:], num_samples=12)
    post = idata.posterior
    assert post["layers.0.weight"].dims == (
        "chain",
        "draw",
        "layers.0.weight_dim_0",
        "layers.0.weight_dim_1",
    )
    assert post["layers.0.weight"].shape == (1, 12, 6, 2)
    ll = idata.log_likelihood["y"].values[0]
    assert ll.shape == (12, 8)
    for i in range(12):
        loc, scale = _numpy_forward(post, x[40:], model, i)
        np.testing.assert_allclose(
            ll[i], stats.norm.logpdf(y[40:], loc, scale), rtol=1e-4, atol=1e-4
        )
    # draws differ (a posterior, not a point estimate)
    assert np.std(post["head.bias"].values[0, :, 0]) > 0


def test_embedding_noise_is_marginalised_per_draw():
    x, y = _toy(20)
    model = MP.make_model("m-probmix", x, y, hidden=(4,))
    proto = poutine.trace(model).get_trace(torch.as_tensor(x, dtype=torch.float32))
    assert "z" not in proto.nodes  # embed adds no latent site
    fixed = {
        n: s["value"].detach().expand((5,) + s["value"].shape)
        for n, s in proto.nodes.items()
        if n.startswith(("layers.", "head."))
    }
    idata = diagnostics.to_inference_data(model, fixed, x, y)
    ll = idata.log_likelihood["y"].values[0]
    assert np.all(np.std(ll, axis=0) > 0)  # same weights, a fresh embedding draw per draw
    plain = MP.make_model("erm", x, y, hidden=(4,))
    proto = poutine.trace(plain).get_trace(torch.as_tensor(x, dtype=torch.float32))
    fixed = {
        n: s["value"].detach().expand((5,) + s["value"].shape)
        for n, s in proto.nodes.items()
        if n.startswith(("layers.", "head."))
    }
    ll = diagnostics.to_inference_data(plain, fixed, x, y).log_likelihood["y"].values[0]
    np.testing.assert_allclose(np.std(ll, axis=0), 0.0, atol=1e-6)


@pytest.mark.parametrize("method", BNN_METHODS)
def test_every_method_trains_and_reduces_the_loss(method):
    x, y = _toy(64)
    model = MP.make_model(method, x, y, hidden=(16,))
    losses = []
    MP.fit(
        model, x, y, method=method, alpha=0.5, epochs=150, lr=0.02, progress=False, losses=losses
    )
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.5


def test_minibatch_training_scales_the_likelihood():
    x, y = _toy(64)
    model = MP.make_model("probmix", x, y, hidden=(8,))
    losses = []
    MP.fit(model, x, y, method="probmix", epochs=20, batch_size=16, progress=False, losses=losses)
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])
    # the plate of a minibatch has the full data size
    tr = poutine.trace(model).get_trace(torch.zeros(16, 2), torch.zeros(16), num_data=64)
    assert tr.nodes["y"]["scale"] == pytest.approx(4.0)
    # kl_weight < 1 up-weights the likelihood (a tempered posterior), training only
    tr = poutine.trace(model).get_trace(
        torch.zeros(16, 2), torch.zeros(16), num_data=64, kl_weight=0.1
    )
    assert tr.nodes["y"]["scale"] == pytest.approx(40.0)
    with pytest.raises(ValueError, match="kl_weight"):
        MP.fit(model, x, y, epochs=1, kl_weight=0.0, progress=False)


def test_vectorised_splits_equal_one_fit_per_split():
    """fit_splits (SVI vmapped over splits, on standardised data) reaches the
    same parameters as fit on each split's raw data with the same seed, runs
    exactly ``epochs`` steps (uneven chunks on both sides), and its losses are
    fit's shifted by log(y_scale) / kl_weight."""
    from pyro_mixup.experiments.bnn import models_numpyro as MN

    method, kl = "m-probmix", 0.1  # the embedding model under a handler: the most moving parts
    splits = [_toy(40, 3, seed=s) for s in range(2)]
    splits = [(x, 10 * y + 50) for x, y in splits]  # far from standardised
    fitted = MN.fit_splits(
        method,
        splits,
        hidden=(8,),
        epochs=60,
        lr=0.01,
        seeds=[5, 6],
        kl_weight=kl,
        chunk=25,
        progress=False,
    )
    for (x, y), seed, (model, _guide, params, losses) in zip(splits, [5, 6], fitted):
        assert model.y_loc == pytest.approx(np.mean(y)) and losses.shape == (60,)
        ref_model, ref_losses = MN.make_model(method, x, y, hidden=(8,)), []
        _, ref = MN.fit(
            ref_model,
            x,
            y,
            method=method,
            epochs=60,
            lr=0.01,
            seed=seed,
            kl_weight=kl,
            progress=False,
            losses=ref_losses,
        )
        assert len(ref_losses) == 60  # chunks of 50 + 10
        assert sorted(ref) == sorted(params)
        for name in ref:
            np.testing.assert_allclose(
                np.asarray(params[name]), np.asarray(ref[name]), atol=2e-5, err_msg=name
            )
        np.testing.assert_allclose(
            losses, np.array(ref_losses) - np.log(model.y_scale) / kl, rtol=1e-4, atol=1e-3
        )
        assert np.mean(losses[-10:]) < np.mean(losses[:10])
    with pytest.raises(ValueError, match="one shape"):
        MN.fit_splits(
            method, [splits[0], (splits[1][0][:30], splits[1][1][:30])], hidden=(8,), epochs=1
        )
    with pytest.raises(ValueError, match="epochs"):
        MN.fit_splits(method, splits, hidden=(8,), epochs=0)


def test_cli_resumes_and_vectorises_numpyro_splits(tmp_path):
    write_uci(tmp_path / "uci", n=30, d=2, splits=2)
    argv = [
        "bnn",
        "--data-dir",
        str(tmp_path / "uci"),
        "--dataset",
        "tiny",
        "--methods",
        "erm",
        "--backend",
        "numpyro",
        "--epochs",
        "20",
        "--num-samples",
        "10",
        "--hidden",
        "4",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--no-plots",
    ]
    assert _run_cli(argv) == 0
    d = tmp_path / "out" / "tiny"
    recs = [json.loads((d / f"erm_split{k}.json").read_text()) for k in range(2)]
    assert not [k for r in recs for k in unknown_metric_names(r)]  # one vocabulary
    assert all(
        r["vectorised_splits"] and r["epochs"] == 20 and math.isfinite(r["test_nll"]) for r in recs
    )
    stamp = {f: f.stat().st_mtime_ns for f in d.glob("*.nc")}
    assert _run_cli(argv) == 0  # same settings: nothing retrained
    assert {f: f.stat().st_mtime_ns for f in d.glob("*.nc")} == stamp
    assert (
        _run_cli(argv[:-1]) == 0
    )  # plots now wanted: runs without a calibration figure are redone
    assert {f: f.stat().st_mtime_ns for f in d.glob("*.nc")} != stamp and (
        d / "erm_split0_calibration.png"
    ).exists()
    assert (
        _run_cli(argv[:-4] + ["--splits", "1", "--epochs", "21"] + argv[-4:]) == 0
    )  # new settings: retrained
    assert json.loads((d / "erm_split1.json").read_text())["epochs"] == 21
    assert json.loads((d / "erm_split0.json").read_text())["epochs"] == 20


def test_wrap_names_the_right_sites():
    x, y = _toy(8)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    plain = MP.make_model("erm", x, y, hidden=(4,))
    emb = MP.make_model("m-probmix", x, y, hidden=(4,))
    assert emb.embedding and not plain.embedding  # what methods.wrap checks for M-ProbMix
    for method, model in [("probmix", plain), ("m-probmix", emb), ("mix", plain), ("m-mix", plain)]:
        tr = poutine.trace(MP.wrap(model, method, alpha=0.5)).get_trace(
            xt, yt
        )  # at= must name a site
        assert tr.nodes["y"]["is_observed"]
    with pytest.raises(ValueError, match="embedding variant"):
        MP.wrap(plain, "m-probmix")
    with pytest.raises(ValueError, match="method"):
        MP.wrap(plain, "cutmix")
    with pytest.raises(
        ValueError, match="method"
    ):  # a registry method the BNN does not train (a partner table)
        MP.make_model("lock-probmix", x, y)


def test_the_methods_and_former_module_names():
    import pyro_mixup.bnn as old
    from pyro_mixup.bnn import models_numpyro, models_pyro
    from pyro_mixup.experiments.bnn import cli
    from pyro_mixup.experiments.bnn import models_numpyro as MN
    from pyro_mixup.experiments.methods import METHODS

    assert BNN_METHODS == ("erm", "mix", "m-mix", "probmix", "m-probmix") == old.METHODS
    assert [m for m in BNN_METHODS if METHODS[m].embedding] == ["m-probmix"]
    # the old import paths give the moved objects
    assert models_pyro.BNNRegressor is MP.BNNRegressor and models_pyro.fit is MP.fit
    assert (
        models_numpyro.fit_splits is MN.fit_splits
        and models_numpyro.BNNRegressor is MN.BNNRegressor
    )
    assert cli._parse_methods("all") == list(BNN_METHODS)
    with pytest.raises(SystemExit, match="unknown method"):
        cli._parse_methods("erm,lock-mix")


# --- the command ---------------------------------------------------------------------


def _run_cli(argv):
    from pyro_mixup.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(argv)


def test_cli_end_to_end_pyro(tmp_path):
    write_uci(tmp_path / "uci", n=40, d=3, splits=3)
    out = tmp_path / "out"
    methods = list(BNN_METHODS)
    rc = _run_cli(
        [
            "bnn",
            "--data-dir",
            str(tmp_path / "uci"),
            "--dataset",
            "tiny",
            "--splits",
            "0,2",
            "--methods",
            ",".join(methods),
            "--epochs",
            "30",
            "--num-samples",
            "30",
            "--hidden",
            "8",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    d = out / "tiny"
    for m in methods:
        assert not (d / f"{m}_split1.json").exists()
        for k in (0, 2):
            rec = json.loads((d / f"{m}_split{k}.json").read_text())
            assert rec["method"] == m and rec["split"] == k and rec["n_test"] == 8
            assert (
                math.isfinite(rec["test_nll"])
                and math.isfinite(rec["test_rmse"])
                and 0 <= rec["coverage_90"] <= 1
            )
            assert (d / f"{m}_split{k}_calibration.png").stat().st_size > 1000
            idata = diagnostics.load(d / f"{m}_split{k}.nc")
            assert idata.log_likelihood["y"].shape == (1, 30, 8)
            # the JSON's NLL is the log-mean-exp of the NetCDF's log-likelihood
            ll = idata.log_likelihood["y"].values[0].astype(np.float64)
            assert rec["test_nll"] == pytest.approx(
                -np.mean(diagnostics.log_mean_exp(ll, 0)), rel=1e-6
            )
        assert (d / f"ppc_{m}.png").exists() and (d / f"pit_{m}.png").exists()
    report = (d / "report.md").read_text()
    for m in methods:
        assert f"| {m} |" in report
    assert "az.compare" in report and "Pareto k" in report and "failed" not in report
    assert "| probmix |" in report.split("## `az.compare`")[1]  # a compare row per method
    # --summarise aggregates the JSON files without training
    from pyro_mixup.experiments.bnn.cli import summary_table

    table = summary_table(out, ["tiny"], ["erm", "probmix"])
    row = next(r for r in table.splitlines() if r.startswith("| tiny |"))
    erm = [json.loads((d / f"erm_split{k}.json").read_text())["test_nll"] for k in (0, 2)]
    assert row.split("|")[2].strip() == "2" and f"{np.mean(erm):.3f}" in row.split("|")[3]
    # then the medians with splits won, and RMSE mean / median
    _main, robust, rmse = table.split("\n\n")
    pm = [json.loads((d / f"probmix_split{k}.json").read_text()) for k in (0, 2)]
    won = sum(r["test_nll"] < e for r, e in zip(pm, erm))
    robust_row = next(r for r in robust.splitlines() if r.startswith("| tiny |")).split("|")
    assert robust_row[2].strip() == f"{np.median(erm):.3f}" and robust_row[4].strip() == f"{won}/2"
    rmse_erm = [json.loads((d / f"erm_split{k}.json").read_text())["test_rmse"] for k in (0, 2)]
    assert f"{np.mean(rmse_erm):.3f} / {np.median(rmse_erm):.3f}" in rmse


def test_cli_end_to_end_numpyro_embedding_model(tmp_path):
    """NumPyro backend, M-ProbMix (embed layer + handler) through the command;
    the NetCDF's log-likelihood is per test point and its NLL matches the JSON."""
    write_uci(tmp_path / "uci", n=30, d=2, splits=1)
    out = tmp_path / "out"
    rc = _run_cli(
        [
            "bnn",
            "--data-dir",
            str(tmp_path / "uci"),
            "--dataset",
            "tiny",
            "--methods",
            "m-probmix",
            "--backend",
            "numpyro",
            "--epochs",
            "50",
            "--num-samples",
            "20",
            "--hidden",
            "4",
            "--out",
            str(out),
            "--quiet",
            "--no-plots",
        ]
    )
    assert rc == 0
    rec = json.loads((out / "tiny" / "m-probmix_split0.json").read_text())
    assert rec["backend"] == "numpyro" and rec["n_test"] == 6 and math.isfinite(rec["test_nll"])
    idata = diagnostics.load(out / "tiny" / "m-probmix_split0.nc")
    assert idata.posterior.attrs["backend"] == "numpyro"
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "data") and idata.log_likelihood[
        "y"
    ].shape == (1, 20, 6)
    ll = idata.log_likelihood["y"].values[0].astype(np.float64)
    assert rec["test_nll"] == pytest.approx(-np.mean(diagnostics.log_mean_exp(ll, 0)), rel=1e-5)
    assert "| m-probmix |" in (out / "tiny" / "report.md").read_text()


def test_cli_rejects_unknown_methods(tmp_path):
    write_uci(tmp_path / "uci", n=20, d=2, splits=1)
    with pytest.raises(SystemExit):
        _run_cli(
            [
                "bnn",
                "--data-dir",
                str(tmp_path / "uci"),
                "--dataset",
                "tiny",
                "--methods",
                "erm,cutmix",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )


def test_summary_table_uses_the_same_splits_for_every_number(tmp_path):
    """Hand-written results: m-probmix misses split 3, so every number of the row is
    over splits 0-2 (not ERM over 0-3); medians are medians; a NaN mean is never 'best'."""
    from pyro_mixup.experiments.bnn.cli import summary_table

    d = tmp_path / "toy"
    d.mkdir()
    nll = {
        "erm": [1.0, 2.0, 9.0, 100.0],
        "probmix": [np.nan, 0.0, 0.0, 0.0],
        "m-probmix": [0.5, 2.5, 1.0],
    }
    for m, values in nll.items():
        for k, v in enumerate(values):
            rec = {
                "method": m,
                "split": k,
                "nll": v,
                "coverage": 0.9,
                "rmse": 10.0 * (k + 1),
                "kl_weight": 0.1,
                "lr": 0.005,
            }
            (d / f"{m}_split{k}.json").write_text(json.dumps(rec))
    mean_table, median_table, rmse_table = summary_table(
        tmp_path, ["toy"], ["erm", "probmix", "m-probmix"]
    ).split("\n\n")
    row = [c.strip() for c in mean_table.splitlines()[2].split("|")[1:-1]]
    assert row[1] == "3 of 4"
    assert (
        row[2] == f"{np.mean([1.0, 2.0, 9.0]):.3f} ± {np.std([1.0, 2.0, 9.0]):.3f}"
    )  # not over 4 splits
    assert (
        row[3] == "nan ± nan" and row[-1] == "m-probmix: lower (2/3)"
    )  # the NaN column is not chosen
    med = [c.strip() for c in median_table.splitlines()[2].split("|")[1:-1]]
    assert med[1:4] == ["2.000", "nan", "1.000"] and med[4:] == [
        "2/3",
        "2/3",
    ]  # a diverged split shows
    assert rmse_table.splitlines()[2].split("|")[2].strip() == "20.000 / 20.000"
