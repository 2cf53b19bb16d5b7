"""The built wheel is what the tests tested: build it, install it (not editable) into a fresh
virtualenv, import both backends from there and run the paper's worked example.

The fresh venv gets only the wheel; its dependencies (torch, pyro, jax, ...) are borrowed from the
test venv through a path entry placed *after* the venv's own site-packages, so the import of
``pyro_mixup`` must come from the installed wheel (asserted), never from this source tree.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = r"""
import json, sys, pathlib
import pyro_mixup, pyro_mixup.numpyro as pmn
import torch, pyro.distributions as dist, numpyro.distributions as ndist, jax.numpy as jnp

# the paper's worked example (section 3.2.3), in both backends
p = pyro_mixup.log_linear_pool([dist.Normal(125.0, 13.5), dist.Normal(-125.0, 13.5)], [0.8, 0.2])
q = pmn.log_linear_pool([ndist.Normal(125.0, 13.5), ndist.Normal(-125.0, 13.5)], [0.8, 0.2])
print(json.dumps({
    "version": pyro_mixup.__version__,
    "file": pyro_mixup.__file__,
    "numpyro_file": pmn.__file__,
    "typed": (pathlib.Path(pyro_mixup.__file__).parent / "py.typed").is_file(),
    "pyro": [float(p.loc), float(p.scale), float(-p.log_prob(torch.tensor(80.0)))],
    "numpyro": [float(q.loc), float(q.scale), float(-q.log_prob(jnp.array(80.0)))],
}))
"""


def _run(*cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_wheel_installs_into_a_fresh_venv_and_runs_the_worked_example(tmp_path):
    pytest.importorskip("setuptools", reason="the wheel is built with the test venv's setuptools")
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "pyro_mixup", src / "pyro_mixup", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist_dir = tmp_path / "dist"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        dist_dir,
        src,
    )
    (wheel,) = dist_dir.glob("pyro_mixup-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pyro_mixup/py.typed" in names
    assert "pyro_mixup/core/pooling.py" in names and "pyro_mixup/numpyro/handlers.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", wheel)
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    # the dependencies, after the venv's own site-packages (a .pth line is appended to sys.path)
    (site / "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = _run(py, "-c", SMOKE, cwd=tmp_path, env=env)
    print(out)  # the smoke test's output, for the release note (pytest -s)
    res = json.loads(out.strip().splitlines()[-1])

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert res["version"] == version
    for key in ("file", "numpyro_file"):
        assert Path(res[key]).is_relative_to(site), f"{res[key]} is not the installed wheel"
    assert res["typed"]
    for backend in ("pyro", "numpyro"):
        loc, scale, nll = res[backend]
        assert loc == pytest.approx(75.0) and scale == pytest.approx(13.5)
        assert nll == pytest.approx(3.59, abs=5e-3)
    # the console script was installed with the wheel
    assert "bench" in _run(venv / "bin" / "pyro-mixup", "--help", env=env)
