"""The docs name what the code does."""

import inspect
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


# ----------------------------------------------------------------------------- code blocks
# Every fenced Python block in README.md and docs/**/*.md carries, on the line just before its
# fence, one of two markers (HTML comments: invisible on GitHub and in the Sphinx site):
#
#   <!-- tested: tests/test_docs.py::test_name -->  test_name, in this file, runs the block; it
#                                                     reads it with _tested_block(path, "test_name")
#   <!-- illustrative: why -->                      not run, and why ("needs your data", ...)
#
# test_every_python_block_is_tested_or_illustrative checks the markers; the markers are the
# registry of the blocks that run.

PYTHON_FENCES = {"python", "py", "python3", "pycon", "ipython"}
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`{}]*)")
_TESTED = re.compile(r"^\s*<!--\s*tested:\s*tests/test_docs\.py::(\w+)\s*-->\s*$")
_ILLUSTRATIVE = re.compile(r"^\s*<!--\s*illustrative:\s*\S.*-->\s*$")


def _markdown_files():
    docs = (p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)
    return [ROOT / "README.md", *sorted(docs)]


def _code_blocks(path):
    """``(fence line number, language, the line above the fence, text)`` of each fenced block."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        end = i + 1
        while end < len(lines):
            close = lines[end].strip()
            if len(close) >= len(fence) and set(close) == {fence[0]}:
                break
            end += 1
        above = lines[i - 1] if i else ""
        blocks.append((i + 1, lang, above, "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


def _tested_block(path, test_name):
    """The one Python block of ``path`` marked ``<!-- tested: tests/test_docs.py::test_name -->``."""
    found = [
        text
        for _, lang, above, text in _code_blocks(path)
        if lang in PYTHON_FENCES and (m := _TESTED.match(above)) and m.group(1) == test_name
    ]
    assert len(found) == 1, f"{path.name}: {len(found)} Python blocks marked as run by {test_name}"
    return found[0]


def test_readme_example_runs_as_printed():
    block = _tested_block(ROOT / "README.md", "test_readme_example_runs_as_printed")
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    p = namespace["p"]
    assert (
        abs(p.loc.item() - 75) < 1e-3
        and abs(-p.log_prob(__import__("torch").tensor(80.0)).item() - 3.59) < 5e-3
    )
    assert namespace["loss"] == namespace["loss"]  # trained without NaN


def test_readme_numpyro_example_runs_after_the_first():
    first = _tested_block(ROOT / "README.md", "test_readme_example_runs_as_printed")
    second = _tested_block(ROOT / "README.md", "test_readme_numpyro_example_runs_after_the_first")
    namespace = {}
    exec(compile(first + second, "README.md", "exec"), namespace)
    assert float(namespace["np_loss"]) == float(namespace["np_loss"])


def test_handlers_page_example_runs():
    block = _tested_block(DOCS / "handlers.md", "test_handlers_page_example_runs")
    exec(compile(block, "docs/handlers.md", "exec"), {})


def test_numpyro_page_example_runs_as_printed():
    block = _tested_block(DOCS / "numpyro.md", "test_numpyro_page_example_runs_as_printed")
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
    block = _tested_block(ROOT / "README.md", "test_readme_bnn_example_runs_as_printed")
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

    block = _tested_block(
        DOCS / "handlers.md", "test_handlers_page_predictive_example_runs_as_printed"
    )
    namespace = {}
    torch.manual_seed(0)
    exec(compile(block, "docs/handlers.md", "exec"), namespace)
    pred, shortcut = namespace["pred"], namespace["shortcut"]
    np.testing.assert_allclose(pred.mean.numpy(), [0.0, 6.0], atol=0.15)
    np.testing.assert_allclose(pred.variance.numpy(), [3.25, 3.25], rtol=0.06)
    np.testing.assert_allclose(shortcut.variance.numpy(), [1.0, 1.0])


def test_metric_names_are_documented_in_one_table():
    from pyro_mixup.experiments.metrics import METRIC_NAMES

    text = (DOCS / "experiments.md").read_text()
    section = text[text.index("## Metric names") :]
    section = section[: section.index("\n## ", 1)]
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M)
    assert documented == list(METRIC_NAMES)


def test_every_python_block_is_tested_or_illustrative():
    problems, seen = [], 0
    for path in _markdown_files():
        where = path.relative_to(ROOT)
        blocks = [b for b in _code_blocks(path) if b[1] in PYTHON_FENCES]
        seen += len(blocks)
        for line, _, above, _ in blocks:
            if m := _TESTED.match(above):
                test = globals().get(m.group(1))
                if not callable(test):
                    problems.append(f"{where}:{line}: no test {m.group(1)} in tests/test_docs.py")
                elif f'"{path.name}"' not in (src := inspect.getsource(test)) or (
                    "_tested_block(" not in src
                ):
                    problems.append(
                        f"{where}:{line}: {m.group(1)} does not read {path.name} with _tested_block"
                    )
            elif not _ILLUSTRATIVE.match(above):
                problems.append(
                    f"{where}:{line}: a Python block without a marker on the line before its fence: "
                    "<!-- tested: tests/test_docs.py::test_name --> (and the test) or "
                    "<!-- illustrative: why -->"
                )
    assert not problems, "\n".join(problems)
    # the parser found every block a plain search finds
    plain = sum(
        len(re.findall(r"^```python\b", p.read_text(), flags=re.M)) for p in _markdown_files()
    )
    assert seen >= plain > 0


