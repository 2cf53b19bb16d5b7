import os
import sys

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))

from backends import harness  # noqa: E402


@pytest.fixture(params=["pyro", "numpyro"])
def backend(request):
    """The Pyro or the NumPyro side, behind one interface (tests/backends.py)."""
    B = harness(request.param)
    B.reset()
    return B
