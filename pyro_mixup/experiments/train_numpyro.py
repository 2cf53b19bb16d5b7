"""The NumPyro trainer of every experiment: SVI with an optax optimiser,
``jax.lax.scan`` over epochs and minibatches, ``jax.vmap`` over *members*.

The model trained is the user's model under the method's handler
(:func:`pyro_mixup.experiments.methods.wrap`), run by ``numpyro.infer.SVI``;
a maximum-likelihood network is an SVI with an empty guide.

A member is one (split, alpha, pairing) to train. Members that share a
handler and ``at`` (ProbMix with random, LocK or C-Mixup partners, say) share
one compiled function and train side by side in one vmapped scan: ``alpha`` is
an argument (the trainer draws ``lam ~ Beta(alpha, alpha)`` each step and hands
it to the handler as ``lam=``; the handler's own options are fixed when it is
made, so a traced ``alpha`` cannot go to it), and so is where partners come
from. Compilation happens once per (network, handler, ``at``, batch plan) and
the per-step work grows with the members, which is what a small CPU step needs.

What keeps an epoch cheap (``benchmarks/epoch_cost.py`` times it inside this scan):

- the shuffle: a random permutation is drawn once per member; an epoch visits it
  in the order ``(a * i + b) mod n`` with ``a`` a random unit mod ``n`` and
  ``b`` random -- a gather, not the sort of a fresh ``jax.random.permutation``;
- partners: each minibatch is ``[anchors, partners]`` and the handler pairs the
  halves (a fixed ``perm`` that is a cyclic shift, applied as a roll); random
  pairing takes the partners from the shuffled order, a table pairing (LocK,
  C-Mixup) draws them by a binary search of the anchors' cumulative weights;
- evaluation: the validation NLL each epoch; the best-validation weights are
  carried and the test rows are scored once, at the end.

Every step clips the gradient to global norm :data:`CLIP_NORM`: on naval,
unclipped Adam steps after a gradient spike killed every ReLU and left a
constant network (training loss 1.419, the NLL of N(0, 1) on standardised y).
"""

from __future__ import annotations

import functools
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.optim import optax_to_numpyro

from ..core.predictive import DEFAULT_NUM_DRAWS
from ..numpyro import marginal_predictive
from . import metrics
from .methods import METHODS, Method, partner_table, wrap
from .nets_numpyro import GaussianMLP

#: ``TrainConfig.predictive``: "marginal" over the embedding, or its "mean".
EMBEDDING_PREDICTIVES = ("marginal", "mean")

#: The PRNG of the training keys (and so of the embedding noise). Measured on this
#: CPU by benchmarks/epoch_cost.py --prng: threefry draws normals faster than
#: unsafe_rbg inside the compiled epoch (see docs/experiments.md).
PRNG_IMPL = "threefry2x32"
CLIP_NORM = 100.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1000
    lr: float = 0.005
    batch_size: int = 64  # 0: full batch
    beta: float = 0.0  # target jitter of the mixing methods
    clip_norm: float = CLIP_NORM
    #: How a network with an embedding layer predicts: "marginal" (the mixture over
    #: ``test_draws`` draws of the embedding, the paper's predictive) or "mean" (the
    #: embedding at its mean). Networks without one are deterministic either way.
    predictive: str = "marginal"
    test_draws: int = DEFAULT_NUM_DRAWS
    #: Draws of the per-epoch validation NLL of an embedding network (0: the mean
    #: embedding, cheap; on the large UCI sets a marginal every epoch costs more than the epoch).
    val_draws: int = 0

    def __post_init__(self):
        if self.predictive not in EMBEDDING_PREDICTIVES:
            raise ValueError(
                f"predictive must be one of {EMBEDDING_PREDICTIVES}; got {self.predictive!r}"
            )
        if self.test_draws < 1 or self.val_draws < 0:
            raise ValueError(
                f"test_draws must be >= 1 and val_draws >= 0; got {self.test_draws}, {self.val_draws}"
            )

    def batch_plan(self, n_fit: int):
        """``(batch size, batches per epoch)``; a minibatch holds anchors and partners, so it is even."""
        if self.batch_size <= 0 or self.batch_size >= n_fit:
            return n_fit, 1
        size = int(self.batch_size)
        if size < 2 or size % 2:
            raise ValueError(
                f"batch size {size}: a minibatch holds anchors and their partners, so it must be "
                "even and at least 2 (or 0 for full batch)"
            )
        return size, n_fit // size


