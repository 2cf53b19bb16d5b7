import os
import sys

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA compiles dominate the JAX tests, and several tests (resumed runs, the same model
# fitted per split) compile the same programs again: JAX's persistent cache shares them,
# within a run and across runs on one machine (the user's cache dir, not the clone).
# Keyed by the program, the jax version and the flags: a stale entry cannot be reused wrongly.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pyro-mixup", "jax-tests"
    ),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
sys.path.insert(0, os.path.dirname(__file__))

from backends import harness


@pytest.fixture(params=["pyro", "numpyro"])
def backend(request):
    """The Pyro or the NumPyro side, behind one interface (tests/backends.py)."""
    B = harness(request.param)
    B.reset()
    return B


# The tests' networks are tiny: one torch thread is faster than two, and leaves the
# other core to the second pytest-xdist worker.
import torch  # noqa: E402

torch.set_num_threads(1)
