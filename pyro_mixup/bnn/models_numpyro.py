"""The heteroscedastic Gaussian BNN regressor for NumPyro, and its SVI trainer.

Same model as :class:`pyro_mixup.bnn.models_pyro.BNNRegressor` (same site
names, priors, standardisation and mixup hooks), written as a callable
NumPyro model. The handlers come from :mod:`pyro_mixup.numpyro.handlers`;
``mix`` / ``m-mix`` / ``m-probmix`` need its ``mixable`` / ``embed``
primitives (:mod:`pyro_mixup.numpyro`).

Example::

    >>> import numpy as np
    >>> x, y = np.random.randn(16, 2).astype("float32"), np.random.randn(16).astype("float32")
    >>> model = make_model("erm", x, y, hidden=(8,))
    >>> guide, params = fit(model, x, y, epochs=3, progress=False)
    >>> sorted(params)[:2]
    ['head.bias_auto_loc', 'head.bias_auto_scale']
"""

from __future__ import annotations

import math

import numpy as np

from . import METHODS, uses_embed


def _primitives():
    """(mixable, embed) of the NumPyro side; mixable falls back to the identity
    while the NumPyro primitives are not available (ERM and ProbMix need none)."""
    try:
        from .. import numpyro as pm_numpyro

        mixable = getattr(pm_numpyro, "mixable", None)
        embed = getattr(pm_numpyro, "embed", None)
    except ImportError:  # pragma: no cover
        mixable = embed = None
    if mixable is None:
        mixable = lambda name, t, **kw: t  # noqa: E731
    return mixable, embed


class BNNRegressor:
    """Heteroscedastic Gaussian BNN for NumPyro: ``model(x, y=None, num_data=None)``.

    Arguments as :class:`pyro_mixup.bnn.models_pyro.BNNRegressor`.
    """

    def __init__(self, in_dim, hidden=(50,), *, embed=False, prior_scale=1.0, x_loc=None, x_scale=None,
                 y_loc=0.0, y_scale=1.0, min_scale=1e-3):
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("hidden needs at least one layer")
        self.in_dim, self.hidden_sizes, self.use_embed = int(in_dim), hidden, bool(embed)
        self.prior_scale, self.min_scale = float(prior_scale), float(min_scale)
        self.x_loc = np.zeros(in_dim, np.float32) if x_loc is None else np.asarray(x_loc, np.float32)
        self.x_scale = np.ones(in_dim, np.float32) if x_scale is None else np.asarray(x_scale, np.float32)
        self.y_loc, self.y_scale = float(y_loc), float(y_scale)

    def _linear(self, name, h, n_in, n_out):
        import numpyro
        import numpyro.distributions as dist

        s = self.prior_scale / math.sqrt(n_in)
        w = numpyro.sample(f"{name}.weight", dist.Normal(0.0, s).expand([n_out, n_in]).to_event(2))
        b = numpyro.sample(f"{name}.bias", dist.Normal(0.0, self.prior_scale).expand([n_out]).to_event(1))
        return h @ w.T + b

    def predict_params(self, x):
        import jax
        import numpyro.distributions as dist

        mixable, embed = _primitives()
        h = mixable("x", (x - self.x_loc) / self.x_scale, dim=-1)  # the data plate comes later
        sizes = (self.in_dim,) + self.hidden_sizes
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            out = self._linear(f"layers.{i}", h, a, 2 * b if (self.use_embed and i == 0) else b)
            if i == 0 and self.use_embed:
                if embed is None:
                    raise RuntimeError("the embedding variant needs pyro_mixup.numpyro.embed, which is not available")
                m, s = out[..., :b], out[..., b:]
                out = embed("z", dist.Normal(m, jax.nn.softplus(s) + 1e-3).to_event(1), dim=-1)
            h = jax.nn.relu(out)
            if i == 0:
                h = mixable("h", h, dim=-1)
        out = self._linear("head", h, sizes[-1], 2)
        mu, sigma = out[..., 0], jax.nn.softplus(out[..., 1]) + self.min_scale
        return self.y_loc + self.y_scale * mu, self.y_scale * sigma

    def __call__(self, x, y=None, num_data=None, kl_weight=1.0):
        import numpyro
        import numpyro.distributions as dist
        from numpyro import handlers

        loc, scale = self.predict_params(x)
        n = x.shape[0]
        if num_data is None:
            plate = numpyro.plate("data", n)
        else:
            plate = numpyro.plate("data", int(num_data), subsample_size=n)
        with plate, handlers.scale(scale=1.0 / kl_weight):
            numpyro.sample("y", dist.Normal(loc, scale), obs=y)
        return loc