def use_compile_cache(path: str | None = None) -> str:
    """Keep JAX's compiled trainers on disk (``$PYRO_MIXUP_JAX_CACHE``, default
    ``~/.cache/pyro-mixup/jax``; a cache the caller set up already is kept): a
    re-run or a resumed run skips the compilations."""
    if path is None and jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = (
        path
        or os.environ.get("PYRO_MIXUP_JAX_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "pyro-mixup", "jax")
    )
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def optimizer(lr: float, clip_norm: float = CLIP_NORM):
    """Adam after a global-norm gradient clip, as a NumPyro optimiser."""
    return optax_to_numpyro(optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(lr)))


def _empty_guide(*args, **kwargs):
    """The guide of a maximum-likelihood fit: the model has no latent sites."""


def _units_mod(n: int) -> np.ndarray:
    """The multipliers ``a`` for which ``i -> a * i mod n`` permutes ``0..n-1``."""
    a = np.arange(1, max(n, 2))
    return a[np.gcd(a, n) == 1].astype(np.int32)


def _training_model(model, method: Method, cfg: TrainConfig, size: int, full_batch: bool):
    """``(x, y, lam, perm)`` -> the wrapped model, its log density a mean per example."""
    halves = np.roll(np.arange(size), size // 2)  # concrete: the handler applies it as a roll

    def train_model(x, y, lam=None, perm=None):
        options = dict(beta=cfg.beta)
        if method.mixes:
            options.update(lam=lam, perm=perm if full_batch else halves)
        with numpyro.handlers.scale(scale=1.0 / size):
            return wrap(model, method, backend="numpyro", **options)(x, y)

    return train_model


def _table_partner(key, candidates, cdf, rows):
    """One partner per row, drawn by its row of cumulative weights (binary search)."""
    u = jax.random.uniform(key, rows.shape)
    col = jax.vmap(lambda c, v: jnp.searchsorted(c, v, side="right"))(
        cdf[rows].reshape(-1, cdf.shape[-1]), u.reshape(-1)
    )
    col = jnp.minimum(col.reshape(rows.shape), candidates.shape[-1] - 1)
    return candidates[rows, col]


@functools.lru_cache(maxsize=64)
def build(net: GaussianMLP, method: Method, cfg: TrainConfig, n_fit: int):
    """A jitted ``train(keys, alphas, split_of, table_of, X, Y, XV, YV, CAND, CDF)``.

    Per member (leading axis of ``keys``, ``alphas``, ``split_of``,
    ``table_of``): its data are ``X[split_of]`` ..., its partners come from
    table ``table_of`` of ``CAND``/``CDF`` or, where ``table_of < 0``, from the
    shuffled order. Returns per member the best-validation weights, their
    validation NLL (standardised units) and epoch, and the training loss per epoch.
    ``method`` only matters through its handler, ``at`` and embedding."""
    size, n_batches = cfg.batch_plan(n_fit)
    full = n_batches == 1 and size == n_fit
    half = size // 2
    units = jnp.asarray(_units_mod(n_fit))
    svi = SVI(
        _training_model(net, method, cfg, size, full),
        _empty_guide,
        optimizer(cfg.lr, cfg.clip_norm),
        Trace_ELBO(),
    )
    marginal_val = net.embedding and cfg.predictive == "marginal" and cfg.val_draws > 0

    def validation_nll(params, xv, yv, key):
        if marginal_val:
            return -marginal_predictive(
                net, key, xv, yv, params=params, num_draws=cfg.val_draws
            ).log_density.mean()
        return metrics.gaussian_nll(*net.predict(params, xv), yv, xp=jnp)

    def embed_scale(params, x):
        """The embedding's mean std on the fitting rows (it can collapse: nothing in the loss keeps it up)."""
        if not net.embedding:
            return jnp.float32(0.0)
        return net.embedding_dist(params, net.first(params, x), x).base_dist.scale.mean()

    def one_member(key, alpha, split, table, X, Y, XV, YV, CAND, CDF):
        x, y, xv, yv = X[split], Y[split], XV[split], YV[split]
        cand, cdf = CAND[jnp.maximum(table, 0)], CDF[jnp.maximum(table, 0)]
        k_init, k_order, k_train = jax.random.split(key, 3)
        state = svi.init(k_init, x[:size], y[:size], lam=jnp.float32(1.0), perm=jnp.arange(size))
        order0 = jax.random.permutation(k_order, n_fit)  # once per member: epochs walk it affinely

        def step(state, batch):
            k_lam, xb, yb, perm = batch
            # alpha 0 is "no mixing" (lam = 1), the limit of Beta(alpha, alpha) draws' effect; Beta(0, 0) is NaN
            lam = (
                jnp.where(
                    alpha > 0,
                    jax.random.beta(k_lam, jnp.maximum(alpha, 1e-6), jnp.maximum(alpha, 1e-6)),
                    1.0,
                )
                if method.mixes
                else None
            )
            return svi.update(state, xb, yb, lam=lam, perm=perm)

        def epoch(carry, k):
            state, best = carry
            k_a, k_b, k_pair, k_lam, k_val = jax.random.split(k, 5)
            lam_keys = jax.random.split(k_lam, n_batches)
            if full:
                rows = jnp.arange(n_fit)[None]
                shifted = jnp.roll(rows, jax.random.randint(k_a, (), 1, n_fit), axis=1)
                perm = jnp.where(table >= 0, _table_partner(k_pair, cand, cdf, rows), shifted)
            else:
                a = units[jax.random.randint(k_a, (), 0, units.shape[0])]
                b = jax.random.randint(k_b, (), 0, n_fit)
                visit = order0[(a * jnp.arange(n_fit) + b) % n_fit]
                anchors = visit[: n_batches * half].reshape(n_batches, half)
                partners = visit[n_batches * half : n_batches * size].reshape(
                    n_batches, size - half
                )
                if method.mixes:
                    drawn = _table_partner(k_pair, cand, cdf, anchors)
                    partners = jnp.where(table >= 0, drawn, partners)
                rows = jnp.concatenate([anchors, partners], axis=1)
                perm = rows  # unused: a minibatch pairs its halves
            state, losses = jax.lax.scan(step, state, (lam_keys, x[rows], y[rows], perm))
            params = svi.get_params(state)
            val = validation_nll(params, xv, yv, k_val)
            best_val, best_params, best_epoch, count = best
            better = val < best_val  # NaN never improves
            best = (
                jnp.where(better, val, best_val),
                jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best_params),
                jnp.where(better, count, best_epoch),
                count + 1,
            )
            return (state, best), (losses.mean(), embed_scale(params, x))

        best0 = (jnp.inf, svi.get_params(state), jnp.asarray(-1), jnp.asarray(0))
        (state, (best_val, best_params, best_epoch, _)), (train_loss, scale) = jax.lax.scan(
            epoch, (state, best0), jax.random.split(k_train, cfg.epochs)
        )
        steps = state.optim_state[0]  # optimiser updates made: epochs x batches per epoch
        return dict(
            params=best_params,
            val_nll=best_val,
            best_epoch=best_epoch + 1,
            train_loss=train_loss,
            steps=steps,
            embed_scale=scale,
        )

    shared = (None,) * 6
    return jax.jit(jax.vmap(one_member, in_axes=(0, 0, 0, 0, *shared)))


