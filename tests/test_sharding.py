"""ProbMix on a batch sharded over devices (JAX) and shard-local pairing (both backends).

``ShardLocalPairing(k)`` draws a permutation within each of ``k`` contiguous
shards of the batch: checked here in Pyro and NumPyro (in shard, a permutation,
uniform and independent per shard, refused for a batch that does not split).
The sharded runs need 8 (simulated) devices, which JAX only creates when it
starts: they run in a subprocess, ``tests/sharding_worker.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from pyro_mixup import MixupUsageError
from pyro_mixup.pairing import ShardLocalPairing

N, SHARDS = 12, 3


def _partners(B, pairing, seed, n=N, lam=0.0):
    """Each example's partner: a mixup (lam=0) of ``arange(n)`` returns ``x[perm]``."""
    seen = {}

    def model(x):
        with B.plate("data", n):
            seen["x"] = B.mixable("x", x)

    B.trace(
        B.mixup(model, at="x", lam=lam, pairing=pairing),
        B.array(np.arange(n, dtype=np.float32)),
        seed=seed,
    )
    return B.np(seen["x"]).round().astype(int)


def test_shard_local_pairing_keeps_partners_in_their_shard(backend):
    B = backend
    size = N // SHARDS
    seen = set()
    for seed in range(8):
        p = _partners(B, ShardLocalPairing(SHARDS), seed)
        assert sorted(p.tolist()) == list(range(N))  # a permutation
        assert (p // size == np.arange(N) // size).all()  # every partner in its own shard
        seen.add(tuple(p))
    assert len(seen) > 4  # drawn afresh
    # one shard: the whole batch (the default pairing's support)
    assert sorted(_partners(B, ShardLocalPairing(1), 0).tolist()) == list(range(N))


def test_shard_local_probmix_equals_its_perm(backend):
    """probmix with local pairing scores exactly what probmix with that permutation
    given as perm= scores (the partner draw is the first draw when lam is fixed)."""
    B = backend
    g = np.random.default_rng(1)
    x, y = g.normal(size=N).astype(np.float32), g.normal(size=N).astype(np.float32)

    def model(x, y):
        with B.plate("data", N):
            B.sample("y", B.dist.Normal(2.0 * x, 0.5 + x**2), obs=y)

    for seed in range(3):
        perm = _partners(B, ShardLocalPairing(SHARDS), seed, lam=0.0)
        local = B.log_density(
            B.probmix(model, lam=0.3, pairing=ShardLocalPairing(SHARDS)),
            B.array(x),
            B.array(y),
            seed=seed,
        )
        given = B.log_density(B.probmix(model, lam=0.3, perm=perm), B.array(x), B.array(y))
        # perm= and a local pairing together: the perm is checked local, then applied shard by shard
        both = B.log_density(
            B.probmix(model, lam=0.3, perm=perm, pairing=ShardLocalPairing(SHARDS)),
            B.array(x),
            B.array(y),
        )
        assert local == pytest.approx(given, rel=1e-6) and both == pytest.approx(given, rel=1e-6)


def test_shard_local_permutations_are_uniform_and_independent_per_shard():
    """Two shards of 3: all 36 pairs of within-shard permutations equally often (chi-square)."""
    import jax
    import torch

    from pyro_mixup.numpyro.random import HashStream
    from pyro_mixup.pyro.random import TorchRandom

    draws = 3600
    keys = jax.random.split(jax.random.key(0), draws)
    jax_perms = np.asarray(jax.jit(jax.vmap(lambda k: HashStream(k).local_permutation(6, 2)))(keys))
    torch.manual_seed(0)
    torch_perms = np.stack([TorchRandom.local_permutation(6, 2).numpy() for _ in range(draws)])
    cells = {
        (a, tuple(np.array(b) + 3))
        for a, b in itertools.product(itertools.permutations(range(3)), repeat=2)
    }
    for perms in (jax_perms, torch_perms):
        counts = {}
        for p in perms:
            cell = (tuple(p[:3]), tuple(p[3:]))
            assert cell in cells  # in shard, a permutation of each shard
            counts[cell] = counts.get(cell, 0) + 1
        observed = np.array([counts.get(c, 0) for c in cells])
        chi2 = ((observed - draws / 36) ** 2 / (draws / 36)).sum()
        assert chi2 < 70  # 35 degrees of freedom: P(chi2 > 70) ~ 4e-4


def test_shard_local_pairing_refuses_what_it_cannot_do(backend):
    B = backend

    def model(x):
        with B.plate("data", x.shape[0]):
            B.mixable("x", x)

    def run(n, **options):
        B.trace(B.mixup(model, at="x", **options), B.array(np.zeros((n, 2), np.float32)))

    with pytest.raises(MixupUsageError, match=r"batch of 10 examples does not split into 4 equal"):
        run(10, pairing=ShardLocalPairing(4))
    with pytest.raises(MixupUsageError, match=r"multiple of 4 with at least 8 examples"):
        run(4, pairing=ShardLocalPairing(4))  # one row per shard: nobody to pair with
    with pytest.raises(MixupUsageError, match=r"pairs example 1 \(shard 0\) with 2 \(shard 1\)"):
        run(4, perm=[0, 2, 1, 3], pairing=ShardLocalPairing(2))
    for bad in (0, -1, 2.0, True, "8"):
        with pytest.raises(ValueError, match="num_shards must be a positive integer"):
            ShardLocalPairing(bad)
    with pytest.raises(ValueError, match="ShardLocalPairing"):
        run(4, pairing="local")  # the error names the option to use


def test_probmix_under_jax_sharding_matches_unsharded(tmp_path):
    """8 simulated CPU devices, batch sharded along its rows, jitted loss and gradient."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    script = pathlib.Path(__file__).with_name("sharding_worker.py")
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    assert r["devices"] == 8
    n, size = r["n"], r["n"] // 8

    def close(a, b):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        for k in a["grad"]:
            np.testing.assert_allclose(a["grad"][k], b["grad"][k], rtol=1e-4, atol=1e-5)

    # the same key gives the same loss and gradient, sharded or not, for either pairing
    for pairing in ("erm", "global", "local"):
        close(r[pairing]["sharded"], r[pairing]["unsharded"])
    assert r["global"]["sharded"]["loss"] != pytest.approx(r["erm"]["sharded"]["loss"])
    # the local permutation: the same draw sharded or not, a permutation, in shard
    perm = np.array(r["local_perm"]["sharded"])
    assert perm.tolist() == r["local_perm"]["unsharded"]
    assert sorted(perm.tolist()) == list(range(n))
    assert (perm // size == np.arange(n) // size).all() and (perm != np.arange(n)).any()
    # sharded with local pairing == unsharded with that permutation given as perm=
    close(r["local_fixed_lam"], r["given_perm"])
    # what crosses devices: global pairing gathers partners from other shards (and sums
    # the scattered gradients back); local pairing moves nothing ERM does not (the
    # all-reduce of the parameters' gradient and the loss)
    none = {"all-gather": 0, "all-to-all": 0, "collective-permute": 0}
    assert {k: r["local"]["collectives"][k] for k in none} == none
    assert r["local"]["collectives"] == r["erm"]["collectives"]
    assert sum(r["global"]["collectives"].values()) > sum(r["erm"]["collectives"].values())
    assert r["local_perm"]["collectives"] == {**none, "all-reduce": 0, "reduce-scatter": 0}


def test_shard_local_pairing_refuses_a_traced_perm():
    # under jax.jit a perm cannot be checked to stay in its shards: refused, never gathered
    import jax
    import jax.numpy as jnp
    import numpyro

    import pyro_mixup.numpyro as pmn

    def mixed(x, perm):
        seen = {}

        def model(x):
            with numpyro.plate("data", 4):
                seen["x"] = pmn.mixable("x", x)

        handler = pmn.handlers.mixup(
            model, at="x", lam=0.0, perm=perm, pairing=ShardLocalPairing(2)
        )
        numpyro.handlers.seed(handler, 0)(x)
        return seen["x"]

    x = jnp.arange(4, dtype=jnp.float32)
    with pytest.raises(MixupUsageError, match="must be concrete"):
        jax.jit(mixed)(x, jnp.array([0, 2, 1, 3]))
    # a concrete in-shard perm under jit is fine
    out = jax.jit(lambda x: mixed(x, np.array([1, 0, 3, 2])))(x)
    np.testing.assert_array_equal(np.asarray(out), [1, 0, 3, 2])
