"""Pyro primitives that mark where a handler may mix: :func:`embed` and :func:`mixable`.

Both are effectful operations (like ``pyro.sample``): without a handler they
cost one function call and do nothing special; under a handler whose
``at=`` names them, the handler changes what they return. Neither adds a site
to a trace, so no guide needs to know about them.
"""

from __future__ import annotations

import torch
from pyro.poutine.runtime import effectful
from torch.distributions import Distribution


def _embed(distribution: Distribution, dim: int | None = None) -> torch.Tensor:
    return distribution.rsample()


def _mixable(
    tensor: torch.Tensor, event_dim: int | None = None, dim: int | None = None
) -> torch.Tensor:
    return tensor


_embed_op = effectful(_embed, type="embed")
_mixable_op = effectful(_mixable, type="mixable")


def embed(name: str, distribution: Distribution, *, dim: int | None = None) -> torch.Tensor:
    """A stochastic embedding layer (M-ProbMix, paper eq. 27).

    Returns a reparameterised draw ``z ~ distribution``; adds no latent site.
    Under ``probmix(at=name)`` the draw comes from the log-linear pool of each
    example's embedding distribution with its partner's.

    :param name: the name handlers refer to with ``at=``.
    :param distribution: a reparameterisable distribution whose batch shape
        holds the examples (e.g. ``Normal(m, s).to_event(1)``).
    :param dim: the batch dim that indexes examples, for an embedding outside
        any plate; inside a plate the plate's dim is used (and ``dim`` must agree).
        Outside plates and without ``dim`` a handler refuses to guess.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> with pyro.plate("data", 4):
        ...     z = embed("h", dist.Normal(torch.zeros(4, 3), 1.).to_event(1))
        >>> z.shape
        torch.Size([4, 3])
    """
    if not getattr(distribution, "has_rsample", False):
        raise ValueError(
            f"embed({name!r}, ...) needs a reparameterisable distribution (has_rsample); "
            f"got {type(distribution).__name__}"
        )
    return _embed_op(distribution, name=name, dim=dim)


def mixable(
    name: str, tensor: torch.Tensor, *, event_dim: int | None = None, dim: int | None = None
) -> torch.Tensor:
    """Mark a deterministic tensor (inputs, a hidden layer) that mixup may mix.

    Returns ``tensor`` unchanged, except under ``mixup(at=name)``, which
    returns ``lam * t + (1 - lam) * t[perm]`` along the example dim.

    :param name: the name handlers refer to with ``at=``.
    :param tensor: the tensor, examples along one batch dim.
    :param event_dim: number of rightmost feature dims (default: 1 if the
        tensor has 2 or more dims, else 0; required when that leaves more batch
        dims than the enclosing plates explain, e.g. images ``(n, C, H, W)``).
    :param dim: the batch dim that indexes examples, for a tensor outside any
        plate (``-1``: the dim left of the feature dims); inside a plate the
        plate's dim is used. Outside plates and without ``dim`` a handler
        refuses to guess.

    Example::

        >>> import torch, pyro
        >>> with pyro.plate("data", 5):
        ...     x = mixable("x", torch.ones(5, 2))
        >>> x.shape
        torch.Size([5, 2])
    """
    return _mixable_op(tensor, name=name, event_dim=event_dim, dim=dim)