def fit_svi(
    make_model_and_guide,
    xs,
    ys,
    *,
    method: str,
    alpha: float,
    cfg: TrainConfig,
    keys,
    model_kwargs=None,
    subsample: bool = False,
    chunk: int = 100,
    progress: bool = False,
    desc: str = "svi",
):
    """SVI for models with latent sites (the BNN): ``M`` members side by side
    (leading axis of ``xs``, ``ys``, ``keys``), ``method``'s handler drawing its own
    ``lam`` and partners; returns ``(params [M, ...], loss per epoch and example [M, epochs])``.

    ``make_model_and_guide()`` returns a fresh ``(model, guide)``; it is called
    inside every compiled function, since an autoguide keeps what ``init`` sets up.
    Minibatches (``cfg.batch_size``) walk a per-member permutation as
    :func:`build` does; with ``subsample`` the model is told the data size
    (``num_data=n``) so its likelihood is scaled to the full data. The ELBO is
    divided by ``n``: a loss per example, comparable across batch sizes."""
    n = xs.shape[1]
    size, n_batches = cfg.batch_plan(n) if cfg.batch_size else (n, 1)
    full = size == n
    units = jnp.asarray(_units_mod(n))
    kwargs = dict(model_kwargs or {}, **({"num_data": n} if subsample and not full else {}))

    def make_svi(x, y, key=None):
        """An SVI and its initial state: ``update`` and ``get_params`` need what ``init``
        sets up, so every compiled function inits its own (XLA drops the unused part)."""
        model, guide = make_model_and_guide()
        wrapped = wrap(model, method, backend="numpyro", alpha=alpha)
        scale = numpyro.handlers.scale
        svi = SVI(
            scale(wrapped, 1.0 / n),
            scale(guide, 1.0 / n),
            optimizer(cfg.lr, cfg.clip_norm),
            Trace_ELBO(),
        )
        key = jax.random.PRNGKey(0) if key is None else key
        return svi, svi.init(key, x[:size], y[:size], **kwargs)

    def init(key, x, y):
        k_init, k_order, k_train = jax.random.split(key, 3)
        return make_svi(x, y, k_init)[1], jax.random.permutation(k_order, n), k_train

    def epochs(carry, x, y, length):
        svi = make_svi(x, y)[0]

        def epoch(carry, _):
            state, order0, key = carry
            key, k_a, k_b = jax.random.split(key, 3)
            if full:
                rows = jnp.arange(n)[None]
            else:
                a = units[jax.random.randint(k_a, (), 0, units.shape[0])]
                visit = order0[(a * jnp.arange(n) + jax.random.randint(k_b, (), 0, n)) % n]
                rows = visit[: n_batches * size].reshape(n_batches, size)
            state, losses = jax.lax.scan(
                lambda st, r: svi.update(st, x[r], y[r], **kwargs), state, rows
            )
            return (state, order0, key), losses.mean()

        return jax.lax.scan(epoch, carry, None, length=length)

    carry = jax.jit(jax.vmap(init))(keys, xs, ys)
    chunk = max(1, min(int(chunk), cfg.epochs))
    run = jax.jit(jax.vmap(functools.partial(epochs, length=chunk)))
    losses, done = [], 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, desc=desc, leave=False)
    while done < cfg.epochs:
        if cfg.epochs - done < chunk:  # the last, shorter chunk compiles once more
            run = jax.jit(jax.vmap(functools.partial(epochs, length=cfg.epochs - done)))
        carry, chunk_losses = run(carry, xs, ys)
        chunk_losses = np.asarray(chunk_losses)
        losses.append(chunk_losses)
        done += chunk_losses.shape[1]
        if bar is not None:
            bar.update(chunk_losses.shape[1])
            bar.set_postfix(loss=f"{np.nanmean(chunk_losses[:, -1]):.3f}", refresh=False)
    if bar is not None:
        bar.close()
    params = jax.jit(jax.vmap(lambda st, x, y: make_svi(x, y)[0].get_params(st)))(carry[0], xs, ys)
    return params, np.concatenate(losses, axis=1)


