"""Training with the Pyro handlers (torch): full-batch maximum likelihood.

The loss of a step is ``-log p`` of one trace of the wrapped model,
``-poutine.trace(probmix(model, ...)).get_trace(...).log_prob_sum() / n``:
the handler draws ``lam`` and the partners afresh at each call. ERM is the
unwrapped model.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional

import numpy as np
import pyro
import torch
from pyro import poutine

from ..handlers import mixup, probmix
from .methods import METHODS, Method, partner_table
from .models import MLP, classification_model, gaussian_head, regression_model


def wrapped_model(method: Method, model, alpha: float, beta: float, table=None, classification=False):
    """The model under the method's handler (the unwrapped model for ERM)."""
    if not method.mixes:
        return model
    kw = dict(alpha=alpha)
    if table is not None:
        kw["pairing"] = table
    if method.handler == "mixup":
        return mixup(model, at=method.at, beta=0.0 if classification else beta, **kw)
    if classification:
        # the paper's ProbMix target for classes: the pool of beta-smoothed labels
        return probmix(model, at=method.at, target="mixed", beta=beta if beta > 0 else 0.01, **kw)
    return probmix(model, at=method.at, beta=beta, **kw)


def fit(
    method_name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    classification: bool = False,
    n_classes: int = 2,
    hidden=(128, 64),
    epochs: int = 500,
    lr: float = 0.01,
    alpha: float = 0.5,
    beta: float = 0.0,
    seed: int = 0,
    on_epoch: Optional[Callable[[int, MLP, float], None]] = None,
):
    """Train one network full-batch with Adam; returns ``(net, losses)`` (loss per epoch).

    ``on_epoch(epoch, net, loss)`` is called after every update (for early stopping)."""
    method = METHODS[method_name]
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)
    if classification:
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
        net = MLP(xt.shape[1], hidden, n_classes, embedding=method.embedding)
        model = classification_model
    else:
        yt = torch.as_tensor(np.asarray(y, dtype=np.float32))
        net = MLP(xt.shape[1], hidden, 2, embedding=method.embedding)
        model = regression_model
    table = partner_table(method, xt.numpy(), yt.numpy().astype(np.float64)) if method.mixes else None
    if table is not None and classification and method.pairing == "label":
        table = None  # C-Mixup needs a continuous label; random pairing for classes
    train_model = wrapped_model(method, model, alpha, beta, table, classification)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    n = xt.shape[0]
    for epoch in range(epochs):
        opt.zero_grad()
        tr = poutine.trace(train_model).get_trace(net, xt, yt)
        loss = -tr.log_prob_sum() / n
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_epoch is not None:
            on_epoch(epoch, net, losses[-1])
    return net, np.array(losses)


@torch.no_grad()
def predict_regression(net: MLP, x):
    """Predictive mean and std (the units the network was trained in)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)
    mu, sigma = gaussian_head(net(xt))
    return mu.numpy().astype(np.float64), sigma.numpy().astype(np.float64)


@torch.no_grad()
def predict_proba(net: MLP, x):
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)
    return torch.softmax(net(xt), -1).numpy().astype(np.float64)


def _nll(mu, sigma, y):
    return float(np.mean(0.5 * math.log(2 * math.pi) + np.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2))


def run_split(split, method_name: str, alpha: float, beta: float, epochs: int, lr: float, hidden, seed: int):
    """The UCI protocol on one split with the Pyro handlers; metrics in original units of y."""
    best = dict(val=math.inf, epoch=-1, state=None)

    def on_epoch(epoch, net, loss):
        mu, sg = predict_regression(net, split.x_val)
        val = _nll(mu, sg, split.y_val)
        if val < best["val"]:
            best.update(val=val, epoch=epoch, state=copy.deepcopy(net.state_dict()))

    net, losses = fit(method_name, split.x_fit, split.y_fit, hidden=hidden, epochs=epochs, lr=lr,
                      alpha=alpha, beta=beta, seed=seed * 100003 + split.index, on_epoch=on_epoch)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    mu, sg = predict_regression(net, split.x_test)
    log_ys = math.log(split.y_std)
    return dict(
        test_nll=_nll(mu, sg, split.y_test) + log_ys,
        test_rmse=float(np.sqrt(np.mean((mu - split.y_test) ** 2)) * split.y_std),
        val_nll=best["val"] + log_ys,
        best_epoch=best["epoch"] + 1,
        train_loss_first=float(losses[0]),
        train_loss_last=float(losses[-1]),
        mode="handlers",
    )