def test_pooling_page_api_example_runs_as_printed():
    import torch

    block = _tested_block(DOCS / "pooling.md", "test_pooling_page_api_example_runs_as_printed")
    namespace = {}
    exec(compile(block, "docs/pooling.md", "exec"), namespace)
    p = namespace["p"]
    assert abs(p.loc.item() - 75) < 1e-3 and abs(p.scale.item() - 13.5) < 1e-4
    assert abs(-p.log_prob(torch.tensor(80.0)).item() - 3.59) < 5e-3
    assert namespace["q"].batch_shape == (5,) and namespace["r"].batch_shape == (5,)


def test_handlers_page_pairing_example_runs():
    # the block is a fragment of a training script: a small regression supplies its names
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO

    from pyro_mixup.handlers import probmix

    def model(x, y=None):
        w = pyro.param("w", torch.zeros(2))
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(w[0] * x[:, 0] + w[1], 1.0), obs=y)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x_train = torch.randn(300, 1)
    namespace = {
        "SVI": SVI,
        "Trace_ELBO": Trace_ELBO,
        "probmix": probmix,
        "model": model,
        "guide": lambda x, y=None: None,
        "optim": pyro.optim.Adam({"lr": 0.01}),
        "x_train": x_train,
        "y_train": 2 * x_train[:, 0] + 0.1 * torch.randn(300),
    }
    block = _tested_block(DOCS / "handlers.md", "test_handlers_page_pairing_example_runs")
    exec(compile(block, "docs/handlers.md", "exec"), namespace)
    assert len(namespace["table"].candidates) == 300
    assert torch.isfinite(pyro.param("w")).all()


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")
def test_bnn_page_example_runs_on_a_small_budget():
    # The page's example trains 3 BNNs for 500 epochs (about a minute): run here with 5 epochs
    # and 20 draws; the printed numbers are the page's own run.
    import matplotlib

    matplotlib.use("Agg")
    block = _tested_block(DOCS / "bnn.md", "test_bnn_page_example_runs_on_a_small_budget")
    for full, small in (("epochs=500", "epochs=5"), ("num_samples=200", "num_samples=20")):
        assert block.count(full) == 1, full
        block = block.replace(full, small)
    namespace = {}
    exec(compile(block, "docs/bnn.md", "exec"), namespace)
    idatas = namespace["idatas"]
    assert set(idatas) == {"erm", "probmix", "m-probmix"}
    for idata in idatas.values():
        assert idata.log_likelihood["y"].shape == (1, 20, 50)
