"""NumPyro primitives that mark where a handler may mix: :func:`embed` and :func:`mixable`.

Both are effectful operations (like ``numpyro.sample``): they send a message of
their own type (``"embed"``, ``"mixable"``) through NumPyro's handler stack with
:func:`numpyro.primitives.apply_stack`. Without a handler whose ``at=`` names
them they return their input (``mixable``) or a reparameterised draw
(``embed``); neither adds a sample site, so no guide needs to know about them
and the ELBO ignores them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpyro
from numpyro.distributions import Distribution
from numpyro.primitives import _PYRO_STACK, apply_stack


def _mixable(tensor: jax.Array, event_dim: int | None = None, dim: int | None = None) -> jax.Array:
    return tensor


def _send(kind: str, name: str, fn: Callable[..., Any], arg: Any, kwargs: dict[str, Any]) -> Any:
    """A message of our own type through NumPyro's handler stack; its value."""
    msg = {
        "type": kind,
        "name": name,
        "fn": fn,
        "args": (arg,),
        "kwargs": kwargs,
        "value": None,
        "scale": None,
        "cond_indep_stack": [],
        "infer": {},
    }
    return apply_stack(msg)["value"]


def _no_key(name: str) -> ValueError:
    return ValueError(
        f"embed({name!r}, ...) draws z and needs a PRNG key: run the model under "
        "numpyro.handlers.seed (SVI, Predictive and MCMC do this) or pass rng_key="
    )


def embed(
    name: str,
    distribution: Distribution,
    *,
    dim: int | None = None,
    rng_key: jax.Array | None = None,
) -> jax.Array:
    """A stochastic embedding layer (M-ProbMix, paper eq. 27).

    Returns a reparameterised draw ``z ~ distribution``; adds no latent site.
    Under :func:`~pyro_mixup.numpyro.handlers.probmix` with ``at=name`` the draw
    comes from the log-linear pool of each example's embedding distribution
    with its partner's.

    :param str name: the name handlers refer to with ``at=``.
    :param distribution: a reparameterisable distribution whose batch shape
        holds the examples (e.g. ``Normal(m, s).to_event(1)``).
    :param int dim: the batch dim that indexes examples, for an embedding
        outside any plate; inside a plate the plate's dim is used (and ``dim``
        must agree). Outside plates and without ``dim`` a handler refuses to guess.
    :param rng_key: a PRNG key for the draw; default: one from the enclosing
        :class:`~numpyro.handlers.seed` (``numpyro.prng_key()``).

    **Example:**

    .. doctest::

       >>> import jax.numpy as jnp
       >>> import numpyro, numpyro.distributions as dist
       >>> with numpyro.handlers.seed(rng_seed=0):
       ...     z = embed("h", dist.Normal(jnp.zeros((4, 3)), 1.0).to_event(1))
       >>> z.shape
       (4, 3)
    """
    if not getattr(distribution, "has_rsample", False):
        raise ValueError(
            f"embed({name!r}, ...) needs a reparameterisable distribution (has_rsample); "
            f"got {type(distribution).__name__}"
        )
    if not _PYRO_STACK:
        if rng_key is None:
            raise _no_key(name)
        return distribution.rsample(rng_key)
    if rng_key is None:
        rng_key = (
            numpyro.prng_key()
        )  # None without a seed: refused when (and only if) a draw is made

    def draw(
        distribution: Distribution, dim: int | None = None, rng_key: jax.Array | None = None
    ) -> jax.Array:
        if rng_key is None:  # a handler such as mean_embedding may answer without a draw
            raise _no_key(name)
        return distribution.rsample(rng_key)

    return _send("embed", name, draw, distribution, {"dim": dim, "rng_key": rng_key})


def mixable(
    name: str, tensor: jax.Array, *, event_dim: int | None = None, dim: int | None = None
) -> jax.Array:
    """Mark a deterministic array (inputs, a hidden layer) that mixup may mix.

    Returns ``tensor`` unchanged, except under
    :func:`~pyro_mixup.numpyro.handlers.mixup` with ``at=name``, which returns
    ``lam * t + (1 - lam) * t[perm]`` along the example dim.

    :param str name: the name handlers refer to with ``at=``.
    :param tensor: the array, examples along one batch dim.
    :param int event_dim: number of rightmost feature dims (default: 1 if the
        array has 2 or more dims, else 0; required when that leaves more batch
        dims than the enclosing plates explain, e.g. images ``(n, C, H, W)``).
    :param int dim: the batch dim that indexes examples, for an array outside
        any plate (``-1``: the dim left of the feature dims); inside a plate the
        plate's dim is used. Outside plates and without ``dim`` a handler
        refuses to guess.

    **Example:**

    .. doctest::

       >>> import jax.numpy as jnp
       >>> mixable("x", jnp.ones((5, 2))).shape
       (5, 2)
    """
    if not _PYRO_STACK:
        return tensor
    return _send("mixable", name, _mixable, tensor, {"event_dim": event_dim, "dim": dim})
