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

import itertools
import math

import numpy as np

from ...numpyro import embed as embed_layer
from ...numpyro import mixable
from .. import methods as registry
from ..data import standardisation
from . import BNN_METHODS


class BNNRegressor:
    """Heteroscedastic Gaussian BNN for NumPyro: ``model(x, y=None, num_data=None)``.

    Arguments as :class:`pyro_mixup.bnn.models_pyro.BNNRegressor`.
    """

    def __init__(
        self,
        in_dim,
        hidden=(50,),
        *,
        embed=False,
        prior_scale=1.0,
        x_loc=None,
        x_scale=None,
        y_loc=0.0,
        y_scale=1.0,
        min_scale=1e-3,
    ):
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("hidden needs at least one layer")
        self.in_dim, self.hidden_sizes, self.embedding = int(in_dim), hidden, bool(embed)
        self.prior_scale, self.min_scale = float(prior_scale), float(min_scale)
        self.x_loc = (
            np.zeros(in_dim, np.float32) if x_loc is None else np.asarray(x_loc, np.float32)
        )
        self.x_scale = (
            np.ones(in_dim, np.float32) if x_scale is None else np.asarray(x_scale, np.float32)
        )
        self.y_loc, self.y_scale = float(y_loc), float(y_scale)

    def _linear(self, name, h, n_in, n_out):
        import numpyro
        import numpyro.distributions as dist

        s = self.prior_scale / math.sqrt(n_in)
        w = numpyro.sample(f"{name}.weight", dist.Normal(0.0, s).expand([n_out, n_in]).to_event(2))
        b = numpyro.sample(
            f"{name}.bias", dist.Normal(0.0, self.prior_scale).expand([n_out]).to_event(1)
        )
        return h @ w.T + b

    def predict_params(self, x):
        import jax
        import numpyro.distributions as dist

        h = mixable(
            registry.INPUT, (x - self.x_loc) / self.x_scale, dim=-1
        )  # the data plate comes later
        sizes = (self.in_dim,) + self.hidden_sizes
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            out = self._linear(f"layers.{i}", h, a, 2 * b if (self.embedding and i == 0) else b)
            if i == 0 and self.embedding:
                m, s = out[..., :b], out[..., b:]
                out = embed_layer(
                    registry.EMBEDDING,
                    dist.Normal(m, jax.nn.softplus(s) + 1e-3).to_event(1),
                    dim=-1,
                )
            h = jax.nn.relu(out)
            if i == 0:
                h = mixable(registry.HIDDEN, h, dim=-1)
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

    @property
    def use_embed(self) -> bool:  # the former name
        return self.embedding


def make_model(method, x_train, y_train, hidden=(50,), prior_scale=1.0) -> BNNRegressor:
    """The plain model a method trains (the embedding variant for m-probmix), standardised on the training data."""
    x_loc, x_scale, y_loc, y_scale = standardisation(np.asarray(x_train), np.asarray(y_train))
    return BNNRegressor(
        np.asarray(x_train).shape[1],
        hidden,
        embed=registry.METHODS[method].embedding,
        prior_scale=prior_scale,
        x_loc=x_loc,
        x_scale=x_scale,
        y_loc=y_loc,
        y_scale=y_scale,
    )


def wrap(model, method, alpha=1.0, **options):
    """The model as ``method`` trains it (ERM: the model itself)."""
    if method not in BNN_METHODS:
        raise ValueError(f"method must be one of {BNN_METHODS}; got {method!r}")
    return registry.wrap(model, method, backend="numpyro", alpha=alpha, **options)


def _guide_for(model, init_scale):
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.initialization import init_to_sample

    return AutoNormal(model, init_loc_fn=init_to_sample, init_scale=init_scale)


