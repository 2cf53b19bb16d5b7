"""The layers: the core imports neither torch nor jax, each adapter imports
without the other's library, the old import paths still work, and the options,
draws and partner tables of the core behave on their own."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from pyro_mixup.core.options import MixOptions
from pyro_mixup.core.pairing import PartnerTable


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_core_imports_neither_torch_nor_jax():
    code = (
        "import sys\n"
        "for m in ('torch', 'pyro', 'jax', 'jaxlib', 'numpyro'): sys.modules[m] = None\n"
        "import pkgutil, importlib, pyro_mixup.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module('pyro_mixup.core.' + m.name)\n"
        "print(sorted(m.name for m in pkgutil.iter_modules(core.__path__)))"
    )
    modules = _run(code)
    for name in (
        "backend",
        "draws",
        "families",
        "handler",
        "inference_data",
        "options",
        "pairing",
        "plain_model",
        "pooling",
        "targets",
    ):
        assert repr(name) in modules


def test_numpyro_side_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['pyro'] = None\n"
        "import pyro_mixup.numpyro as pmn\n"
        "from pyro_mixup.numpyro import embed, mixable, handlers, probmix, mixup\n"
        "import pyro_mixup.diagnostics, pyro_mixup.numpyro.diagnostics\n"
        "import numpyro.distributions as d\n"
        "p = pmn.log_linear_pool([d.Normal(125., 13.5), d.Normal(-125., 13.5)], [0.8, 0.2])\n"
        "assert abs(float(-p.log_prob(80.)) - 3.59) < 5e-3\n"
        "print('ok')"
    )
    assert _run(code) == "ok"


def test_pyro_side_imports_without_jax():
    code = (
        "import sys; sys.modules['jax'] = None; sys.modules['numpyro'] = None\n"
        "import torch, pyro_mixup\n"
        "from pyro_mixup.handlers import probmix, mixup\n"
        "from pyro_mixup import embed, mixable, log_linear_pool, pool_pairs, register\n"
        "import pyro_mixup.diagnostics, pyro_mixup.pyro.diagnostics\n"
        "import pyro.distributions as d\n"
        "p = log_linear_pool([d.Normal(125., 13.5), d.Normal(-125., 13.5)], [0.8, 0.2])\n"
        "assert abs(float(-p.log_prob(torch.tensor(80.))) - 3.59) < 5e-3\n"
        "print('ok')"
    )
    assert _run(code) == "ok"


def test_old_import_paths_still_work():
    import pyro_mixup
    import pyro_mixup.numpyro as pmn
    from pyro_mixup import handlers, pairing, primitives, torch_backend
    from pyro_mixup.errors import UnsupportedDistributionError
    from pyro_mixup.families import ALL_FAMILIES, FAMILY_BY_CLASS_NAME, Family  # noqa: F401
    from pyro_mixup.numpyro.backend import log_linear_pool as np_pool  # noqa: F401
    from pyro_mixup.numpyro.handlers import mixup as np_mixup  # noqa: F401
    from pyro_mixup.numpyro.primitives import embed as np_embed  # noqa: F401

    assert pyro_mixup.log_linear_pool is torch_backend.log_linear_pool
    assert pyro_mixup.embed is primitives.embed and pyro_mixup.mixable is primitives.mixable
    assert handlers.probmix.__module__ == "pyro_mixup.pyro.handlers"
    assert (
        pmn.probmix is pmn.handlers.probmix
        and pmn.UnsupportedDistributionError is UnsupportedDistributionError
    )
    assert pairing.NearestNeighbourPairing and pairing.LabelKernelPairing and pairing.PartnerTable
    assert len(ALL_FAMILIES) == 20


def test_functional_wrappers_keep_name_and_wrapped():
    import inspect

    import pyro_mixup.numpyro as pmn
    from pyro_mixup.diagnostics import unwrap
    from pyro_mixup.handlers import mixup, probmix

    def my_model(x, y=None):
        pass

    for wrap in (probmix, pmn.probmix):
        w = wrap(my_model, alpha=0.5)
        assert w.__name__ == "my_model" and w.__wrapped__ is my_model
        assert (
            unwrap(wrap(mixup(my_model, at="x"), alpha=0.2) if wrap is probmix else w) is my_model
        )
    sig = inspect.signature(probmix)
    assert list(sig.parameters)[:3] == ["fn", "alpha", "lam"] and "rng_key" not in sig.parameters
    assert "rng_key" in inspect.signature(pmn.probmix).parameters
    assert inspect.signature(mixup).parameters["at"].default is inspect.Parameter.empty
    assert ":param float alpha:" in probmix.__doc__ and ":param rng_key:" in pmn.mixup.__doc__


# --- the core on its own, with NumPy arrays -------------------------------------------------


class NumpyArrays:
    """The part of a backend that options need, in NumPy (a third backend, for the core's tests)."""

    shape = staticmethod(np.shape)
    to_numpy = staticmethod(np.asarray)
    weight_array = staticmethod(lambda lam: np.asarray(lam, dtype=np.float64))

    @staticmethod
    def index_array(perm):
        perm = np.asarray(perm)
        if not np.issubdtype(perm.dtype, np.integer):
            raise ValueError(f"perm must hold integer indices; got {perm.dtype}")
        return perm

    @staticmethod
    def check_rng_key(key):
        if key is not None:
            raise ValueError("no keys here")


def test_options_are_validated_once_and_frozen():
    opts = MixOptions(
        alpha=np.float32(0.4), beta=0, sites=["y"], per_example=np.bool_(True), arrays=NumpyArrays
    )
    assert opts.alpha == pytest.approx(0.4) and type(opts.alpha) is float
    assert opts.sites == frozenset({"y"}) and opts.per_example is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.alpha = 1.0  # frozen
    assert MixOptions(lam=0.3, perm=[1, 0], arrays=NumpyArrays).same_draws(
        MixOptions(lam=0.3, perm=[1, 0], arrays=NumpyArrays)
    )
    assert not MixOptions(alpha=0.3, arrays=NumpyArrays).same_draws(
        MixOptions(alpha=0.4, arrays=NumpyArrays)
    )


def test_draws_are_made_once_per_size_and_checked():
    from pyro_mixup.core.draws import Draws

    class Counting:
        calls = 0

        def begin(self):
            pass

        def beta(self, alpha, n):
            Counting.calls += 1
            return 0.25

        def permutation(self, n):
            Counting.calls += 1
            return np.arange(n)[::-1]

        fixed_weight = staticmethod(lambda lam: lam)
        cast_weight = staticmethod(lambda lam, like: lam)

    random_calls = []
    draws = Draws(
        MixOptions(alpha=1.0, arrays=NumpyArrays), Counting(), lambda: random_calls.append(1)
    )
    assert draws.lam(4, None) == draws.lam(4, None) == 0.25
    assert draws.partner(4) is draws.partner(4) and draws.partner(5) is not draws.partner(4)
    assert Counting.calls == 3 and random_calls == [
        1
    ]  # the random hook runs once, before the first draw
    with pytest.raises(ValueError, match="batch of size 1"):
        draws.partner(1)
    fixed = Draws(MixOptions(lam=[0.1, 0.2], perm=[1, 0], arrays=NumpyArrays), Counting())
    with pytest.raises(ValueError, match="lam has 2 values but the batch has 3"):
        fixed.lam(3, None)
    with pytest.raises(ValueError, match="perm has length 2 but the batch has 3"):
        fixed.partner(3)


@pytest.mark.parametrize(
    "candidates,probs,pattern",
    [
        ([[1], [2], [3]], None, r"must lie in 0\.\.2.*row 2"),
        ([[1], [-1], [0]], None, r"must lie in 0\.\.2.*row 1"),
        ([[1.0], [0.0]], None, "integer row indices"),
        ([[1, 2], [0, 2], [0, 1]], [[0.5, 0.5], [1.5, -0.5], [0.5, 0.5]], r"must be >= 0.*row 1"),
        ([[1, 2], [0, 2], [0, 1]], [[0.5, 0.5], [0.2, 0.2], [0.5, 0.5]], r"sum to 1.*row 1"),
        ([[1, 2], [0, 2], [0, 1]], [[0.5, 0.5], [0.5, 0.5], [np.nan, 0.5]], r"finite.*row 2"),
        ([[1, 0], [0, 1]], [[1.0], [1.0]], "shape of candidates"),
        ([1, 0], None, r"\(n, m\) array"),
    ],
)
def test_partner_tables_are_validated_on_construction(candidates, probs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PartnerTable(np.asarray(candidates), None if probs is None else np.asarray(probs))


def test_the_library_never_imports_the_experiments():
    # the experiments use the library like any user; nothing below them may depend on them
    # (pyro_mixup/bnn only re-exports the BNN for the old import paths; cli.py registers commands)
    import re
    from pathlib import Path

    import pyro_mixup

    root = Path(pyro_mixup.__file__).parent
    pattern = re.compile(r"^\s*(from|import)\s+(pyro_mixup\.experiments|\.+experiments)", re.M)
    offenders = [
        str(f.relative_to(root))
        for f in root.rglob("*.py")
        if f.relative_to(root).parts[0] not in ("experiments", "bnn", "cli.py")
        and pattern.search(f.read_text())
    ]
    assert offenders == []


def test_a_fixed_perm_that_is_a_cyclic_shift_is_applied_as_a_roll():
    n = 6
    assert MixOptions(perm=np.roll(np.arange(n), 3), arrays=NumpyArrays).perm_shift == 3
    assert MixOptions(perm=(np.arange(n) + 1) % n, arrays=NumpyArrays).perm_shift == 1
    assert MixOptions(perm=np.array([1, 0, 3, 2, 5, 4]), arrays=NumpyArrays).perm_shift is None
    assert (
        "perm_shift" not in MixOptions.__init__.__code__.co_varnames
    )  # not an option a user passes
