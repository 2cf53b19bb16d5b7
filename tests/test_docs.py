"""The docs name what the code does."""

import pathlib
import re
import runpy
import sys

import numpy as np
import pytest

from pyro_mixup.families import ALL_FAMILIES

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_pooling_page_lists_every_family():
    text = (DOCS / "pooling.md").read_text()
    missing = [f.name for f in ALL_FAMILIES if f.name not in text]
    assert not missing, f"docs/pooling.md does not mention {missing}"


ROOT = DOCS.parent


def _python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_example_runs_as_printed():
    block = _python_blocks(ROOT / "README.md")[0]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    p = namespace["p"]
    assert (
        abs(p.loc.item() - 75) < 1e-3
        and abs(-p.log_prob(__import__("torch").tensor(80.0)).item() - 3.59) < 5e-3
    )
    assert namespace["loss"] == namespace["loss"]  # trained without NaN


def test_readme_numpyro_example_runs_after_the_first():
    first, second = _python_blocks(ROOT / "README.md")[:2]
    namespace = {}
    exec(compile(first + second, "README.md", "exec"), namespace)
    assert float(namespace["np_loss"]) == float(namespace["np_loss"])


def test_handlers_page_example_runs():
    block = _python_blocks(DOCS / "handlers.md")[0]
    exec(compile(block, "docs/handlers.md", "exec"), {})


def test_numpyro_page_example_runs_as_printed():
    block = _python_blocks(DOCS / "numpyro.md")[0]
    namespace = {}
    exec(compile(block, "docs/numpyro.md", "exec"), namespace)
    assert np.isfinite(float(namespace["loss"]))


@pytest.mark.parametrize("script", ["pyro_regression.py", "pyro_bnn.py"])
def test_pyro_examples_run(script, monkeypatch):
    monkeypatch.setattr(sys, "argv", [script, "--steps", "3"])
    runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")


def test_readme_bnn_example_runs_as_printed():
    import matplotlib

    matplotlib.use("Agg")
    block = _python_blocks(ROOT / "README.md")[2]
    assert "to_inference_data" in block
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    idata = namespace["idata"]
    for name in ("erm", "m-probmix"):
        ll = idata[name].log_likelihood["y"]
        assert ll.shape == (1, 100, 20) and bool(np.isfinite(ll.values).all())
        lpd = namespace["log_predictive_density"](idata[name])
        assert lpd.per_row.shape == (20,) and np.isfinite(lpd.total)


def test_handlers_page_predictive_example_runs_as_printed():
    import torch

    block = next(b for b in _python_blocks(DOCS / "handlers.md") if "marginal_predictive" in b)
    namespace = {}
    torch.manual_seed(0)
    exec(compile(block, "docs/handlers.md", "exec"), namespace)
    pred, shortcut = namespace["pred"], namespace["shortcut"]
    np.testing.assert_allclose(pred.mean.numpy(), [0.0, 6.0], atol=0.15)
    np.testing.assert_allclose(pred.variance.numpy(), [3.25, 3.25], rtol=0.06)
    np.testing.assert_allclose(shortcut.variance.numpy(), [1.0, 1.0])
