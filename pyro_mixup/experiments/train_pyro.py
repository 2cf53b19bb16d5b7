"""The one Pyro trainer of the experiments: SVI on a model wrapped by the method's handler.

:func:`fit` trains any Pyro model as users would: ``methods.wrap(model, method,
backend="pyro", ...)`` (the model itself for ERM) under
``pyro.infer.SVI`` with ``Trace_ELBO`` -- an empty guide for the
maximum-likelihood networks (the ELBO is then the log-likelihood), an autoguide
for the BNN -- and Adam whose gradients are clipped by their global norm
(:class:`GlobalNormClip`, 100 as on the JAX side). The loss is per training
example, so the clipping threshold and the reported losses mean the same at
every batch size. :func:`fit_net` trains the experiments' MLP
(:mod:`~pyro_mixup.experiments.nets_pyro`), :func:`run_split` runs the UCI
protocol on one split (``bench uci --backend pyro``).

Example::

    >>> import numpy as np
    >>> x = np.linspace(-1, 1, 32)[:, None]; y = np.sin(3 * x[:, 0])
    >>> net, losses = fit_net("probmix", x, y, hidden=(8,), epochs=3, batch_size=8)
    >>> losses.shape
    (3,)
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import PyroOptim

from .. import marginal_predictive
from ..core.predictive import DEFAULT_NUM_DRAWS
from . import methods as M
from .metrics import gaussian_nll, gaussian_scores, mixture_scores
from .nets_pyro import MLP, gaussian_head, model_of

#: Global gradient-norm clip of every method. Why: on naval, ERM under plain Adam had
#: gradient spikes that killed the ReLUs and left a constant network (training loss
#: stuck at metrics.CONSTANT_PREDICTOR_NLL); the JAX trainer uses optax.clip_by_global_norm(100).
CLIP_NORM = 100.0


class GlobalNormClip(PyroOptim):
    """A ``pyro.optim`` optimiser that clips the gradients of all the step's
    parameters together to global norm ``max_norm`` before the update.

    (``pyro.optim.ClippedAdam`` clamps each gradient element, and
    ``PyroOptim(clip_args=...)`` clips each parameter on its own: neither is
    ``optax.clip_by_global_norm``.) :attr:`last_norm` is the norm before clipping.

    >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([300., 400.])
    >>> opt = GlobalNormClip(torch.optim.SGD, {"lr": 1.0}, max_norm=100.0)
    >>> opt([p]); p.data.tolist(), opt.last_norm
    ([-60.0, -80.0], 500.0)
    """

    def __init__(self, optim_constructor, optim_args: dict, max_norm: float = CLIP_NORM):
        super().__init__(optim_constructor, optim_args)
        self.max_norm = float(max_norm)
        self.last_norm = float("nan")

    def __call__(self, params, *args, **kwargs) -> None:
        params = list(params)
        grads = [p for p in params if p.grad is not None]
        if grads:
            self.last_norm = float(torch.nn.utils.clip_grad_norm_(grads, self.max_norm))
        super().__call__(params, *args, **kwargs)


def adam(lr: float, max_norm: float = CLIP_NORM) -> GlobalNormClip:
    """Adam with global-norm clipping, the optimiser of every experiment."""
    return GlobalNormClip(torch.optim.Adam, {"lr": lr}, max_norm)


def _no_guide(*args, **kwargs):
    """The guide of a model without latent sites: the ELBO is the log-likelihood."""


def _tensor(a, classification: bool = False):
    if classification:
        return torch.as_tensor(np.asarray(a), dtype=torch.long)
    return torch.as_tensor(np.asarray(a), dtype=torch.get_default_dtype())


def fit(
    model,
    guide,
    x,
    y,
    *,
    method="erm",
    alpha: float = 0.5,
    beta: float = 0.0,
    epochs: int = 500,
    lr: float = 0.01,
    batch_size: int | None = None,
    seed: int | None = 0,
    classification: bool = False,
    model_kwargs: dict | None = None,
    pass_num_data: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
    progress: bool = False,
    clip_norm: float = CLIP_NORM,
    clear_param_store: bool = True,
) -> np.ndarray:
    """Train ``model(x, y, **model_kwargs)`` under ``method``; returns the loss per epoch
    (per training example: the mean over the epoch's steps).

    :param guide: the guide, or None for a model without latent sites (maximum likelihood).
    :param method: a :class:`~pyro_mixup.experiments.methods.Method` or its name; the
        model is wrapped by :func:`~pyro_mixup.experiments.methods.wrap` with ``alpha``,
        ``beta`` and the method's partner table built on ``(x, y)`` (LocK, C-Mixup).
    :param batch_size: None / 0 / ``>= len(x)``: full batch, one step per epoch.
        Else ``len(x) // batch_size`` steps per epoch on shuffled minibatches (the
        ragged last one dropped); with a partner table (even ``batch_size``), the
        first that many batches of :meth:`~pyro_mixup.pairing.PartnerTable.batches`:
        ``batch_size / 2`` anchors and their drawn partners, so every method
        processes the same rows per epoch (as the JAX trainer does).
    :param seed: ``pyro.set_rng_seed(seed)`` first: every draw of the training
        (batches, ``lam``, partners, a guide's initial values) follows from it;
        None leaves the RNG as it is.
    :param classification: integer class labels (see ``methods.wrap``).
    :param pass_num_data: the model takes ``num_data=`` (a Bayesian model whose
        likelihood a minibatch scales up to the full data): minibatches get
        ``num_data=len(x)`` and the loss is the ELBO divided by ``len(x)``.
        Otherwise the loss is the batch's mean log-likelihood per example.
    :param on_epoch: ``on_epoch(epoch, loss)`` after every epoch (best-validation tracking).
    :param clip_norm: global gradient-norm clip (:class:`GlobalNormClip`).
    """
    method = M.METHODS[method] if isinstance(method, str) else method
    if batch_size is not None and batch_size < 0:
        raise ValueError(f"batch_size must be >= 0 (0 or None: full batch); got {batch_size}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    if clear_param_store:
        pyro.clear_param_store()
    x, y = _tensor(x), _tensor(y, classification)
    n = x.shape[0]
    model_kwargs = dict(model_kwargs or {})
    guide = _no_guide if guide is None else guide
    table = M.partner_table(method, x.numpy(), y.numpy()) if method.uses_table else None
    full = not batch_size or batch_size >= n
    if table is not None and not full and batch_size % 2:
        raise ValueError(
            f"{method.name} with minibatches: a batch holds anchors and their partners, so "
            f"batch_size must be even; got {batch_size}"
        )
    optim, elbo = adam(lr, clip_norm), Trace_ELBO()

    def svi(batch: int, **pairing) -> SVI:
        # per-example loss: a likelihood mean over the batch, or the ELBO over the data size
        scale = 1.0 / (n if pass_num_data else batch)
        trained = M.wrap(
            model,
            method,
            backend="pyro",
            classification=classification,
            alpha=alpha,
            beta=beta,
            **pairing,
        )
        return SVI(poutine.scale(trained, scale), poutine.scale(guide, scale), optim, elbo)

    # one SVI for the whole run, except with a table and minibatches (a handler per batch, below)
    if full:
        steps = svi(n, **({} if table is None else {"pairing": table}))
    elif table is None:
        steps = svi(int(batch_size))
    kw = dict(model_kwargs, num_data=n) if pass_num_data and not full else model_kwargs
    epochs_iter = range(epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = bar = tqdm(epochs_iter, desc=f"svi {method.name}", leave=False)
    losses = []
    for epoch in epochs_iter:
        if full:
            epoch_losses = [steps.step(x, y, **kw)]
        elif table is None:
            order = torch.randperm(n)
            epoch_losses = [
                steps.step(x[idx], y[idx], **kw)
                for idx in order[: n - n % batch_size].split(int(batch_size))
            ]
        else:
            # the partner must be in the batch: batches of anchors and their drawn partners, and
            # the perm that pairs them (a new handler per batch); numpy's draws seeded from torch's
            batches = table.batches(
                int(batch_size), seed=int(torch.randint(2**62, ())), drop_last=True
            )
            epoch_losses = [
                svi(len(idx), perm=torch.as_tensor(perm)).step(x[idx], y[idx], **kw)
                for idx, perm in itertools.islice(batches, n // batch_size)
            ]
        losses.append(float(np.mean(epoch_losses)))
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return np.array(losses)


def fit_net(
    method,
    x,
    y,
    *,
    classification: bool = False,
    n_classes: int = 2,
    hidden=(128, 64),
    epochs: int = 500,
    lr: float = 0.01,
    alpha: float = 0.5,
    beta: float = 0.0,
    batch_size: int | None = None,
    seed: int = 0,
    on_epoch: Callable[[int, MLP, float], None] | None = None,
    progress: bool = False,
):
    """Train the experiments' MLP by maximum likelihood under ``method``; returns
    ``(net, losses)``. ``x``: ``(n, d)``; ``y``: standardised targets, or class
    labels with ``classification``. ``on_epoch(epoch, net, loss)`` after every epoch."""
    method = M.METHODS[method] if isinstance(method, str) else method
    pyro.set_rng_seed(seed)  # the initial weights, then the training's draws
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    net = MLP(
        x.shape[1],
        tuple(method.hidden or hidden),
        n_classes if classification else 2,
        embedding=method.embedding,
        variance_width=method.variance_width,
    )
    losses = fit(
        model_of(net, classification),
        None,
        x,
        y,
        method=method,
        alpha=alpha,
        beta=beta,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=None,
        classification=classification,
        progress=progress,
        on_epoch=None if on_epoch is None else (lambda epoch, loss: on_epoch(epoch, net, loss)),
    )
    return net, losses


@torch.no_grad()
def predict_regression(net: MLP, x):
    """Predictive mean and std (the units the network was trained in)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)
    mu, sigma = gaussian_head(net(xt))
    return mu.numpy().astype(np.float64), sigma.numpy().astype(np.float64)


