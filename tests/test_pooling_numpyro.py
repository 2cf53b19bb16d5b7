"""The NumPyro backend: the same pools as the torch backend, the defining
identity, jit, and imports without torch."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as ndist
import pytest
import torch
from families_cases import CASES, TORCH_ONLY, make_numpyro, make_torch

import pyro_mixup
import pyro_mixup.numpyro as pmn
from pyro_mixup.families import FAMILY_BY_CLASS_NAME

NUMPYRO = sorted(set(CASES) - TORCH_ONLY)


def _family(name):
    key = "MultivariateNormal" if name.startswith(("MultivariateNormal", "LowRank")) else name
    return FAMILY_BY_CLASS_NAME[key]


@pytest.mark.parametrize("name", NUMPYRO)
def test_same_parameters_as_torch(name):
    rng = np.random.default_rng(4)
    params = [CASES[name](rng) for _ in range(3)]
    w = [0.25, 0.45, 0.30]
    t = pyro_mixup.log_linear_pool([make_torch(name, p, torch.float32) for p in params], w)
    j = pmn.log_linear_pool([make_numpyro(name, p) for p in params], w)
    for attr in _family(name).params:
        a, b = getattr(t, attr).detach().numpy(), np.asarray(getattr(j, attr))
        if attr == "logits" and a.ndim:  # categorical logits: equal up to normalisation
            a, b = a - a.max(-1, keepdims=True), b - b.max(-1, keepdims=True)
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4, err_msg=f"{name}.{attr}")


@pytest.mark.parametrize("name", NUMPYRO)
def test_defining_identity_numpyro(name):
    rng = np.random.default_rng(8)
    ds = [make_numpyro(name, CASES[name](rng)) for _ in range(2)]
    w = [0.6, 0.4]
    pooled = pmn.log_linear_pool(ds, w)
    y = jnp.concatenate([d.sample(jax.random.PRNGKey(i), (6,)) for i, d in enumerate(ds)])
    diff = pooled.log_prob(y) - (w[0] * ds[0].log_prob(y) + w[1] * ds[1].log_prob(y))
    diff = np.asarray(diff)
    assert np.isfinite(diff).all()
    assert np.ptp(diff) < 1e-3 * max(1.0, np.abs(diff).max())


def test_pool_pairs_under_jit_and_grad():
    loc = jnp.array([[0.0, 1.0], [10.0, 11.0], [-4.0, 2.0]])
    d = ndist.Normal(loc, 2.0).to_event(1)
    perm = jnp.array([2, 0, 1])

    @jax.jit
    def f(lam, loc):
        pooled = pmn.pool_pairs(ndist.Normal(loc, 2.0).to_event(1), lam, perm, dim=0)
        return pooled.log_prob(jnp.zeros((3, 2))).sum(), pooled.base_dist.loc

    _value, pooled_loc = f(0.25, loc)
    np.testing.assert_allclose(pooled_loc, 0.25 * loc + 0.75 * loc[perm], rtol=1e-6)
    g_lam, g_loc = jax.grad(lambda lam_, m: f(lam_, m)[0], argnums=(0, 1))(0.25, loc)
    assert np.isfinite(g_lam) and g_lam != 0 and np.all(np.isfinite(g_loc))
    assert d.batch_shape == (3,)


def test_numpyro_errors_match_torch():
    with pytest.raises(pyro_mixup.UnsupportedDistributionError, match="StudentT"):
        pmn.log_linear_pool([ndist.StudentT(3.0), ndist.StudentT(3.0)], [0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        pmn.log_linear_pool([ndist.Normal(0.0, 1.0), ndist.Normal(1.0, 1.0)], [0.5, 0.6])
    with pytest.raises(ValueError, match="total_count"):
        pmn.log_linear_pool(
            [ndist.BinomialProbs(0.5, total_count=3), ndist.BinomialProbs(0.5, total_count=4)],
            [0.5, 0.5],
        )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pmn.pool_pairs(ndist.Normal(jnp.zeros(3), 1.0), 1.5, jnp.array([1, 2, 0]))
    with pytest.raises(ValueError, match="batch of size 1"):
        pmn.pool_pairs(ndist.Normal(jnp.zeros(1), 1.0), 0.5, jnp.array([0]))


def test_pool_pairs_exact_at_the_ends_across_scales():
    # precisions 1e6 and 1/64 in float32: lam = 1 must return the first exactly
    d = ndist.Normal(jnp.array([0.5, -1.0]), jnp.array([1e-3, 8.0]))
    pooled = pmn.pool_pairs(d, 1.0, jnp.array([1, 0]))
    np.testing.assert_allclose(pooled.loc, d.loc, rtol=1e-6)
    np.testing.assert_allclose(pooled.scale, d.scale, rtol=1e-6)


def _numpyro_wrapped_cases():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    a = ndist.Normal(jax.random.normal(k[0], (3, 2)), 0.5 + jax.random.uniform(k[1], (3, 2)))
    b = ndist.Normal(jax.random.normal(k[2], (3, 2)), 0.5 + jax.random.uniform(k[3], (3, 2)))
    m1, m2 = jnp.array([True, True, False]), jnp.array([True, False, True])
    aff = ndist.transforms.AffineTransform(1.0, 2.0)
    return {
        "independent": ([a.to_event(1), b.to_event(1)], None),
        "expanded": (
            [ndist.Gamma(2.0, 1.0).expand([3]), ndist.Gamma(jnp.array([3.0, 1.5, 2.5]), 2.0)],
            None,
        ),
        "masked": (
            [ndist.Normal(jnp.zeros(3), 1.0).mask(m1), ndist.Normal(jnp.ones(3), 2.0).mask(m2)],
            m1 & m2,
        ),
        "transformed": (
            [
                ndist.TransformedDistribution(ndist.Normal(jnp.zeros(3), 1.0), [aff]),
                ndist.TransformedDistribution(ndist.Normal(jnp.ones(3), 3.0), [aff]),
            ],
            None,
        ),
    }


@pytest.mark.parametrize("case", sorted(_numpyro_wrapped_cases()))
def test_wrappers_defining_identity_numpyro(case):
    dists, mask = _numpyro_wrapped_cases()[case]
    w = [0.35, 0.65]
    pooled = pmn.log_linear_pool(dists, w)
    plain = [d.base_dist for d in dists] if mask is not None else dists
    core = pooled.base_dist if mask is not None else pooled
    y = jnp.concatenate([d.sample(jax.random.PRNGKey(i), (5,)) for i, d in enumerate(plain)])
    diff = np.asarray(
        core.log_prob(y) - (w[0] * plain[0].log_prob(y) + w[1] * plain[1].log_prob(y))
    )
    diff = diff.reshape(len(y), -1)
    assert np.isfinite(diff).all() and np.ptp(diff, axis=0).max() < 1e-4
    assert pooled.batch_shape == dists[1].batch_shape and pooled.event_shape == dists[0].event_shape
    if mask is not None:
        np.testing.assert_array_equal(pooled._mask, mask)
