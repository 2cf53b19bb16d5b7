"""The experiments' network for Pyro (torch): one MLP and the two likelihoods it is trained under.

``MLP`` is a deterministic network whose parameters are fitted by maximum
likelihood; :func:`regression_model` / :func:`classification_model` are the
Pyro models the handlers wrap, with the site names of
:mod:`pyro_mixup.experiments.methods`: the inputs are a
:func:`~pyro_mixup.mixable` named "x", the first hidden layer a
:func:`~pyro_mixup.mixable` named "h"; in the embedding variant
(``embedding=True``, M-ProbMix) that layer is first a stochastic
:func:`~pyro_mixup.embed` named "z": ``z ~ N(m(x), diag s(x)^2)`` with ``m(x)``
the (ReLU) first hidden layer and ``s(x) = softplus(a * m(x) + c)``, a variance
head that shares the layer's parameters (METHOD.md section 3). At prediction
time (``net(x)``) the embedding layer propagates its mean.

Example::

    >>> import torch
    >>> net = MLP(3, (8,), 2, embedding=True)
    >>> model = model_of(net)
    >>> model.embedding, model(torch.randn(5, 3)).shape
    (True, torch.Size([5]))
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from .. import embed, mixable
from .methods import EMBEDDING, HIDDEN, INPUT

MIN_SCALE = 1e-4
EMBED_MIN_SCALE = 1e-3


class MLP(nn.Module):
    """``d_in -> hidden[0] -> ... -> d_out`` with ReLU; ``embedding``: the first
    hidden layer is a stochastic embedding (its variance head is two vectors)."""

    def __init__(
        self,
        d_in: int,
        hidden: Sequence[int],
        d_out: int,
        embedding: bool = False,
        variance_width: int = 0,
    ):
        super().__init__()
        sizes = [d_in, *hidden, d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.embedding = bool(embedding)
        self.variance_width = int(variance_width)
        if self.variance_width and not self.embedding:
            raise ValueError(
                "variance_width is the width of the embedding's variance network: it needs embedding=True"
            )
        if self.variance_width:
            # M-ProbMix*: a separate variance network; its output starts flat at softplus(-3), as the shared head
            self.variance = nn.Sequential(
                nn.Linear(d_in, self.variance_width),
                nn.ReLU(),
                nn.Linear(self.variance_width, hidden[0]),
            )
            nn.init.zeros_(self.variance[2].weight)
            nn.init.constant_(self.variance[2].bias, -3.0)
        elif embedding:
            self.emb_a = nn.Parameter(torch.zeros(hidden[0]))
            # small initial noise: the embedding starts close to the deterministic layer
            self.emb_c = nn.Parameter(torch.full((hidden[0],), -3.0))

    def embedding_dist(self, h, x=None):
        """``q(z | x) = N(h, s^2)``: ``s`` from the shared head on ``h``, or from the separate variance network on ``x``."""
        v = self.variance(x) if self.variance_width else self.emb_a * h + self.emb_c
        return dist.Normal(h, F.softplus(v) + EMBED_MIN_SCALE).to_event(1)

    def forward(self, x, stochastic: bool = False):
        """The network's output; ``stochastic``: with the sites the handlers act on
        (training), else deterministic with the embedding's mean (prediction)."""
        if stochastic:
            x = mixable(INPUT, x, dim=-1)
        h = F.relu(self.layers[0](x))
        if stochastic:
            if self.embedding:
                h = embed(EMBEDDING, self.embedding_dist(h, x), dim=-1)
            h = mixable(HIDDEN, h, dim=-1)
        for i, layer in enumerate(self.layers[1:], start=2):
            h = layer(h)
            if i < len(self.layers):
                h = F.relu(h)
        return h


def gaussian_head(out):
    """(mu, sigma) from the two outputs of a regression network."""
    return out[..., 0], F.softplus(out[..., 1]) + MIN_SCALE


def regression_model(net: MLP, x, y=None):
    """Heteroscedastic Gaussian regression: ``y_i ~ N(mu(x_i), sigma(x_i)^2)`` in a plate."""
    pyro.module("net", net)
    mu, sigma = gaussian_head(net(x, stochastic=True))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def classification_model(net: MLP, x, y=None):
    """``y_i ~ Categorical(logits = net(x_i))`` in a plate."""
    pyro.module("net", net)
    logits = net(x, stochastic=True)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Categorical(logits=logits), obs=y)


def model_of(net: MLP, classification: bool = False):
    """The Pyro model ``(x, y=None)`` of ``net``; it carries ``net.embedding`` so that
    :func:`~pyro_mixup.experiments.methods.wrap` can refuse M-ProbMix on the plain network."""
    model = functools.partial(classification_model if classification else regression_model, net)
    model.embedding = net.embedding
    return model