@functools.lru_cache(maxsize=64)
def _predictor(net: GaussianMLP):
    return jax.jit(jax.vmap(net.predict))


@functools.lru_cache(maxsize=32)
def _scorer(net: GaussianMLP, num_draws: int, embedding: str):
    """Jitted, over members: ``(params, key, x, y) -> (log density, draw means, draw stds)``
    of :func:`pyro_mixup.numpyro.marginal_predictive` (the library's own predictive)."""

    def one(params, key, x, y):
        p = marginal_predictive(
            net,
            key,
            x,
            y,
            params=params,
            num_draws=num_draws,
            embedding=embedding,
            batch_size=min(num_draws, 25),
        )
        return p.log_density, p.draw_means, jnp.sqrt(p.draw_variances)

    return jax.jit(jax.vmap(one))


def predictive_scores(
    net: GaussianMLP, cfg: TrainConfig, params, keys, x, y, y_scales, chunk: int = 10
) -> list[dict]:
    """Test scores per member (leading axis of ``params``, ``keys``, ``x``, ``y``;
    standardised units in, original units out) of the predictive ``cfg`` asks for:
    the marginal over ``cfg.test_draws`` embedding draws, or the mean embedding.
    Embedding networks also get ``test_nll_mean_embedding``, for comparison."""
    marginal = net.embedding and cfg.predictive == "marginal"
    score = _scorer(net, cfg.test_draws if marginal else 1, "sample" if marginal else "mean")
    out = []
    for start in range(0, len(keys), chunk):
        part = slice(start, start + chunk)
        ld, means, stds = jax.tree.map(
            np.asarray,
            score(jax.tree.map(lambda a: a[part], params), keys[part], x[part], y[part]),  # noqa: B023
        )
        if net.embedding:
            mu, sigma = jax.tree.map(
                np.asarray,
                _predictor(net)(jax.tree.map(lambda a: a[part], params), x[part]),  # noqa: B023
            )
        for j in range(len(ld)):
            i = start + j
            rec = metrics.mixture_scores(means[j], stds[j], y[i], y_scales[i], log_density=ld[j])
            rec.update(
                predictive="marginal" if marginal else "mean", predictive_draws=int(means.shape[1])
            )
            if net.embedding:
                rec["test_nll_mean_embedding"] = metrics.gaussian_scores(
                    mu[j], sigma[j], y[i], y_scales[i]
                )["test_nll"]
            out.append(rec)
    return out


