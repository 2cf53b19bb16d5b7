import os
import sys

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA compiles dominate the JAX tests, and several tests (CLI runs in subprocesses,
# resumed runs) compile the same programs again: JAX's persistent cache shares them.
# Keyed by the program and the jax version, so a stale entry cannot be reused wrongly.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".pytest_cache", "jax")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
sys.path.insert(0, os.path.dirname(__file__))

from backends import harness  # noqa: E402


@pytest.fixture(params=["pyro", "numpyro"])
def backend(request):
    """The Pyro or the NumPyro side, behind one interface (tests/backends.py)."""
    B = harness(request.param)
    B.reset()
    return B