@torch.no_grad()
def predict_proba(net: MLP, x, predictive: str = "marginal", draws: int = DEFAULT_NUM_DRAWS):
    """Class probabilities ``(n, n_classes)``: for an embedding network under
    ``predictive="marginal"`` the mixture over ``draws`` embedding draws (the mean of
    the per-draw class probabilities, :func:`pyro_mixup.marginal_predictive` at every
    class), else the deterministic network's softmax."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)
    if not (net.embedding and predictive == "marginal"):
        return torch.softmax(net(xt), -1).numpy().astype(np.float64)
    classes = torch.arange(net.layers[-1].out_features)[:, None].expand(-1, len(xt))
    p = marginal_predictive(model_of(net, classification=True), xt, num_draws=draws, values=classes)
    return p.log_density.exp().T.numpy().astype(np.float64)


def predictive_draws(
    net: MLP, x, y=None, predictive: str = "marginal", draws: int = DEFAULT_NUM_DRAWS
):
    """The regression network's predictive as Gaussian components ``(means, stds)``,
    arrays ``(S, n)`` in training units, and the log density per point at ``y``
    (None without ``y``): for an embedding network under ``predictive="marginal"``
    the ``draws`` components of :func:`pyro_mixup.marginal_predictive`, else the
    deterministic network (the mean embedding), one component."""
    if not (net.embedding and predictive == "marginal"):
        mu, sg = predict_regression(net, x)
        ld = (
            None
            if y is None
            else -(
                0.5 * math.log(2 * math.pi) + np.log(sg) + 0.5 * ((np.asarray(y) - mu) / sg) ** 2
            )
        )
        return mu[None], sg[None], ld
    xt = _tensor(np.asarray(x, np.float32).reshape(len(x), -1))
    p = marginal_predictive(model_of(net), xt, None if y is None else _tensor(y), num_draws=draws)
    ld = None if p.log_density is None else p.log_density.numpy().astype(np.float64)
    return (
        p.draw_means.numpy().astype(np.float64),
        p.draw_variances.sqrt().numpy().astype(np.float64),
        ld,
    )


def predictive_scores(
    net: MLP,
    x,
    y,
    y_scale: float,
    predictive: str = "marginal",
    test_draws: int = DEFAULT_NUM_DRAWS,
) -> dict:
    """Test scores (original units of y) of :func:`predictive_draws`, by
    :func:`~pyro_mixup.experiments.metrics.mixture_scores`; embedding networks also
    get ``test_nll_mean_embedding``."""
    means, stds, ld = predictive_draws(net, x, y, predictive, test_draws)
    marginal = len(means) > 1 or (net.embedding and predictive == "marginal")
    scores = dict(
        mixture_scores(means, stds, y, y_scale, log_density=ld),
        predictive="marginal" if marginal else "mean",
        predictive_draws=len(means),
    )
    if net.embedding:
        mu, sg = predict_regression(net, x)
        scores["test_nll_mean_embedding"] = gaussian_scores(mu, sg, y, y_scale)["test_nll"]
    return scores


def run_split(
    split,
    method_name: str,
    alpha: float,
    beta: float,
    epochs: int,
    lr: float,
    hidden,
    seed: int,
    batch_size: int | None = 0,
    predictive: str = "marginal",
    test_draws: int = DEFAULT_NUM_DRAWS,
) -> dict:
    """The UCI protocol on one :class:`~pyro_mixup.experiments.data.Split`: train on
    its fitting rows, keep the weights of the epoch with the best validation NLL,
    score the test rows (original units of y, :func:`predictive_scores`).

    ``learned``: the best validation NLL beats the constant ``N(0, 1)`` prediction on
    the same rows by 0.01 (a network that died to a constant does not)."""
    best = dict(val=math.inf, epoch=-1, state=None)

    def on_epoch(epoch, net, loss):
        mu, sg = predict_regression(net, split.x_val)
        val = float(gaussian_nll(mu, sg, split.y_val))
        if val < best["val"]:
            best.update(val=val, epoch=epoch, state=copy.deepcopy(net.state_dict()))

    net, losses = fit_net(
        method_name,
        split.x_fit,
        split.y_fit,
        hidden=hidden,
        epochs=epochs,
        lr=lr,
        alpha=alpha,
        beta=beta,
        batch_size=batch_size,
        seed=seed * 100003 + split.index,
        on_epoch=on_epoch,
    )
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    y_val = np.asarray(split.y_val, np.float64)
    constant = float(gaussian_nll(0.0, 1.0, y_val))
    return dict(
        **predictive_scores(net, split.x_test, split.y_test, split.y_std, predictive, test_draws),
        val_nll=best["val"] + math.log(split.y_std),
        best_epoch=best["epoch"] + 1,
        train_loss_first=float(losses[0]),
        train_loss_last=float(losses[-1]),
        learned=bool(best["val"] < constant - 0.01),
        prng="torch",
    )