def fit(
    model,
    x,
    y,
    *,
    method="erm",
    alpha=1.0,
    epochs=200,
    lr=0.01,
    batch_size=None,
    init_scale=0.05,
    seed=0,
    progress=True,
    losses=None,
    kl_weight=1.0,
):
    """SVI (AutoNormal, Trace_ELBO, Adam after a global-norm clip) with ``method``'s
    handler, through :func:`pyro_mixup.experiments.train_numpyro.fit_svi`; returns
    ``(guide, params)``. ``batch_size``: None for full batch, else shuffled
    minibatches with the likelihood scaled to the data set. ``losses``: a list
    that gets the ELBO per epoch and training point."""
    import jax
    import jax.numpy as jnp

    from ..train_numpyro import TrainConfig, fit_svi

    if not kl_weight > 0:
        raise ValueError(f"kl_weight must be > 0; got {kl_weight!r}")
    wrap(model, method)  # refuses an unknown method, or m-probmix on the plain model, now
    x = jnp.asarray(np.asarray(x, np.float32))[None]
    y = jnp.asarray(np.asarray(y, np.float32))[None]
    n = x.shape[1]
    cfg = TrainConfig(
        epochs=int(epochs),
        lr=lr,
        batch_size=0 if batch_size is None or batch_size >= n else int(batch_size),
    )
    key = jax.random.split(jax.random.PRNGKey(0 if seed is None else seed))[1][None]
    params, loss = fit_svi(
        lambda: (model, _guide_for(model, init_scale)),
        x,
        y,
        method=method,
        alpha=alpha,
        cfg=cfg,
        keys=key,
        model_kwargs={"kl_weight": kl_weight},
        subsample=True,
        progress=progress,
        desc=f"svi {method}",
    )
    if losses is not None:
        losses.extend(loss[0].tolist())
    return _guide_for(model, init_scale), jax.tree.map(lambda v: v[0], params)


def fit_splits(
    method,
    splits,
    *,
    hidden=(50,),
    prior_scale=1.0,
    alpha=1.0,
    epochs=200,
    lr=0.01,
    init_scale=0.05,
    seeds=None,
    kl_weight=1.0,
    chunk=100,
    progress=True,
):
    """Train one BNN per split at once: full-batch SVI vmapped across splits, one
    compilation for all of them (:func:`pyro_mixup.experiments.train_numpyro.fit_svi`).

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
    import jax
    import jax.numpy as jnp

    from ..train_numpyro import TrainConfig, fit_svi

    if not kl_weight > 0:
        raise ValueError(f"kl_weight must be > 0; got {kl_weight!r}")
    if not splits:
        raise ValueError("fit_splits needs at least one (x_train, y_train) pair")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs!r}")
    shapes = {(np.shape(x), np.shape(y)) for x, y in splits}
    if len(shapes) > 1:
        raise ValueError(
            f"fit_splits needs splits of one shape (group them by shape first); got {sorted(shapes)}"
        )
    seeds = list(range(len(splits))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(splits):
        raise ValueError(f"got {len(seeds)} seeds for {len(splits)} splits")
    models = [make_model(method, x, y, hidden, prior_scale) for x, y in splits]
    # standardise with each model's own constants, so training sees what the model computes
    xs = [(np.asarray(x, np.float64) - m.x_loc) / m.x_scale for m, (x, _) in zip(models, splits)]
    ys = [(np.asarray(y, np.float64) - m.y_loc) / m.y_scale for m, (_, y) in zip(models, splits)]
    xs, ys = jnp.asarray(np.stack(xs), jnp.float32), jnp.asarray(np.stack(ys), jnp.float32)
    unit = BNNRegressor(
        xs.shape[-1], hidden, embed=registry.METHODS[method].embedding, prior_scale=prior_scale
    )
    # the same key path as ``fit``: PRNGKey(seed) -> (_, k_init)
    keys = jnp.stack([jax.random.split(jax.random.PRNGKey(s))[1] for s in seeds])
    params, losses = fit_svi(
        lambda: (unit, _guide_for(unit, init_scale)),
        xs,
        ys,
        method=method,
        alpha=alpha,
        cfg=TrainConfig(epochs=int(epochs), lr=lr, batch_size=0),
        keys=keys,
        model_kwargs={"kl_weight": kl_weight},
        chunk=chunk,
        progress=progress,
        desc=f"svi {method} x{len(splits)} splits",
    )
    return [
        (model, _guide_for(model, init_scale), jax.tree.map(lambda v: v[i], params), losses[i])  # noqa: B023
        for i, model in enumerate(models)
    ]
