"""The backends' random sources: Beta(alpha, alpha) weights, permutations,
shifts, on both backends; NumPyro's counter-based HashStream."""

import jax
import numpy as np
import pytest
import scipy.stats as st
import torch
from jax import random

from pyro_mixup.numpyro.random import HashStream, KeyedRandom, beta_symmetric
from pyro_mixup.pyro.random import TorchRandom


def _torch_lams(alpha, n, size):
    src = TorchRandom()
    np.random.seed(0)
    import random as pyrandom

    pyrandom.seed(0)
    if n is None:
        return np.array([src.beta(alpha, None) for _ in range(size)])
    return np.concatenate([src.beta(alpha, n).numpy() for _ in range(size // n)])


@pytest.mark.parametrize("alpha", [0.05, 0.4, 1.0, 3.0])
@pytest.mark.parametrize("per_example", [False, True])
def test_torch_beta_draws(alpha, per_example):
    lam = _torch_lams(alpha, 64 if per_example else None, 8000)
    assert ((lam >= 0) & (lam <= 1)).all()
    # the tails (for small alpha many draws round to exactly 0 or 1, as they should)
    frac, expect = np.mean(np.minimum(lam, 1 - lam) < 1e-3), 2 * st.beta(alpha, alpha).cdf(1e-3)
    assert abs(frac - expect) < 4 * np.sqrt(expect * (1 - expect) / len(lam)) + 1e-4
    if alpha >= 0.4:
        assert st.kstest(lam.astype(np.float64), st.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_torch_beta_under_tracing_is_a_torch_op():
    src = TorchRandom()
    traced = torch.jit.trace(lambda x: x * src.beta(0.5, 8), torch.ones(8), check_trace=False)
    a, b = traced(torch.ones(8)), traced(torch.ones(8))
    assert not torch.equal(a, b) and ((a >= 0) & (a <= 1)).all()  # a fresh draw per call


def test_tiny_alpha_gives_finite_weights_in_float32():
    for lam in (_torch_lams(1e-3, 64, 640), _torch_lams(1e-3, None, 200)):
        assert np.isfinite(lam).all() and ((lam >= 0) & (lam <= 1)).all()
        assert np.mean(np.minimum(lam, 1 - lam) < 1e-3) > 0.9
    lam = np.asarray(beta_symmetric(random.key(0), 1e-3, (640,)))
    assert np.isfinite(lam).all() and np.mean(np.minimum(lam, 1 - lam) < 1e-3) > 0.9


def test_numpyro_beta_sampler_matches_jax_beta():
    for a in (0.05, 0.4, 1.0, 3.0):
        ours = np.asarray(beta_symmetric(random.key(1), a, (40_000,)))
        ref = np.asarray(random.beta(random.key(2), a, a, (40_000,)))
        assert st.ks_2samp(ours, ref).pvalue > 1e-3, a
        # the tails, on the log scale
        assert (
            st.ks_2samp(
                np.log(np.minimum(ours, 1 - ours) + 1e-30), np.log(np.minimum(ref, 1 - ref) + 1e-30)
            ).pvalue
            > 1e-3
        ), a


def test_hash_stream_permutations_are_uniform():
    perms = np.asarray(
        jax.vmap(lambda k: HashStream(k).permutation(5))(random.split(random.key(0), 12_000))
    )
    assert all(sorted(p) == list(range(5)) for p in perms[:200])
    counts = np.unique(perms @ (5 ** np.arange(5)), return_counts=True)[1]
    assert len(counts) == 120 and st.chisquare(counts).pvalue > 1e-3  # all 120, equally often
    p = np.asarray(HashStream(random.key(5)).permutation(1000))
    assert sorted(p.tolist()) == list(range(1000))


def test_torch_permutations_and_shifts_are_uniform():
    import random as pyrandom

    torch.manual_seed(0)
    pyrandom.seed(0)
    src = TorchRandom()
    perms = np.stack([src.permutation(5).numpy() for _ in range(6000)])
    counts = np.unique(perms @ (5 ** np.arange(5)), return_counts=True)[1]
    assert len(counts) == 120 and st.chisquare(counts).pvalue > 1e-3
    shifts = np.bincount([src.shift(7) for _ in range(7000)], minlength=7)
    assert st.chisquare(shifts).pvalue > 1e-3


def test_keyed_random_needs_a_key():
    with pytest.raises(ValueError, match="numpyro.handlers.seed or pass rng_key="):
        KeyedRandom().permutation(4)
    a = KeyedRandom(random.key(3)).permutation(6)
    b = KeyedRandom(random.key(3)).permutation(6)
    np.testing.assert_array_equal(a, b)
