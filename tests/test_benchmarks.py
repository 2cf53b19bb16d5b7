"""The benchmark commands run (their timings are reported, never asserted)."""

import math
import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run_benchmark(name, argv, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when run as a script
    return runpy.run_path(str(ROOT / "benchmarks" / name))["main"](argv)


def test_pyro_overhead_benchmark_runs(tmp_path, monkeypatch):
    out = tmp_path / "overhead.json"
    result = _run_benchmark(
        "overhead.py",
        [
            "--blocks",
            "2",
            "--steps",
            "2",
            "--variants",
            "erm,hand-pooled,probmix,mix",
            "--json",
            str(out),
        ],
        monkeypatch,
    )
    assert set(result) == {"erm", "hand-pooled", "probmix", "mix"}
    assert all(math.isfinite(r["ratio"]) and r["us_per_step"] > 0 for r in result.values())
    assert result["erm"]["ratio"] == 1.0 and out.exists()


def test_numpyro_overhead_benchmark_runs(monkeypatch):
    result = _run_benchmark("overhead_numpyro.py", ["--repeats", "2", "--block", "2"], monkeypatch)
    assert set(result) == {"erm", "probmix"} and all(r["us_per_step"] > 0 for r in result.values())


def test_bnn_validation_grid_splits_training_rows_and_picks_lowest_validation_nll(tmp_path, capsys):
    import json

    import numpy as np
    from test_bnn import write_uci

    from pyro_mixup.bnn.data import load_split

    write_uci(tmp_path / "uci", n=40, d=2, splits=2)
    module = runpy.run_path(str(ROOT / "benchmarks" / "bnn_validation_grid.py"))
    split = load_split(tmp_path / "uci", "tiny", 1)
    x_fit, y_fit, x_val, y_val = module["inner_split"](split)
    # a partition of the training rows only: no test row, nothing lost, nothing twice
    train_rows = {tuple(r) for r in np.column_stack([split.x_train, split.y_train])}
    inner_rows = [
        tuple(r)
        for r in np.column_stack([np.vstack([x_fit, x_val]), np.concatenate([y_fit, y_val])])
    ]
    assert (
        len(inner_rows) == len(train_rows)
        and set(inner_rows) == train_rows
        and len(y_val) == round(0.2 * len(split.y_train))
    )
    out = tmp_path / "grid.json"
    module["main"](
        [
            "--data-dir",
            str(tmp_path / "uci"),
            "--dataset",
            "tiny",
            "--methods",
            "erm",
            "--splits",
            "0-1",
            "--grid",
            "0.1:0.01,1:0.001",
            "--epochs",
            "20",
            "--hidden",
            "4",
            "--num-samples",
            "10",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert len(result["records"]) == 2 and all(np.isfinite(r["val_nll"]) for r in result["records"])
    best = min(result["records"], key=lambda r: r["val_nll"])
    assert result["chosen"] == [
        {"dataset": "tiny", "method": "erm", "kl_weight": best["kl_weight"], "lr": best["lr"]}
    ]
    command = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("pyro-mixup bnn")
    ]
    assert (
        len(command) == 1 and f"--kl-weight {best['kl_weight']:g} --lr {best['lr']:g}" in command[0]
    )
    assert "--backend numpyro" in command[0] and "--methods erm" in command[0]


def test_predictive_draws_benchmark_runs(tmp_path, monkeypatch, capsys):
    import json

    out = tmp_path / "draws.json"
    _run_benchmark(
        "predictive_draws.py",
        ["--runs", "1", "--epochs", "3", "--draws", "5,20", "--repeats", "2", "--json", str(out)],
        monkeypatch,
    )
    rows = json.load(open(out))["rows"]
    assert {(r["part"], r["draws"]) for r in rows} == {
        (p, s) for p in ("id", "ood") for s in (5, 20)
    }
    assert all(math.isfinite(r["max_deviation"]) and r["max_std"] >= 0 for r in rows)
    assert "max deviation" in capsys.readouterr().out


def test_protocol_floor_counts_the_protocol(monkeypatch):
    import numpy as np
    import pytest

    data = ROOT.parent / "shared" / "data" / "uci"
    if not data.is_dir():
        pytest.skip("no UCI data beside this checkout (../shared/data/uci)")
    bench = runpy.run_path(str(ROOT / "benchmarks" / "protocol_floor.py"))
    flops = bench["protocol_flops"](str(data), 1, lambda name, n: 64)
    assert flops
    assert all(f > 0 and np.isfinite(f) for f in flops.values())
    assert bench["measured_rate"](2, 64, 4, repeats=1) > 0


def test_sharding_benchmark_runs(tmp_path, monkeypatch):
    # JAX started here with one device: the benchmark re-runs itself with simulated devices
    import json

    out = tmp_path / "sharding.json"
    argv = ["--devices", "2", "--batch-sizes", "64", "--hidden", "8", "--steps", "2"]
    result = _run_benchmark("sharding.py", [*argv, "--warmup", "1", "--out", str(out)], monkeypatch)
    rows = {r["pairing"]: r for r in result["results"]}
    assert set(rows) == {"erm", "global", "local"} and result["devices"] == 2
    assert all(r["ms_per_step"] > 0 for r in rows.values())
    # global pairing gathers partners across the devices; local pairing moves what ERM moves
    assert rows["global"]["collectives"]["all-gather"]["count"] > 0
    assert rows["local"]["collectives"] == rows["erm"]["collectives"]
    assert json.load(open(out)) == result


def test_ddp_benchmark_runs(tmp_path, monkeypatch):
    # imported as a module (not run_path): the spawned workers find its functions by name
    import importlib
    import json

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    ddp = importlib.import_module("ddp")
    out = tmp_path / "ddp.json"
    argv = ["--batch", "64", "--hidden", "8", "--steps", "2", "--warmup", "1"]
    result = ddp.main([*argv, "--out", str(out)])
    assert {(r["world"], r["pairing"]) for r in result["results"]} == {
        (w, p) for w in (1, 2) for p in ("erm", "probmix")
    }
    assert all(r["ms_per_step"] > 0 for r in result["results"])
    assert json.load(open(out)) == result
