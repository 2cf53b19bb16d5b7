"""ArviZ 1.x (``xarray.DataTree``): tests/arviz1_check.py run in a Python >= 3.12
environment that has ``arviz>=1``, when there is one.

ArviZ 1.x does not install on the suite's Python, so the check runs in its own
virtualenv: ``make test-arviz1`` builds ``.venv-arviz1`` (about 50 s) and runs
the check (about 20 s). ``PYRO_MIXUP_ARVIZ1_PYTHON`` points at another
interpreter. Without one this test is skipped, and says what it found.
"""

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = os.path.join(ROOT, "tests", "arviz1_check.py")


def _arviz1_python():
    given = os.environ.get("PYRO_MIXUP_ARVIZ1_PYTHON")
    if given and os.access(given, os.X_OK):
        return given
    # .ready: `make test-arviz1` finished installing it (.ci/run builds it while the suite runs)
    if os.path.exists(os.path.join(ROOT, ".venv-arviz1", ".ready")):
        return os.path.join(ROOT, ".venv-arviz1", "bin", "python")
    return None


def _pythons_312_or_later():
    found = [shutil.which(f"python3.{minor}") for minor in range(12, 16)]
    found += glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3.1[2-9]"))
    return sorted({p for p in found if p})


def test_numpyro_path_under_arviz1():
    if os.environ.get("PYRO_MIXUP_ARVIZ1_IN_CI"):
        pytest.skip(".ci/run runs this check itself (make test-arviz1), beside the suite")
    python = _arviz1_python()
    if python is None:
        pythons = _pythons_312_or_later()
        pytest.skip(
            "no ArviZ 1.x environment (.venv-arviz1 or $PYRO_MIXUP_ARVIZ1_PYTHON): "
            + (
                f"run `make test-arviz1` (Python >= 3.12 found: {pythons[0]})"
                if pythons
                else "ArviZ 1.x needs Python >= 3.12 and none was found, so the DataTree path is not checked here"
            )
        )
    out = subprocess.run([python, CHECK], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ok", out.stdout
