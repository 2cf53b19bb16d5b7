"""Pyro and NumPyro handlers agree: with the same network weights, data, lam and
permutation, the wrapped models' log densities are equal (float32 tolerance)
for ProbMix, M-ProbMix (embed), Mix and M-Mix, both targets, regression and
classification."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from numpyro.infer.util import log_density
from numpyro.primitives import Messenger as NMessenger
from pyro.poutine.messenger import Messenger as PMessenger

import pyro_mixup
import pyro_mixup.handlers as ph
import pyro_mixup.numpyro as pmn
import pyro_mixup.numpyro.handlers as nh

N, D, H, C = 8, 3, 5, 3
RNG = np.random.default_rng(11)
W = {
    "w1": RNG.normal(size=(D, H)) * 0.7,
    "b1": RNG.normal(size=H) * 0.1,
    "v1": RNG.normal(size=(D, H)) * 0.3,
    "w2": RNG.normal(size=(H, 2)) * 0.7,
    "b2": RNG.normal(size=2) * 0.1,
    "wc": RNG.normal(size=(H, C)),
}
W = {k: v.astype(np.float32) for k, v in W.items()}
X = RNG.normal(size=(N, D)).astype(np.float32)
Y = RNG.normal(size=N).astype(np.float32)
LABELS = RNG.integers(0, C, size=N)
EPS = RNG.normal(size=(N, H)).astype(np.float32)  # the embedding noise, shared
LAM = 0.35
PERM = np.array([2, 5, 0, 7, 1, 3, 6, 4])


def _softplus(ops, a):
    return ops.log1p(ops.exp(a))


def make_model(backend, head, with_embed):
    """The same network in both backends: x -> mixable x -> tanh layer (or a
    Gaussian embedding) -> mixable h -> Normal(mean, softplus) or Categorical."""
    if backend == "pyro":
        T = {k: torch.tensor(v) for k, v in W.items()}
        plate, sample, dist, ops = pyro.plate, pyro.sample, pdist, torch
        embed, mixable = pyro_mixup.embed, pyro_mixup.mixable
    else:
        T = {k: jnp.asarray(v) for k, v in W.items()}
        plate, sample, dist, ops = numpyro.plate, numpyro.sample, ndist, jnp
        embed, mixable = pmn.embed, pmn.mixable

    def model(x, y=None):
        with plate("data", N):
            x = mixable("x", x)
            pre = x @ T["w1"] + T["b1"]
            if with_embed:
                scale = _softplus(ops, x @ T["v1"]) + 0.1
                h = embed("z", dist.Normal(ops.tanh(pre), scale).to_event(1))
            else:
                h = ops.tanh(pre)
            h = mixable("h", h)
            if head == "normal":
                out = h @ T["w2"] + T["b2"]
                return sample("y", dist.Normal(out[:, 0], _softplus(ops, out[:, 1]) + 0.05), obs=y)
            return sample("y", dist.Categorical(logits=h @ T["wc"]), obs=y)

    return model


class _PyroFixNoise(PMessenger):
    """Outermost: the embedding draw becomes loc + scale * EPS of the (fused) distribution."""

    def _pyro_embed(self, msg):
        d = msg["args"][0].base_dist
        msg["value"] = d.loc + d.scale * torch.tensor(EPS)


class _NumPyroFixNoise(NMessenger):
    def process_message(self, msg):
        if msg["type"] == "embed":
            d = msg["args"][0].base_dist
            msg["value"] = d.loc + d.scale * jnp.asarray(EPS)


def pyro_loss(handler, head, with_embed, **kw):
    model = make_model("pyro", head, with_embed)
    wrapped = (
        model if handler is None else getattr(ph, handler)(model, lam=LAM, perm=PERM.tolist(), **kw)
    )
    y = torch.tensor(Y) if head == "normal" else torch.tensor(LABELS)
    with _PyroFixNoise():
        tr = pyro.poutine.trace(wrapped).get_trace(torch.tensor(X), y)
    return float(tr.log_prob_sum())


def numpyro_loss(handler, head, with_embed, jit=False, **kw):
    model = make_model("numpyro", head, with_embed)
    wrapped = (
        model if handler is None else getattr(nh, handler)(model, lam=LAM, perm=PERM.tolist(), **kw)
    )
    y = jnp.asarray(Y) if head == "normal" else jnp.asarray(LABELS)

    def f(x, y):
        with _NumPyroFixNoise():
            return log_density(numpyro.handlers.seed(wrapped, 0), (x, y), {}, {})[0]

    return float((jax.jit(f) if jit else f)(jnp.asarray(X), y))


CASES = [
    # (name, handler, head, with_embed, options)
    ("ERM", None, "normal", False, {}),
    ("ProbMix mixed", "probmix", "normal", False, {"target": "mixed"}),
    ("ProbMix expected", "probmix", "normal", False, {"target": "expected"}),
    ("M-ProbMix embed mixed", "probmix", "normal", True, {"at": "z", "target": "mixed"}),
    ("M-ProbMix embed expected", "probmix", "normal", True, {"at": "z", "target": "expected"}),
    ("Mix mixed", "mixup", "normal", False, {"at": "x", "target": "mixed"}),
    ("Mix expected", "mixup", "normal", False, {"at": "x", "target": "expected"}),
    ("M-Mix mixed", "mixup", "normal", False, {"at": "h", "target": "mixed"}),
    ("M-Mix expected", "mixup", "normal", False, {"at": "h", "target": "expected"}),
    ("ProbMix classes expected", "probmix", "categorical", False, {}),
    (
        "ProbMix classes soft labels",
        "probmix",
        "categorical",
        False,
        {"target": "mixed", "beta": 0.01},
    ),
    ("M-ProbMix classes", "probmix", "categorical", True, {"at": "z"}),
    ("Mix classes", "mixup", "categorical", False, {"at": "x"}),
    (
        "M-Mix classes soft labels",
        "mixup",
        "categorical",
        False,
        {"at": "h", "target": "mixed", "beta": 0.05},
    ),
]


@pytest.mark.parametrize("name,handler,head,with_embed,kw", CASES, ids=[c[0] for c in CASES])
def test_pyro_and_numpyro_give_the_same_loss(name, handler, head, with_embed, kw):
    p = pyro_loss(handler, head, with_embed, **kw)
    n = numpyro_loss(handler, head, with_embed, **kw)
    assert np.isfinite(p)
    np.testing.assert_allclose(n, p, rtol=2e-5, atol=1e-4, err_msg=name)
    if handler is not None:
        # the handler changed the loss (so agreement is not vacuous)
        assert abs(p - pyro_loss(None, head, with_embed)) > 1e-3


def test_agreement_holds_under_jit():
    kw = {"at": "z", "target": "mixed"}
    np.testing.assert_allclose(
        numpyro_loss("probmix", "normal", True, jit=True, **kw),
        pyro_loss("probmix", "normal", True, **kw),
        rtol=2e-5,
    )


def test_per_example_lam_agrees():
    lam = np.linspace(0.05, 0.95, N).astype(np.float32)
    tm = make_model("pyro", "normal", False)
    jm = make_model("numpyro", "normal", False)
    p = (
        pyro.poutine.trace(ph.probmix(tm, lam=torch.tensor(lam), perm=PERM.tolist()))
        .get_trace(torch.tensor(X), torch.tensor(Y))
        .log_prob_sum()
    )
    n = log_density(
        nh.probmix(jm, lam=jnp.asarray(lam), perm=PERM.tolist()),
        (jnp.asarray(X), jnp.asarray(Y)),
        {},
        {},
    )[0]
    np.testing.assert_allclose(float(n), float(p), rtol=2e-5)