def make_model(method, x_train, y_train, hidden=(50,), prior_scale=1.0) -> BNNRegressor:
    from .data import standardisation

    x_loc, x_scale, y_loc, y_scale = standardisation(np.asarray(x_train), np.asarray(y_train))
    return BNNRegressor(np.asarray(x_train).shape[1], hidden, embed=uses_embed(method), prior_scale=prior_scale,
                        x_loc=x_loc, x_scale=x_scale, y_loc=y_loc, y_scale=y_scale)


def wrap(model, method, alpha=1.0, **options):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if method == "erm":
        return model
    from ..numpyro import handlers

    if method == "probmix":
        return handlers.probmix(model, alpha=alpha, **options)
    if method == "m-probmix":
        if not getattr(model, "use_embed", False):
            raise ValueError("m-probmix needs the embedding variant: BNNRegressor(..., embed=True)")
        return handlers.probmix(model, alpha=alpha, at="z", **options)
    if method == "mix":
        return handlers.mixup(model, alpha=alpha, at="x", **options)
    return handlers.mixup(model, alpha=alpha, at="h", **options)


def fit(model, x, y, *, method="erm", alpha=1.0, epochs=200, lr=0.01, batch_size=None, init_scale=0.05,
        seed=0, progress=True, losses=None, kl_weight=1.0):
    """SVI (AutoNormal, Trace_ELBO, clipped Adam) with ``method``'s handler;
    returns ``(guide, params)``. Options as :func:`pyro_mixup.bnn.models_pyro.fit`;
    full-batch training runs its ``epochs`` steps in jitted chunks of (up to) 50."""
    if not kl_weight > 0:
        raise ValueError(f"kl_weight must be > 0; got {kl_weight!r}")
    import jax
    import jax.numpy as jnp
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.initialization import init_to_sample
    from numpyro.optim import ClippedAdam

    x = jnp.asarray(np.asarray(x, np.float32))
    y = jnp.asarray(np.asarray(y, np.float32))
    n = x.shape[0]
    guide = AutoNormal(model, init_loc_fn=init_to_sample, init_scale=init_scale)
    svi = SVI(wrap(model, method, alpha), guide, ClippedAdam(step_size=lr, clip_norm=10.0), Trace_ELBO())
    key = jax.random.PRNGKey(0 if seed is None else seed)
    key, k_init = jax.random.split(key)
    bs = n if batch_size is None or batch_size >= n else int(batch_size)
    chunk = max(1, min(50, epochs))  # full batch: run steps in jitted chunks (lax.scan), far less dispatch overhead
    if bs == n:
        state = svi.init(k_init, x, y, kl_weight=kl_weight)

        def _steps(s, length):
            return jax.lax.scan(lambda c, _: svi.update(c, x, y, kl_weight=kl_weight), s, None, length=length)

        update = jax.jit(_steps, static_argnums=1)
    else:
        state = svi.init(k_init, x[:bs], y[:bs], num_data=n, kl_weight=kl_weight)
        update = jax.jit(lambda s, xb, yb: svi.update(s, xb, yb, num_data=n, kl_weight=kl_weight))
    rounds = -(-epochs // chunk) if bs == n else epochs
    it = range(rounds)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        it = bar = tqdm(it, desc=f"svi {method}" + (f" (x{chunk} epochs)" if bs == n else ""), leave=False)
    rng = np.random.default_rng(seed)
    for r in it:
        if bs == n:
            # exactly ``epochs`` steps: the last chunk may be shorter (compiled once more)
            state, chunk_losses = update(state, min(chunk, epochs - r * chunk))
            if losses is not None:
                losses.extend((np.asarray(chunk_losses) / n).tolist())
            loss = float(chunk_losses[-1])
            if bar is not None:
                bar.set_postfix(loss=f"{loss / n:.3f}", refresh=False)
            continue
        else:
            perm = rng.permutation(n)
            loss = 0.0
            for start in range(0, n - bs + 1, bs):
                idx = perm[start : start + bs]
                state, l_b = update(state, x[idx], y[idx])
                loss += float(l_b) * bs / n
        loss = float(loss)
        if losses is not None:
            losses.append(loss / n)
        if bar is not None:
            bar.set_postfix(loss=f"{loss / n:.3f}", refresh=False)
    return guide, svi.get_params(state)


def fit_splits(method, splits, *, hidden=(50,), prior_scale=1.0, alpha=1.0, epochs=200, lr=0.01, init_scale=0.05,
               seeds=None, kl_weight=1.0, chunk=100, progress=True):
    """Train one BNN per split at once: full-batch SVI ``jax.vmap``-ed across
    splits, one compilation for all of them.

    :param splits: a sequence of ``(x_train, y_train)`` pairs, all of the same shapes.
    :param seeds: one seed per split (default ``0, 1, ...``); split ``k`` starts
        from the same random state as ``fit(..., seed=seeds[k])``.
    :returns: a list, per split, of ``(model, guide, params, losses)``: the
        split's model (:func:`make_model`, with its standardisation), an
        AutoNormal guide for it and its fitted parameters (use them as
        ``fit``'s), and the ELBO per epoch and training point.

    Every split trains on its own standardised data with a model whose
    standardisation is the identity. That is the same optimisation problem as
    ``fit`` on the raw data: the model standardises its inputs and maps its
    outputs back affinely, so the two likelihoods differ by a constant
    (``n log y_scale``), and pooling and target mixing commute with affine maps
    of ``y``. The parameters therefore carry over to the split's own model, equal
    to ``fit``'s up to float rounding (the returned ``losses`` are on the
    standardised scale: ``fit``'s minus ``log(y_scale) / kl_weight``).
    """
    if not kl_weight > 0:
        raise ValueError(f"kl_weight must be > 0; got {kl_weight!r}")
    if not splits:
        raise ValueError("fit_splits needs at least one (x_train, y_train) pair")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs!r}")
    import jax
    import jax.numpy as jnp
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.initialization import init_to_sample
    from numpyro.optim import ClippedAdam

    shapes = {(np.shape(x), np.shape(y)) for x, y in splits}
    if len(shapes) > 1:
        raise ValueError(f"fit_splits needs splits of one shape (group them by shape first); got {sorted(shapes)}")
    seeds = list(range(len(splits))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(splits):
        raise ValueError(f"got {len(seeds)} seeds for {len(splits)} splits")
    models = [make_model(method, x, y, hidden, prior_scale) for x, y in splits]
    # standardise with each model's own constants, so training sees what the model computes
    xs = [(np.asarray(x, np.float64) - m.x_loc) / m.x_scale for m, (x, _) in zip(models, splits)]
    ys = [(np.asarray(y, np.float64) - m.y_loc) / m.y_scale for m, (_, y) in zip(models, splits)]
    xs, ys = jnp.asarray(np.stack(xs), jnp.float32), jnp.asarray(np.stack(ys), jnp.float32)
    unit = BNNRegressor(xs.shape[-1], hidden, embed=uses_embed(method), prior_scale=prior_scale)

    def make_svi(x, y, key=None):
        """An SVI and its initial state (from ``key``), set up inside the current trace:
        ``update`` and ``get_params`` need the guide and transforms that ``init`` sets up;
        doing that inside each jitted function (XLA drops the unused init) keeps tracers
        from leaking between traces and avoids an eager, op-by-op init."""
        guide = AutoNormal(unit, init_loc_fn=init_to_sample, init_scale=init_scale)
        svi = SVI(wrap(unit, method, alpha), guide, ClippedAdam(step_size=lr, clip_norm=10.0), Trace_ELBO())
        return svi, svi.init(jax.random.PRNGKey(0) if key is None else key, x, y, kl_weight=kl_weight)

    # the same key path as ``fit``: PRNGKey(seed) -> (_, k_init) -> svi.init(k_init);
    # each split gets its own guide initialisation (init_to_sample with its own key)
    keys = jnp.stack([jax.random.split(jax.random.PRNGKey(s))[1] for s in seeds])
    states = jax.jit(jax.vmap(lambda k, x, y: make_svi(x, y, k)[1]))(keys, xs, ys)

    chunk = max(1, min(int(chunk), int(epochs)))

    def steps(state, x, y, length):
        svi = make_svi(x, y)[0]
        return jax.lax.scan(lambda s, _: svi.update(s, x, y, kl_weight=kl_weight), state, None, length=length)

    run = jax.jit(jax.vmap(lambda s, x, y: steps(s, x, y, chunk)))
    n = xs.shape[1]
    losses = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(epochs), desc=f"svi {method} x{len(splits)} splits", leave=False)
    done = 0
    while done < epochs:
        if epochs - done < chunk:  # the last, shorter chunk compiles once more
            run = jax.jit(jax.vmap(lambda s, x, y, m=epochs - done: steps(s, x, y, m)))
        states, chunk_losses = run(states, xs, ys)
        chunk_losses = np.asarray(chunk_losses) / n
        losses.append(chunk_losses)
        done += chunk_losses.shape[1]
        if bar is not None:
            bar.update(chunk_losses.shape[1])
            bar.set_postfix(loss=f"{np.nanmean(chunk_losses[:, -1]):.3f}", refresh=False)
    if bar is not None:
        bar.close()
    losses = np.concatenate(losses, axis=1)
    params = jax.jit(jax.vmap(lambda s, x, y: make_svi(x, y)[0].get_params(s)))(states, xs, ys)
    out = []
    for i, model in enumerate(models):
        guide = AutoNormal(model, init_loc_fn=init_to_sample, init_scale=init_scale)
        out.append((model, guide, jax.tree.map(lambda v: v[i], params), losses[i]))
    return out
