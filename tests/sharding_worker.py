"""The sharded half of ``tests/test_sharding.py``, run in a fresh process.

JAX reads ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (8 simulated
CPU devices) only when it starts, and the test session has started it already:
the test runs ``python tests/sharding_worker.py`` with that flag and reads the
JSON this prints. Nothing runs on import.

What it computes, for a small heteroscedastic MLP wrapped by
:func:`pyro_mixup.numpyro.handlers.probmix`: the ELBO loss and its gradient
under ``jax.jit`` with the batch sharded over the 8 devices
(``NamedSharding(mesh, P("data"))``) and unsharded, for the same key, with
global pairing (the default) and with ``ShardLocalPairing(8)``; the drawn local
permutation (read off ``mixup(at="x", lam=0)`` of ``arange(n)``), sharded and
not; the loss with that permutation passed as ``perm=``; and the collectives in
each compiled step.
"""

from __future__ import annotations

import json
import re
import sys

N, D, H, DEVICES = 64, 3, 16, 8
COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")


def collectives(hlo: str) -> dict[str, int]:
    """How many of each cross-device op a compiled module's text holds (an async
    pair ``-start``/``-done`` counts once)."""
    return {op: len(re.findall(rf" {op}(?:-start)?\(", hlo)) for op in COLLECTIVES}


def main() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as nd
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P
    from numpyro.infer import Trace_ELBO

    import pyro_mixup.numpyro as pmn
    from pyro_mixup.pairing import ShardLocalPairing

    if jax.device_count() != DEVICES:
        raise SystemExit(
            f"expected {DEVICES} devices (XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{DEVICES} before jax starts); got {jax.device_count()}"
        )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = (x.sum(1) + 0.3 * rng.normal(size=N)).astype(np.float32)
    params = {
        "w1": jnp.asarray(rng.normal(size=(D, H)) / np.sqrt(D), jnp.float32),
        "b1": jnp.zeros(H),
        "w2": jnp.asarray(rng.normal(size=(H, 2)) / np.sqrt(H), jnp.float32),
    }

    def model(x, y=None):
        w1, b1 = numpyro.param("w1", params["w1"]), numpyro.param("b1", params["b1"])
        out = jnp.tanh(x @ w1 + b1) @ numpyro.param("w2", params["w2"])
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", nd.Normal(out[:, 0], jax.nn.softplus(out[:, 1]) + 1e-2), obs=y)

    def guide(x, y=None):
        pass

    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = NamedSharding(mesh, P("data"))
    xs, ys = jax.device_put(x, rows), jax.device_put(y, rows)
    assert len(xs.addressable_shards) == DEVICES and xs.addressable_shards[0].data.shape == (
        N // DEVICES,
        D,
    )
    key = jax.random.key(3)
    local = ShardLocalPairing(DEVICES)

    def loss_and_grad(wrapped):
        def f(p, key, x, y):
            return Trace_ELBO().loss(key, p, wrapped, guide, x, y)

        return jax.jit(jax.value_and_grad(f))

    def run(wrapped):
        step = loss_and_grad(wrapped)
        out = {}
        for name, (xa, ya) in (("sharded", (xs, ys)), ("unsharded", (x, y))):
            loss, grad = step(params, key, xa, ya)
            out[name] = {
                "loss": float(loss),
                "grad": {k: np.asarray(v).tolist() for k, v in grad.items()},
            }
        out["collectives"] = collectives(step.lower(params, key, xs, ys).compile().as_text())
        return out

    def perm_of(pairing, xa):
        def f(xa):
            seen = {}

            def probe(xa):
                with numpyro.plate("data", N):
                    seen["x"] = pmn.mixable("x", xa)
                    numpyro.sample("y", nd.Normal(seen["x"], 1.0), obs=jnp.zeros(N))

            numpyro.handlers.seed(
                pmn.handlers.mixup(
                    probe, at="x", lam=0.0, pairing=pairing, rng_key=jax.random.key(7)
                ),
                0,
            )(xa)
            return seen["x"]

        compiled = jax.jit(f)
        return np.asarray(compiled(xa)).astype(int).tolist(), collectives(
            compiled.lower(xa).compile().as_text()
        )

    ids = np.arange(N, dtype=np.float32)
    perm_sharded, perm_collectives = perm_of(local, jax.device_put(ids, rows))
    perm_unsharded, _ = perm_of(local, ids)
    fixed = dict(lam=0.3, rng_key=jax.random.key(7))
    result = {
        "devices": jax.device_count(),
        "n": N,
        "erm": run(model),
        "global": run(pmn.handlers.probmix(model, alpha=1.0)),
        "local": run(pmn.handlers.probmix(model, alpha=1.0, pairing=local)),
        "local_perm": {
            "sharded": perm_sharded,
            "unsharded": perm_unsharded,
            "collectives": perm_collectives,
        },
        # lam fixed, partners drawn shard by shard (sharded) == the same perm given as perm= (unsharded)
        "local_fixed_lam": run(pmn.handlers.probmix(model, pairing=local, **fixed))["sharded"],
        "given_perm": run(pmn.handlers.probmix(model, lam=0.3, perm=np.asarray(perm_unsharded)))[
            "unsharded"
        ],
    }
    return result


if __name__ == "__main__":
    json.dump(main(), sys.stdout)
