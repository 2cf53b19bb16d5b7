"""Fast JAX / NumPyro training for the UCI protocol: one ``jax.jit`` per
(dataset, method, alpha), ``jax.lax.scan`` over epochs (and minibatches),
``jax.vmap`` across splits.

The model is a NumPyro model (heteroscedastic Gaussian MLP) marked with
:func:`pyro_mixup.numpyro.mixable` / :func:`pyro_mixup.numpyro.embed`, trained
under :mod:`pyro_mixup.numpyro.handlers` (``probmix`` / ``mixup``): the loss is
``-log_density`` of the wrapped, seeded model, so the handlers draw ``lam`` and
the partners from ``numpyro.prng_key()`` afresh at every step inside the jitted
loop. When the NumPyro handlers are not importable, the same losses are built
directly from the pooling engine (:func:`pyro_mixup.numpyro.pool_pairs`)
(``mode="engine"``); ``mode`` is recorded with every result.

Best-validation epoch: every epoch evaluates the validation and test sets; the
test metrics of the epoch with the lowest validation NLL are kept (the same as
restoring that epoch's weights, without storing them).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as nd

from ..numpyro import pool_pairs
from .methods import METHODS, Method, partner_table

#: Typed keys of XLA's RngBitGenerator: M-ProbMix draws a 128-d embedding per example and
#: step, and threefry made those draws most of the run time on CPU (measured: 61 s vs 9 s
#: for ProbMix on bostonHousing, 20 splits x 1000 epochs).
PRNG_IMPL = "unsafe_rbg"
MIN_SCALE = 1e-4  # floor of the predictive std (standardised units)
EMBED_MIN_SCALE = 1e-3


def handlers_available() -> bool:
    try:
        from ..numpyro import handlers  # noqa: F401
        from ..numpyro import embed, mixable  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- network
def init_params(key, d_in: int, hidden: Sequence[int], embedding: bool):
    """torch.nn.Linear-style init; the output layer gives (mean, raw scale)."""
    sizes = [d_in, *hidden, 2]
    params = {}
    keys = jax.random.split(key, len(sizes))
    for i in range(len(sizes) - 1):
        bound = 1.0 / math.sqrt(sizes[i])
        kw, kb = jax.random.split(keys[i])
        params[f"w{i}"] = jax.random.uniform(kw, (sizes[i], sizes[i + 1]), minval=-bound, maxval=bound)
        params[f"b{i}"] = jax.random.uniform(kb, (sizes[i + 1],), minval=-bound, maxval=bound)
    if embedding:
        # variance head of the embedding layer, sharing the layer: s = softplus(a * h + c)
        params["emb_a"] = jnp.zeros((hidden[0],))
        params["emb_c"] = jnp.full((hidden[0],), -3.0)
    return params


def _embedding_dist(params, h):
    s = jax.nn.softplus(params["emb_a"] * h + params["emb_c"]) + EMBED_MIN_SCALE
    return nd.Normal(h, s).to_event(1)


def _head(params, h, n_layers):
    for i in range(1, n_layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < n_layers - 1:
            h = jax.nn.relu(h)
    return h[..., 0], jax.nn.softplus(h[..., 1]) + MIN_SCALE


def predict(params, x, n_layers):
    """Predictive mean and std (standardised units); the embedding layer propagates its mean."""
    h = jax.nn.relu(x @ params["w0"] + params["b0"])
    return _head(params, h, n_layers)


def numpyro_model(params, x, y=None, *, n_layers: int, embedding: bool):
    """The NumPyro model the handlers wrap: inputs ``mixable("x")``, first hidden
    layer ``mixable("h")`` or, with ``embedding``, the stochastic layer ``embed("h")``."""
    from ..numpyro import embed, mixable

    x = mixable("x", x, dim=-1)  # examples along the rows; the plate comes later
    h = jax.nn.relu(x @ params["w0"] + params["b0"])
    if embedding:
        h = embed("h", _embedding_dist(params, h), dim=-1)
    else:
        h = mixable("h", h, dim=-1)
    mu, sigma = _head(params, h, n_layers)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", nd.Normal(mu, sigma), obs=y)


# --------------------------------------------------------------------------- losses
def _beta_draw(key, alpha):
    if alpha <= 0:
        return jnp.asarray(1.0)
    return jax.random.beta(key, alpha, alpha)


def _mix(a, lam, perm, axis=0):
    partner = jnp.take(a, perm, axis=axis)
    return partner + lam * (a - partner)


def make_batch_loss(method: Method, alpha: float, beta: float, n_layers: int, mode: str):
    """loss(params, key, x, y, perm) -> mean NLL per example of one batch; ``perm``
    is None (the loss draws a random permutation) or the partner of each row."""

    if mode == "handlers" and method.mixes:
        from numpyro.handlers import seed
        from numpyro.infer.util import log_density

        from ..numpyro import handlers as H

        def loss(params, key, x, y, perm):
            kw = dict(alpha=alpha, beta=beta)
            if perm is not None:
                kw["perm"] = perm
            if method.handler == "mixup":
                wrapped = H.mixup(numpyro_model, at=method.at, **kw)
            else:
                wrapped = H.probmix(numpyro_model, at=method.at, **kw)
            lp, _ = log_density(
                seed(wrapped, key), (params, x, y), dict(n_layers=n_layers, embedding=method.embedding), {}
            )
            return -lp / x.shape[0]

        return loss

    def loss(params, key, x, y, perm):
        k_lam, k_perm, k_z, k_eps = jax.random.split(key, 4)
        n = x.shape[0]
        if not method.mixes:
            mu, sigma = predict(params, x, n_layers)
            return -nd.Normal(mu, sigma).log_prob(y).mean()
        lam = _beta_draw(k_lam, alpha)
        if perm is None:
            perm = jax.random.permutation(k_perm, n)
        y_t = _mix(y, lam, perm)
        if beta > 0:
            y_t = y_t + math.sqrt(beta) * jax.random.normal(k_eps, y_t.shape)
        if method.at == "x":
            x = _mix(x, lam, perm)
        h = jax.nn.relu(x @ params["w0"] + params["b0"])
        if method.at == "h" and method.handler == "mixup":
            h = _mix(h, lam, perm)
        elif method.embedding:
            h = pool_pairs(_embedding_dist(params, h), lam, perm, dim=-1).rsample(k_z)
        mu, sigma = _head(params, h, n_layers)
        d = nd.Normal(mu, sigma)
        if method.handler == "probmix" and method.at is None:
            d = pool_pairs(d, lam, perm, dim=-1)
        return -d.log_prob(y_t).mean()

    return loss


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Config:
    epochs: int = 1000
    lr: float = 0.005
    batch_size: int = 0  # 0: full batch
    hidden: Sequence[int] = (128, 32)


def _adam(lr, b1=0.9, b2=0.999, eps=1e-8):
    def init(p):
        z = jax.tree.map(jnp.zeros_like, p)
        return (z, z, jnp.asarray(0))

    def update(g, state, p):
        m, v, t = state
        t = t + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1**t, 1 - b2**t
        p = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), p, m, v)
        return p, (m, v, t)

    return init, update


def _gauss_nll(mu, sigma, y):
    return (0.5 * math.log(2 * math.pi) + jnp.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2).mean()


@functools.lru_cache(maxsize=32)
def build_runner(method: Method, alpha: float, beta: float, cfg: Config, n_fit: int, d_in: int,
                 table_kind: Optional[str], mode: str):
    """A jitted function of stacked per-split arrays that trains and evaluates every split."""
    n_layers = len(cfg.hidden) + 1
    batch_loss = make_batch_loss(method, alpha, beta, n_layers, mode)
    opt_init, opt_update = _adam(cfg.lr)
    full = cfg.batch_size <= 0 or cfg.batch_size >= n_fit
    bsz = n_fit if full else int(cfg.batch_size)
    if not full and table_kind is not None:
        bsz -= bsz % 2
    n_batches = 1 if full else max(1, n_fit // bsz)
    half = bsz // 2

    def draw_partner(key, cand, probs, rows):
        if probs is None:
            col = jax.random.randint(key, rows.shape, 0, cand.shape[1])
        else:  # inverse CDF: one uniform per row (``probs`` holds cumulative probabilities)
            u = jax.random.uniform(key, rows.shape + (1,))
            col = jnp.minimum((u > probs[rows]).sum(-1), cand.shape[1] - 1)
        return cand[rows, col]

    def one_split(key, x, y, xv, yv, xt, yt, cand, probs):
        k_init, k_train = jax.random.split(key)
        params = init_params(k_init, d_in, cfg.hidden, method.embedding)
        state = opt_init(params)
        grad = jax.value_and_grad(batch_loss)

        def step(carry, inp):
            params, state = carry
            k, xb, yb, perm = inp
            l, g = grad(params, k, xb, yb, perm)
            params, state = opt_update(g, state, params)
            return (params, state), l

        def epoch(carry, k):
            params, state, best = carry
            k_order, k_pair, k_steps = jax.random.split(k, 3)
            keys = jax.random.split(k_steps, n_batches)
            if full:
                if table_kind is not None:
                    perm = draw_partner(k_pair, cand, probs, jnp.arange(n_fit))[None]
                    inp = (keys, x[None], y[None], perm)
                else:
                    inp = (keys, x[None], y[None], None)
            else:
                order = jax.random.permutation(k_order, n_fit)
                if table_kind is not None:
                    anchors = order[: n_batches * half].reshape(n_batches, half)
                    partners = draw_partner(k_pair, cand, probs, anchors)
                    idx = jnp.concatenate([anchors, partners], axis=1)
                    swap = jnp.concatenate([jnp.arange(half, 2 * half), jnp.arange(half)])
                    perm = jnp.broadcast_to(swap, (n_batches, 2 * half))
                else:
                    idx = order[: n_batches * bsz].reshape(n_batches, bsz)
                    perm = None
                inp = (keys, x[idx], y[idx], perm)
            if inp[3] is None:
                def step_np(c, i):
                    return step(c, (i[0], i[1], i[2], None))
                (params, state), losses = jax.lax.scan(step_np, (params, state), inp[:3])
            else:
                (params, state), losses = jax.lax.scan(step, (params, state), inp)
            mu, sg = predict(params, xv, n_layers)
            val = _gauss_nll(mu, sg, yv)
            mt, st = predict(params, xt, n_layers)
            test_nll = _gauss_nll(mt, st, yt)
            test_mse = jnp.mean((mt - yt) ** 2)
            b_val, b_nll, b_mse, b_ep, ep = best
            better = val < b_val  # NaN never improves
            best = (
                jnp.where(better, val, b_val),
                jnp.where(better, test_nll, b_nll),
                jnp.where(better, test_mse, b_mse),
                jnp.where(better, ep, b_ep),
                ep + 1,
            )
            return (params, state, best), (losses.mean(), val)

        best0 = (jnp.inf, jnp.nan, jnp.nan, jnp.asarray(-1), jnp.asarray(0))
        (params, state, best), (train_loss, val_curve) = jax.lax.scan(
            epoch, (params, state, best0), jax.random.split(k_train, cfg.epochs)
        )
        b_val, b_nll, b_mse, b_ep, _ = best
        return dict(val_nll=b_val, test_nll=b_nll, test_mse=b_mse, best_epoch=b_ep + 1,
                    train_loss=train_loss, val_curve=val_curve)

    if table_kind == "label":
        fn = jax.vmap(one_split)
    elif table_kind == "knn":
        fn = jax.vmap(lambda k, x, y, xv, yv, xt, yt, c: one_split(k, x, y, xv, yv, xt, yt, c, None))
    else:
        fn = jax.vmap(lambda k, x, y, xv, yv, xt, yt: one_split(k, x, y, xv, yv, xt, yt, None, None))
    return jax.jit(fn)


def stack_splits(splits, method: Method):
    """Stack same-shaped splits (and their partner tables) for vmapping."""
    arrays = [np.stack([getattr(s, a) for s in splits]) for a in
              ("x_fit", "y_fit", "x_val", "y_val", "x_test", "y_test")]
    tables = [partner_table(method, s.x_fit, s.y_fit) for s in splits] if method.mixes else [None]
    extra = []
    kind = None if tables[0] is None else method.pairing
    if kind is not None:
        extra.append(np.stack([t.candidates for t in tables]))
        if kind == "label":
            extra.append(np.cumsum(np.stack([t.probs for t in tables]), axis=-1).astype(np.float32))
    return arrays, extra, kind


def run_splits(splits: List, method_name: str, alpha: float, beta: float, cfg: Config, seed: int,
               mode: Optional[str] = None) -> List[Dict]:
    """Train ``method_name`` on every split (vmapped; splits must share their shapes).
    Returns one result dict per split, metrics in original units of y."""
    method = METHODS[method_name]
    mode = mode or ("handlers" if handlers_available() else "engine")
    arrays, extra, kind = stack_splits(splits, method)
    n_fit, d_in = arrays[0].shape[1:]
    runner = build_runner(method, alpha, beta, cfg, n_fit, d_in, kind, mode)
    keys = jnp.stack([jax.random.key(seed * 100003 + s.index, impl=PRNG_IMPL) for s in splits])
    out = runner(keys, *arrays, *extra)
    out = jax.tree.map(np.asarray, out)
    results = []
    for i, s in enumerate(splits):
        results.append(dict(
            test_nll=float(out["test_nll"][i] + math.log(s.y_std)),
            test_rmse=float(math.sqrt(out["test_mse"][i]) * s.y_std),
            val_nll=float(out["val_nll"][i] + math.log(s.y_std)),
            best_epoch=int(out["best_epoch"][i]),
            train_loss_first=float(out["train_loss"][i][0]),
            train_loss_last=float(out["train_loss"][i][-1]),
            mode=mode,
        ))
    return results
