"""A heteroscedastic Gaussian BNN regressor for Pyro, trained by the experiments' Pyro trainer.

:class:`BNNRegressor` is a ``PyroModule`` whose weights have ``PyroSample``
priors ``N(0, prior_scale^2 / fan_in)``. It standardises x and y internally
(with training-set statistics given at construction), so it is called on
data in original units and its likelihood ``y ~ N(mu(x), sigma(x)^2)`` is in
original units too: log-likelihoods, NLLs and predictive draws need no
back-transformation.

Mixup hooks, named as in :mod:`pyro_mixup.experiments.methods`:
``mixable("x")`` (the standardised inputs, for vanilla mixup),
``mixable("h")`` (the first hidden layer after its activation, for manifold
mixup) and, with ``embed=True`` (``model.embedding``), ``embed("z")``: the
first layer outputs the mean and (through a softplus) the scale of a Gaussian
embedding ``z ~ N(m(x), s(x)^2)`` from shared weights, and the network
continues from ``relu(z)`` (M-ProbMix fuses there with ``probmix(at="z")``).

:func:`fit` is SVI with ``AutoNormal`` through
:func:`pyro_mixup.experiments.train_pyro.fit` (the model wrapped by
:func:`pyro_mixup.experiments.methods.wrap`, Adam clipped by global norm).

Example::

    >>> import torch
    >>> x, y = torch.randn(32, 3), torch.randn(32)
    >>> model = BNNRegressor(3, hidden=(8,), y_loc=0., y_scale=1.)
    >>> guide = fit(model, x, y, method="probmix", epochs=2, progress=False)
    >>> model(x).shape
    torch.Size([32])
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_sample
from pyro.nn import PyroModule, PyroSample
from torch import nn

from ... import embed as embed_layer
from ... import marginal_predictive, mixable
from .. import methods as M
from .. import train_pyro
from ..data import standardisation
from . import BNN_METHODS


def _bayes_linear(n_in: int, n_out: int, prior_scale: float) -> PyroModule:
    layer = PyroModule[nn.Linear](n_in, n_out)
    s = prior_scale / math.sqrt(n_in)
    layer.weight = PyroSample(dist.Normal(0.0, s).expand([n_out, n_in]).to_event(2))
    layer.bias = PyroSample(dist.Normal(0.0, prior_scale).expand([n_out]).to_event(1))
    return layer


class BNNRegressor(PyroModule):
    """Heteroscedastic Gaussian BNN: ``y ~ N(mu(x), sigma(x)^2)`` with a ReLU MLP.

    :param in_dim: number of input features.
    :param hidden: hidden-layer widths.
    :param embed: make the first hidden layer a stochastic embedding (M-ProbMix);
        the model's ``embedding`` attribute.
    :param prior_scale: weight prior ``N(0, prior_scale^2 / fan_in)``, bias prior ``N(0, prior_scale^2)``.
    :param x_loc: input mean, for standardisation (training-set statistic).
    :param x_scale: input standard deviation (training-set statistic).
    :param y_loc: target mean (training-set statistic).
    :param y_scale: target standard deviation (training-set statistic).
    :param min_scale: floor of sigma, in standardised units.
    """

    def __init__(
        self,
        in_dim: int,
        hidden=(50,),
        *,
        embed: bool = False,
        prior_scale: float = 1.0,
        x_loc=None,
        x_scale=None,
        y_loc: float = 0.0,
        y_scale: float = 1.0,
        min_scale: float = 1e-3,
    ):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("hidden needs at least one layer")
        self.in_dim, self.hidden_sizes, self.embedding = int(in_dim), hidden, bool(embed)
        self.min_scale = float(min_scale)
        f = torch.get_default_dtype()
        self.register_buffer(
            "x_loc",
            torch.zeros(in_dim) if x_loc is None else torch.as_tensor(np.asarray(x_loc), dtype=f),
        )
        self.register_buffer(
            "x_scale",
            torch.ones(in_dim)
            if x_scale is None
            else torch.as_tensor(np.asarray(x_scale), dtype=f),
        )
        self.register_buffer("y_loc", torch.as_tensor(float(y_loc), dtype=f))
        self.register_buffer("y_scale", torch.as_tensor(float(y_scale), dtype=f))
        sizes = (self.in_dim,) + hidden
        layers = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(_bayes_linear(a, 2 * b if (embed and i == 0) else b, prior_scale))
        self.layers = PyroModule[nn.ModuleList](layers)
        self.head = _bayes_linear(sizes[-1], 2, prior_scale)

    @property
    def use_embed(self) -> bool:
        """The former name of :attr:`embedding`."""
        return self.embedding

    def predict_params(self, x):
        """(loc, scale) of ``p(y | x)`` in original units, for one draw of the weights
        (and of the embedding noise)."""
        h = mixable(M.INPUT, (x - self.x_loc) / self.x_scale, dim=-1)  # the data plate comes later
        for i, layer in enumerate(self.layers):
            a = layer(h)
            if i == 0 and self.embedding:
                m, s = a.chunk(2, dim=-1)
                a = embed_layer(
                    M.EMBEDDING, dist.Normal(m, F.softplus(s) + 1e-3).to_event(1), dim=-1
                )
            h = F.relu(a)
            if i == 0:
                h = mixable(M.HIDDEN, h, dim=-1)
        out = self.head(h)
        mu, sigma = out[..., 0], F.softplus(out[..., 1]) + self.min_scale
        return self.y_loc + self.y_scale * mu, self.y_scale * sigma

    def forward(self, x, y=None, num_data=None, kl_weight=1.0):
        """``num_data``: the full training-set size when ``x`` is a minibatch (the
        likelihood is scaled by ``num_data / len(x)``). ``kl_weight``: training
        only; the likelihood term is scaled by ``1 / kl_weight``, which for the
        ELBO's optimum is the same as weighting the KL term by ``kl_weight``
        (< 1: a tempered / "cold" posterior). Site densities are not changed, so
        diagnostics are unaffected."""
        loc, scale = self.predict_params(x)
        n = x.shape[0]
        sub = None if num_data is None else torch.arange(n)
        with (
            pyro.plate("data", n if num_data is None else int(num_data), subsample=sub),
            poutine.scale(scale=1.0 / float(kl_weight)),
        ):
            pyro.sample("y", dist.Normal(loc, scale), obs=y)
        return loc


def make_model(
    method: str, x_train, y_train, hidden=(50,), prior_scale: float = 1.0
) -> BNNRegressor:
    """The plain model a method trains (the embedding variant for m-probmix),
    standardised with the training data."""
    x_loc, x_scale, y_loc, y_scale = standardisation(np.asarray(x_train), np.asarray(y_train))
    return BNNRegressor(
        np.asarray(x_train).shape[1],
        hidden,
        embed=_method(method).embedding,
        prior_scale=prior_scale,
        x_loc=x_loc,
        x_scale=x_scale,
        y_loc=y_loc,
        y_scale=y_scale,
    )


def _method(name: str) -> M.Method:
    if name not in BNN_METHODS:
        raise ValueError(f"method must be one of {BNN_METHODS}; got {name!r}")
    return M.METHODS[name]


def wrap(model, method: str, alpha: float = 1.0, **options):
    """The model as trained by ``method`` (:func:`pyro_mixup.experiments.methods.wrap`;
    ERM is the model itself)."""
    return M.wrap(model, _method(method), backend="pyro", alpha=alpha, **options)


def fit(
    model: BNNRegressor,
    x,
    y,
    *,
    method: str = "erm",
    alpha: float = 1.0,
    epochs: int = 200,
    lr: float = 0.01,
    batch_size: int | None = None,
    init_scale: float = 0.05,
    seed: int | None = 0,
    progress: bool = True,
    clear_param_store: bool = True,
    losses: list | None = None,
    kl_weight: float = 1.0,
):
    """Train ``model`` by SVI (``AutoNormal``, ``Trace_ELBO``, Adam clipped by global
    norm) with ``method``'s handler around it; returns the guide.

    ``batch_size=None`` (or 0): full batch (one step per epoch); otherwise shuffled
    minibatches (the ragged last one dropped), the likelihood scaled to the full
    data set. The handler pairs examples within each (mini)batch. ``losses``: a
    list that gets the ELBO loss per epoch (per example). ``kl_weight``: weight of
    the KL term relative to the likelihood (1: the ELBO; < 1: a tempered
    posterior), see :meth:`BNNRegressor.forward`.
    """
    if not kl_weight > 0:
        raise ValueError(f"kl_weight must be > 0; got {kl_weight!r}")
    method = _method(method)
    # the guide's parameters are made at its first call, inside the trainer, after it seeds (init_to_sample)
    guide = AutoNormal(model, init_loc_fn=init_to_sample, init_scale=init_scale)
    history = train_pyro.fit(
        model,
        guide,
        x,
        y,
        method=method,
        alpha=alpha,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        model_kwargs={"kl_weight": kl_weight},
        pass_num_data=True,
        progress=progress,
        clear_param_store=clear_param_store,
    )
    if losses is not None:
        losses.extend(history.tolist())
    return guide


def predict(model: BNNRegressor, guide, x, num_samples: int = 200):
    """Posterior-predictive ``(loc, scale)`` per draw, arrays ``[num_samples, n]``:
    the components of :func:`pyro_mixup.marginal_predictive` (each draw runs the
    guide once and the model once, a fresh embedding draw), so mixtures over the
    draws marginalise weights and embedding noise."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype())
    pred = marginal_predictive(model, x, guide=guide, num_draws=num_samples)
    return pred.draw_means.numpy(), pred.draw_variances.sqrt().numpy()
