"""The marginal predictive of a NumPyro model with :func:`~pyro_mixup.numpyro.embed` layers.

Same meaning as :mod:`pyro_mixup.pyro.predictive` (see
:mod:`pyro_mixup.core.predictive`); the draws are mapped with
:func:`jax.lax.map` in batches, as :class:`numpyro.infer.Predictive` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.primitives import _PYRO_STACK, Messenger

from ..core._types import Message
from ..core.plain_model import refuse_active_handlers, unwrap
from ..core.predictive import (
    DEFAULT_NUM_DRAWS,
    MarginalPredictive,
    check_predictive_options,
    latent_site_error,
    missing_site_error,
    mixture_log_density,
    moments,
    subsample_error,
)
from .backend import BACKEND

__all__ = ["marginal_predictive", "mean_embedding"]


class mean_embedding(Messenger):
    """Propagate the mean of every :func:`~pyro_mixup.numpyro.embed` layer (no
    draw): the deterministic shortcut of the M-ProbMix predictive. Usable as
    ``mean_embedding(model)`` or ``with mean_embedding():``.

    **Example:**

    .. doctest::

       >>> import jax.numpy as jnp, numpyro.distributions as dist
       >>> from pyro_mixup.numpyro import embed
       >>> with mean_embedding():
       ...     z = embed("z", dist.Normal(jnp.ones(3), 5.0).to_event(1), dim=-1)
       >>> z.tolist()
       [1.0, 1.0, 1.0]
    """

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "embed":
            msg["value"] = msg["args"][0].mean


#: A NumPyro trace: ``{site name: message}``.
_Trace = dict[str, Message]


def _traced(
    model: Callable[..., Any],
    guide: Callable[..., Any] | None,
    params: Mapping[str, Any] | None,
    embedding: str,
    key: jax.Array,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> tuple[_Trace, _Trace | None]:
    """One draw: ``(model trace, guide trace or None)``, the guide's latents replayed into the model."""
    k_guide, k_model = jax.random.split(key)
    fn, guide_trace = (model if params is None else substitute(model, data=params)), None
    if guide is not None:
        guide_fn = guide if params is None else substitute(guide, data=params)
        guide_trace = trace(seed(guide_fn, k_guide)).get_trace(*args, **kwargs)
        fn = replay(fn, trace=guide_trace)
    if embedding == "mean":
        fn = mean_embedding(fn)
    return trace(seed(fn, k_model)).get_trace(*args, **kwargs), guide_trace


def _site(
    model_trace: _Trace, guide_trace: _Trace | None, site: str, params: Mapping[str, Any] | None
) -> Message:
    """The site's node, checked: present, a sample site, not the guide's, not subsampled."""
    node = model_trace.get(site)
    if node is None or node["type"] != "sample":
        raise missing_site_error(site, [n for n, v in model_trace.items() if v["type"] == "sample"])
    if guide_trace is not None and site in guide_trace:
        raise latent_site_error(site, "guide")
    if params is not None and site in params:
        raise latent_site_error(site, "params")
    for frame in node["cond_indep_stack"]:
        plate = model_trace.get(frame.name)
        if plate is not None and plate["type"] == "plate":
            size, subsample_size = plate["args"][:2]
            if subsample_size is not None and subsample_size != size:
                raise subsample_error(site, frame.name, subsample_size, size)
    return node


def marginal_predictive(
    model: Callable[..., Any],
    rng_key: jax.Array,
    *args: Any,
    site: str = "y",
    num_draws: int = DEFAULT_NUM_DRAWS,
    guide: Callable[..., Any] | None = None,
    params: Mapping[str, Any] | None = None,
    embedding: str = "sample",
    values: ArrayLike | None = None,
    batch_size: int = 100,
    **kwargs: Any,
) -> MarginalPredictive:
    """The predictive of ``site`` given the model's inputs, marginal over its embeddings.

    Runs ``model(*args, **kwargs)`` ``num_draws`` times (after ``guide``, replayed
    into it, when a guide is given -- as :class:`numpyro.infer.Predictive` does),
    each with a fresh draw of every :func:`~pyro_mixup.numpyro.embed` layer, and
    returns the equal-weight mixture of the per-draw distributions of ``site``:
    its log density at ``values`` (default: the site's observed value, if the call
    observes it), its mean and variance (laws of total expectation and variance)
    and one sample per draw.

    :param model: a NumPyro model.
    :param rng_key: a PRNG key for the draws.
    :param str site: the observed (likelihood) site to predict.
    :param int num_draws: mixture components ``S``; the default is stable to 0.002
        nats in the in-distribution NLL of the toy regression, not far out of
        distribution (see ``benchmarks/predictive_draws.py``).
    :param guide: a guide over the model's latent sites, or ``None``.
    :param dict params: trained parameters (``svi.get_params(state)``), substituted
        into model and guide; ``None``: the ``numpyro.param`` initial values.
    :param str embedding: ``"sample"`` (the marginal, the paper's predictive) or
        ``"mean"`` (every embedding at its mean: :class:`mean_embedding`).
    :param values: where to evaluate the log density, broadcastable against the
        site's batch shape (leading dims allowed: a grid of ``y`` per input).
    :param int batch_size: draws vectorised at once (memory against speed).
    :rtype: ~pyro_mixup.core.predictive.MarginalPredictive

    **Example:**

    .. doctest::

       >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
       >>> from pyro_mixup.numpyro import embed
       >>> def model(x, y=None):
       ...     with numpyro.plate("data", len(x)):
       ...         z = embed("z", dist.Normal(x, 1.0))
       ...         return numpyro.sample("y", dist.Normal(z, 1.0), obs=y)
       >>> pred = marginal_predictive(model, jax.random.PRNGKey(0), jnp.zeros(2), jnp.zeros(2), num_draws=4000)
       >>> [round(float(v), 1) for v in pred.variance]   # 1 (embedding) + 1 (noise)
       [2.0, 2.0]
       >>> bool(jnp.abs(pred.log_density + 0.5 * jnp.log(2 * jnp.pi * 2.0)).max() < 0.05)
       True
    """
    num_draws = check_predictive_options(num_draws, embedding, site)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    refuse_active_handlers(
        _PYRO_STACK
    )  # a `with probmix():` around the call would pair the test rows
    model, guide = unwrap(model), None if guide is None else unwrap(guide)
    keys = jax.random.split(rng_key, num_draws)
    # one draw first settles what is static: the site, whether it is observed, whether it has moments
    node = _site(*_traced(model, guide, params, embedding, keys[0], args, kwargs), site, params)
    observed = bool(node["is_observed"])
    with_moments = moments(BACKEND, node["fn"]) is not None
    if values is None and observed:
        values = node["value"]
    values = None if values is None else jnp.asarray(values)

    def one_draw(key: jax.Array) -> dict[str, jax.Array]:
        node = _traced(model, guide, params, embedding, key, args, kwargs)[0][site]
        d = node["fn"]
        out = {"sample": d.sample(jax.random.fold_in(key, 1)) if observed else node["value"]}
        if with_moments:
            out["mean"], out["variance"] = moments(BACKEND, d)
        if values is not None:
            out["log_prob"] = d.log_prob(values)
        return out

    draws = jax.lax.map(one_draw, keys, batch_size=min(batch_size, num_draws))
    return MarginalPredictive(
        site=site,
        draw_means=draws.get("mean"),
        draw_variances=draws.get("variance"),
        samples=draws["sample"],
        log_density=mixture_log_density(draws["log_prob"], logsumexp)
        if values is not None
        else None,
        embedding=embedding,
    )
