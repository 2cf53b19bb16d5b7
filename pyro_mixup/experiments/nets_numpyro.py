"""The experiments' network for NumPyro, written once: a heteroscedastic Gaussian MLP.

``GaussianMLP(d_in, hidden, embedding)`` is a NumPyro model
``model(x, y=None)`` whose weights are ``numpyro.param`` sites (maximum
likelihood: train it by SVI with an empty guide, as
:mod:`pyro_mixup.experiments.train_numpyro` does). Its inputs are
``mixable("x")``; its first hidden layer is ``mixable("h")`` or, with
``embedding=True``, the stochastic layer ``embed("z")``:
``z ~ N(m(x), diag s(x)^2)``, ``m(x)`` the ReLU layer and
``s(x) = softplus(a * m(x) + c) + 1e-3`` a variance head sharing the layer's
weights (METHOD.md section 3); with ``variance_width=k`` (M-ProbMix*) the
variance head is a separate network instead,
``s(x) = softplus(V2 relu(V1 x + c1) + c2) + 1e-3`` with a hidden layer of width
``k``. :meth:`GaussianMLP.predict` gives the predictive mean and std of a set of
weights, the embedding at its mean.

>>> import jax, numpy as np
>>> net = GaussianMLP(3, (8,))
>>> params = net.init(jax.random.PRNGKey(0))
>>> mu, sigma = net.predict(params, np.zeros((5, 3), np.float32))
>>> mu.shape, bool((sigma > 0).all())
((5,), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as nd

from ..numpyro import embed, mixable
from .methods import EMBEDDING, HIDDEN, INPUT

#: Floor of the predictive std and of the embedding's std (standardised units).
MIN_SCALE = 1e-4
EMBED_MIN_SCALE = 1e-3
#: The embedding's std starts at softplus(-3) ~ 0.05: small against the ReLU
#: activations (~0.5), so training starts near the deterministic network.
EMBED_INIT_C = -3.0


class GaussianMLP:
    """``d_in -> hidden[0] -> ... -> 2`` (mean, raw scale) with ReLU."""

    def __init__(
        self,
        d_in: int,
        hidden: Sequence[int] = (128, 32),
        embedding: bool = False,
        variance_width: int = 0,
    ):
        self.sizes = [int(d_in), *(int(h) for h in hidden), 2]
        if len(self.sizes) < 3 or min(self.sizes) < 1:
            raise ValueError(
                f"GaussianMLP needs at least one hidden layer of positive width; got {hidden!r}"
            )
        self.embedding = bool(embedding)
        self.variance_width = int(variance_width)
        if self.variance_width and not self.embedding:
            raise ValueError(
                "variance_width is the width of the embedding's variance network: it needs embedding=True"
            )

    # hashable by architecture: the trainers cache compiled functions per network
    def _key(self):
        return (tuple(self.sizes), self.embedding, self.variance_width)

    def __eq__(self, other):
        return isinstance(other, GaussianMLP) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    # -- parameters -------------------------------------------------------
    def shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            out[f"w{i}"], out[f"b{i}"] = (a, b), (b,)
        if self.embedding and self.variance_width:
            d, k, z = self.sizes[0], self.variance_width, self.sizes[1]
            out["var_w0"], out["var_b0"], out["var_w1"], out["var_b1"] = (d, k), (k,), (k, z), (z,)
        elif self.embedding:
            out["emb_a"] = out["emb_c"] = (self.sizes[1],)
        return out

    def init_one(self, name: str, key):
        """torch.nn.Linear's initialisation (uniform, bound 1/sqrt(fan_in)); the variance head at (0, -3)."""
        shape = self.shapes()[name]
        if name == "emb_a":
            return jnp.zeros(shape)
        if name in ("emb_c", "var_b1"):
            return jnp.full(shape, EMBED_INIT_C)
        if name == "var_w1":  # the variance starts flat at softplus(-3), as the shared head's
            return jnp.zeros(shape)
        if name.startswith("var_"):
            bound = 1.0 / math.sqrt(shape[0] if name == "var_w0" else self.sizes[0])
            return jax.random.uniform(key, shape, minval=-bound, maxval=bound)
        bound = 1.0 / math.sqrt(self.sizes[int(name[1:])])
        return jax.random.uniform(key, shape, minval=-bound, maxval=bound)

    def init(self, key) -> dict[str, jnp.ndarray]:
        names = list(self.shapes())
        return {n: self.init_one(n, k) for n, k in zip(names, jax.random.split(key, len(names)))}

    # -- the network ------------------------------------------------------
    def first(self, params, x):
        return jax.nn.relu(x @ params["w0"] + params["b0"])

    def embedding_dist(self, params, h, x=None):
        """``q(z | x) = N(h, s^2)``: ``s`` from the shared head on ``h``, or from the
        separate variance network on ``x`` (``variance_width > 0``)."""
        if self.variance_width:
            v = (
                jax.nn.relu(x @ params["var_w0"] + params["var_b0"]) @ params["var_w1"]
                + params["var_b1"]
            )
        else:
            v = params["emb_a"] * h + params["emb_c"]
        return nd.Normal(h, jax.nn.softplus(v) + EMBED_MIN_SCALE).to_event(1)

    def rest(self, params, h):
        n_layers = len(self.sizes) - 1
        for i in range(1, n_layers):
            h = h @ params[f"w{i}"] + params[f"b{i}"]
            if i < n_layers - 1:
                h = jax.nn.relu(h)
        return h[..., 0], jax.nn.softplus(h[..., 1]) + MIN_SCALE

    def predict(self, params, x):
        """Predictive mean and std; the embedding propagates its mean."""
        return self.rest(params, self.first(params, x))

    def __call__(self, x, y=None):
        params = {
            n: numpyro.param(n, lambda key, n=n: self.init_one(n, key)) for n in self.shapes()
        }
        x = mixable(INPUT, x, dim=-1)  # examples along the rows; the plate comes later
        h = self.first(params, x)
        if self.embedding:
            h = embed(EMBEDDING, self.embedding_dist(params, h, x), dim=-1)
        else:
            h = mixable(HIDDEN, h, dim=-1)
        mu, sigma = self.rest(params, h)
        with numpyro.plate("data", x.shape[0]):
            return numpyro.sample("y", nd.Normal(mu, sigma), obs=y)