def member_key(seed: int, split: int, alpha: float, method: str):
    """A member's training key, from the seed, split, alpha and method (a resumed run draws the same)."""
    mix = zlib.crc32(f"{method}/{alpha!r}".encode())
    return jax.random.fold_in(jax.random.key(seed * 100003 + split, impl=PRNG_IMPL), mix)


def partner_tables(methods: Sequence[Method], splits) -> tuple:
    """The tables the methods need on each split, padded to one width:
    ``(index of (method, split) -> table, candidates [T, n, W], cumulative weights [T, n, W])``."""
    tables, index = [], {}
    for m in methods:
        if not m.uses_table:
            continue
        for i, s in enumerate(splits):
            index[(m.name, i)] = len(tables)
            tables.append(partner_table(m, s.x_fit, s.y_fit.astype(np.float64)))
    n = splits[0].x_fit.shape[0]
    if not tables:
        return index, np.zeros((1, n, 1), np.int32), np.ones((1, n, 1), np.float32)
    width = max(t.candidates.shape[1] for t in tables)
    cand = np.zeros((len(tables), n, width), np.int32)
    cdf = np.ones((len(tables), n, width), np.float32)  # padding is never drawn: its weight is 0
    for j, t in enumerate(tables):
        w = t.candidates.shape[1]
        cand[j, :, :w] = t.candidates
        probs = np.full((n, w), 1.0 / w) if t.probs is None else t.probs
        cdf[j, :, :w] = np.cumsum(probs, -1)
        cdf[j, :, w - 1] = 1.0  # rounding never leaves u above the last candidate
    return index, cand, cdf


def network(method: Method, d_in: int, hidden: Sequence[int]) -> GaussianMLP:
    """The network ``method`` trains: the protocol's ``hidden`` sizes unless the method has its own."""
    return GaussianMLP(
        d_in,
        tuple(method.hidden or hidden),
        embedding=method.embedding,
        variance_width=method.variance_width,
    )


def same_graph(method: Method) -> tuple:
    """Methods with the same key train in one compiled function (they differ only in partners)."""
    return (method.handler, method.at, method.pooling, method.hidden, method.variance_width)


