"""The marginal predictive of a Pyro model with :func:`~pyro_mixup.embed` layers.

:func:`marginal_predictive` is the paper's M-ProbMix predictive
``p(y | x) = \u222b p(y | z) q(z | x) dz`` (and, given a guide, the posterior
predictive over the latents too) as an equal-weight mixture of ``num_draws``
draws; :func:`mean_embedding` is the shortcut that propagates the mean of every
embedding instead of a draw. See :mod:`pyro_mixup.core.predictive`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from numpy.typing import ArrayLike
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK, Message
from pyro.poutine.trace_struct import Trace

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

__all__ = ["MeanEmbeddingMessenger", "marginal_predictive", "mean_embedding"]


class MeanEmbeddingMessenger(Messenger):
    """Every :func:`~pyro_mixup.embed` layer returns its distribution's mean instead of a draw."""

    def _process_message(self, msg: Message) -> None:
        if msg["type"] == "embed":
            msg["value"] = msg["args"][0].mean


def mean_embedding(
    fn: Callable[..., Any] | None = None,
) -> MeanEmbeddingMessenger | Callable[..., Any]:
    """Propagate the mean of every :func:`~pyro_mixup.embed` layer (no draw): the
    deterministic shortcut of the M-ProbMix predictive. Usable as
    ``mean_embedding(model)`` or ``with mean_embedding():``.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro_mixup import embed
        >>> with mean_embedding():
        ...     z = embed("z", dist.Normal(torch.ones(3), 5.0).to_event(1), dim=-1)
        >>> z.tolist()
        [1.0, 1.0, 1.0]
    """
    messenger = MeanEmbeddingMessenger()
    return messenger if fn is None else messenger(fn)


def _as_tensor(values: ArrayLike | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if torch.is_tensor(values):
        return values
    values = torch.as_tensor(values, device=like.device)
    return (
        values.to(like.dtype) if values.is_floating_point() and like.is_floating_point() else values
    )


def _site(trace: Trace, site: str, guide_trace: Trace | None) -> Message:
    """The site's node, checked: present, a sample site, not the guide's, not subsampled."""
    node = trace.nodes.get(site)
    if node is None or node["type"] != "sample":
        raise missing_site_error(
            site,
            [
                n
                for n, v in trace.nodes.items()
                if v["type"] == "sample" and not v.get("is_auxiliary") and n != "_INPUT"
            ],
        )
    if guide_trace is not None and site in guide_trace.nodes:
        raise latent_site_error(site, "guide")
    for f in node["cond_indep_stack"]:
        if f.full_size is not None and f.size != f.full_size:
            raise subsample_error(site, f.name, f.size, f.full_size)
    return node


@torch.no_grad()
def marginal_predictive(
    model: Callable[..., Any],
    *args: Any,
    site: str = "y",
    num_draws: int = DEFAULT_NUM_DRAWS,
    guide: Callable[..., Any] | None = None,
    embedding: str = "sample",
    values: ArrayLike | torch.Tensor | None = None,
    **kwargs: Any,
) -> MarginalPredictive:
    """The predictive of ``site`` given the model's inputs, marginal over its embeddings.

    Runs ``model(*args, **kwargs)`` ``num_draws`` times (after ``guide(*args,
    **kwargs)``, replayed into it, when a guide is given -- as
    :class:`pyro.infer.Predictive` does), each with a fresh draw of every
    :func:`~pyro_mixup.embed` layer, and returns the equal-weight mixture of the
    per-draw distributions of ``site``: its log density at ``values`` (default:
    the site's observed value, if the call observes it), its mean and variance
    (laws of total expectation and variance) and one sample per draw.

    :param model: a Pyro model; its parameters are read from the param store.
    :param str site: the observed (likelihood) site to predict.
    :param int num_draws: mixture components ``S``; the default is stable to 0.002
        nats in the in-distribution NLL of the toy regression, not far out of
        distribution (see ``benchmarks/predictive_draws.py``).
    :param guide: a guide over the model's latent sites, or ``None`` (latents from
        the prior, as ``Predictive`` without a guide).
    :param str embedding: ``"sample"`` (the marginal, the paper's predictive) or
        ``"mean"`` (every embedding at its mean: :func:`mean_embedding`).
    :param values: where to evaluate the log density, broadcastable against the
        site's batch shape (leading dims allowed: a grid of ``y`` per input).
    :rtype: ~pyro_mixup.core.predictive.MarginalPredictive

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro_mixup import embed
        >>> def model(x, y=None):
        ...     with pyro.plate("data", len(x)):
        ...         z = embed("z", dist.Normal(x, 1.0))
        ...         return pyro.sample("y", dist.Normal(z, 1.0), obs=y)
        >>> pred = marginal_predictive(model, torch.zeros(2), torch.zeros(2), num_draws=4000)
        >>> [round(v, 1) for v in pred.variance.tolist()]   # 1 (embedding) + 1 (noise)
        [2.0, 2.0]
        >>> bool(abs(pred.log_density + 0.5 * torch.log(torch.tensor(2 * torch.pi * 2.0))).max() < 0.05)
        True
    """
    num_draws = check_predictive_options(num_draws, embedding, site)
    refuse_active_handlers(
        _PYRO_STACK
    )  # a `with probmix():` around the call would pair the test rows
    model, guide = unwrap(model), None if guide is None else unwrap(guide)
    means, variances, samples, log_probs = [], [], [], []
    for _ in range(num_draws):
        fn, guide_trace = model, None
        if guide is not None:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            fn = poutine.replay(fn, trace=guide_trace)
        if embedding == "mean":
            fn = mean_embedding(fn)
        node = _site(poutine.trace(fn).get_trace(*args, **kwargs), site, guide_trace)
        d = node["fn"] if node["mask"] is None else node["fn"].mask(node["mask"])
        if values is None and node["is_observed"]:
            values = node["value"]
        pair = moments(BACKEND, d)
        if pair is not None:
            means.append(pair[0])
            variances.append(pair[1])
        samples.append(d.sample() if node["is_observed"] else node["value"])
        if values is not None:
            values = _as_tensor(values, samples[-1])
            log_probs.append(d.log_prob(values))
    return MarginalPredictive(
        site=site,
        draw_means=torch.stack(means) if means else None,
        draw_variances=torch.stack(variances) if means else None,
        samples=torch.stack(samples),
        log_density=mixture_log_density(torch.stack(log_probs), torch.logsumexp)
        if log_probs
        else None,
        embedding=embedding,
    )
