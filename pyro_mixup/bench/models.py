"""The benchmark networks as Pyro models (torch).

``MLP`` is a deterministic network whose parameters are fitted by maximum
likelihood; :func:`regression_model` / :func:`classification_model` are the
Pyro models the handlers wrap. The inputs are a :func:`~pyro_mixup.mixable`
named "x"; the first hidden layer is a :func:`~pyro_mixup.mixable` named "h"
or, for the M-ProbMix methods, a stochastic embedding layer
:func:`~pyro_mixup.embed` named "h": ``z ~ N(m(x), diag s(x)^2)`` with
``m(x)`` the (ReLU) first hidden layer and ``s(x) = softplus(a * m(x) + c)``, a
variance head that shares the layer's parameters (METHOD.md section 3).
At prediction time the embedding layer propagates its mean.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from .. import embed, mixable

MIN_SCALE = 1e-4
EMBED_MIN_SCALE = 1e-3


class MLP(nn.Module):
    """``d_in -> hidden[0] -> ... -> d_out`` with ReLU; optional embedding variance head."""

    def __init__(self, d_in: int, hidden: Sequence[int], d_out: int, embedding: bool = False):
        super().__init__()
        sizes = [d_in, *hidden, d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.embedding = embedding
        if embedding:
            self.emb_a = nn.Parameter(torch.zeros(hidden[0]))
            self.emb_c = nn.Parameter(torch.full((hidden[0],), -3.0))

    def first(self, x):
        return F.relu(self.layers[0](x))

    def embedding_dist(self, h):
        s = F.softplus(self.emb_a * h + self.emb_c) + EMBED_MIN_SCALE
        return dist.Normal(h, s).to_event(1)

    def rest(self, h):
        for i, layer in enumerate(self.layers[1:]):
            h = layer(h)
            if i < len(self.layers) - 2:
                h = F.relu(h)
        return h

    def forward(self, x, stochastic: bool = False):
        """Deterministic forward pass (the model below adds the handler hooks)."""
        x = mixable("x", x, dim=-1) if stochastic else x
        h = self.first(x)
        if stochastic:
            h = embed("h", self.embedding_dist(h), dim=-1) if self.embedding else mixable("h", h, dim=-1)
        return self.rest(h)


def gaussian_head(out):
    return out[..., 0], F.softplus(out[..., 1]) + MIN_SCALE


def regression_model(net: MLP, x, y=None):
    """Heteroscedastic Gaussian regression: ``y_i ~ N(mu(x_i), sigma(x_i)^2)`` in a plate."""
    mu, sigma = gaussian_head(net(x, stochastic=True))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def classification_model(net: MLP, x, y=None):
    """``y_i ~ Categorical(logits = net(x_i))`` in a plate."""
    logits = net(x, stochastic=True)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Categorical(logits=logits), obs=y)