def train_members(
    splits: list,
    method_names: Sequence[str],
    alphas: Sequence[float],
    cfg: TrainConfig,
    seed: int,
    hidden: Sequence[int] = (128, 32),
    max_members: int = 120,
):
    """Train every (method, alpha, split) of ``method_names`` (one :func:`same_graph`
    key; splits of one shape) side by side. Returns ``(net, members, results)``:
    ``members`` a list of ``(method, alpha, split position)`` and ``results`` the
    trainer's arrays (``params``, ``val_nll``, ``best_epoch``, ``train_loss``,
    ``embed_scale``, ``steps``) with the members along axis 0, plus ``keys``.
    ``max_members`` bounds one call's memory."""
    methods = [METHODS[m] for m in method_names]
    if len({same_graph(m) for m in methods}) != 1:
        raise ValueError(
            f"run_members trains methods of one handler and at= together; got {list(method_names)}"
        )
    net = network(methods[0], splits[0].x_fit.shape[1], hidden)
    table_of, cand, cdf = partner_tables(methods, splits)
    data = [np.stack([getattr(s, a) for s in splits]) for a in ("x_fit", "y_fit", "x_val", "y_val")]
    train = build(net, methods[0], cfg, data[0].shape[1])
    members = [
        (m.name, float(a), i)
        for m in methods
        for a in (alphas if m.mixes else [0.0])
        for i in range(len(splits))
    ]
    results = []
    for start in range(0, len(members), max_members):
        chunk = members[start : start + max_members]
        keys = jnp.stack([member_key(seed, splits[i].index, a, m) for m, a, i in chunk])
        res = train(
            keys,
            jnp.asarray([a for _, a, _ in chunk], jnp.float32),
            jnp.asarray([i for _, _, i in chunk]),
            jnp.asarray([table_of.get((m, i), -1) for m, _, i in chunk]),
            *data,
            cand,
            cdf,
        )
        results.append(dict(res, keys=jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)))
    return net, members, jax.tree.map(lambda *a: jnp.concatenate(a), *results)


def run_members(
    splits: list,
    method_names: Sequence[str],
    alphas: Sequence[float],
    cfg: TrainConfig,
    seed: int,
    hidden: Sequence[int] = (128, 32),
    max_members: int = 120,
) -> dict[tuple, dict]:
    """:func:`train_members`, then each member scored on its split's test rows;
    returns ``{(method, alpha, split index): record}``, scores in the original units of y."""
    net, members, res = train_members(splits, method_names, alphas, cfg, seed, hidden, max_members)
    split_of = [i for _, _, i in members]
    scores = predictive_scores(
        net,
        cfg,
        res["params"],
        res["keys"],
        np.stack([splits[i].x_test for i in split_of]),
        np.stack([splits[i].y_test for i in split_of]),
        [splits[i].y_std for i in split_of],
    )
    res = jax.tree.map(np.asarray, {k: v for k, v in res.items() if k != "keys"})
    return {
        (m, a, splits[i].index): _record(splits[i], j, res, scores[j])
        for j, (m, a, i) in enumerate(members)
    }


def _record(split, i: int, res: dict, scores: dict) -> dict:
    log_scale = math.log(split.y_std)
    val_std = float(res["val_nll"][i])
    constant = float(metrics.gaussian_nll(0.0, 1.0, split.y_val.astype(np.float64)))
    return dict(
        **scores,
        val_nll=val_std + log_scale,
        best_epoch=int(res["best_epoch"][i]),
        steps=int(res["steps"][i]),
        train_loss_first=float(res["train_loss"][i][0]),
        train_loss_last=float(res["train_loss"][i][-1]),
        # a network no better on validation than predicting N(0, 1) did not train
        learned=bool(val_std < constant - 0.01),
        prng=PRNG_IMPL,
        **_embed_scales(res["embed_scale"][i]),
    )


def _embed_scales(per_epoch) -> dict:
    """First and last epoch's mean embedding std (an embedding network's; 0 for the others)."""
    if not per_epoch[0] > 0:
        return {}
    return dict(embed_scale_first=float(per_epoch[0]), embed_scale_last=float(per_epoch[-1]))
