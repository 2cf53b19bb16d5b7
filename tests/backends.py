"""One interface to Pyro and NumPyro for tests written once (the ``backend``
fixture): models call ``B.sample``, ``B.plate``, ``B.dist``, ``B.ops`` ...;
the harness runs them with the library's own trace, SVI, Predictive and MCMC.

Not pyro-api: its ``pyro_backend`` context installs a global seed handler for
the whole test, which would hide the handlers' "no PRNG key" refusal, and its
NumPyro SVI compiles a new step at every call.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def site(value, fn, log_prob, scale=1.0):
    return SimpleNamespace(value=value, fn=fn, log_prob=log_prob, scale=scale)


class PyroHarness:
    name = "pyro"

    def __init__(self):
        import pyro
        import pyro.distributions as dist
        import pyro.infer
        import pyro.infer.autoguide
        import pyro.poutine.util
        import torch
        import torch.nn.functional as F
        from pyro import poutine

        import pyro_mixup
        from pyro_mixup import handlers
        from pyro_mixup.pyro.backend import BACKEND

        self.pyro, self.torch, self.poutine = pyro, torch, poutine
        self.dist, self.ops, self.softplus = dist, torch, F.softplus
        self.plate, self.sample, self.deterministic, self.factor = (
            pyro.plate,
            pyro.sample,
            pyro.deterministic,
            pyro.factor,
        )
        self.probmix, self.mixup = handlers.probmix, handlers.mixup
        self.embed, self.mixable = pyro_mixup.embed, pyro_mixup.mixable
        self.log_linear_pool, self.pool_pairs = pyro_mixup.log_linear_pool, pyro_mixup.pool_pairs
        self.mask, self.condition = poutine.mask, poutine.condition
        self.backend = BACKEND
        self.infer, self.autoguides = pyro.infer, pyro.infer.autoguide

    def reset(self, seed=0):
        self.pyro.clear_param_store()
        self.pyro.set_rng_seed(seed)

    # --- arrays -----------------------------------------------------------------
    def array(self, x, dtype=None):
        x = np.asarray(x)
        if dtype is None:
            dtype = np.float32 if np.issubdtype(x.dtype, np.floating) else x.dtype
        return self.torch.as_tensor(x.astype(dtype))

    def np(self, x):
        if isinstance(x, self.torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def param(self, name, init):
        init = np.asarray(init, dtype=np.float32)
        return self.pyro.param(name, lambda: self.torch.tensor(init))

    # --- running models ------------------------------------------------------------
    def trace(self, fn, *args, seed=0, **kwargs):
        self.pyro.set_rng_seed(seed)
        tr = self.poutine.util.prune_subsample_sites(
            self.poutine.trace(fn).get_trace(*args, **kwargs)
        )
        tr.compute_log_prob()
        return {
            n: site(s["value"], s["fn"], s["log_prob"], s["scale"])
            for n, s in tr.nodes.items()
            if s["type"] == "sample"
        }

    def log_density(self, fn, *args, seed=0, **kwargs):
        self.pyro.set_rng_seed(seed)
        return float(self.poutine.trace(fn).get_trace(*args, **kwargs).log_prob_sum())

    def elbo(self, kind="trace", **kw):
        return {"trace": self.infer.Trace_ELBO, "meanfield": self.infer.TraceMeanField_ELBO}[kind](
            **kw
        )

    def svi(self, model, guide, lr=0.02, elbo=None, jit=False, around=None):
        """An SVI runner whose ``step(*args)`` returns the loss; ``around``: a
        handler entered around each step (``with around: svi.step(...)``)."""
        elbo = elbo or (self.infer.JitTrace_ELBO() if jit else self.infer.Trace_ELBO())
        svi = self.infer.SVI(
            model, guide or (lambda *a, **k: None), self.pyro.optim.Adam({"lr": lr}), elbo
        )

        def step(*args, **kwargs):
            if around is None:
                return float(svi.step(*args, **kwargs))
            with around:
                return float(svi.step(*args, **kwargs))

        return SimpleNamespace(step=step, svi=svi)

    def enum_loss(self, model, *args, **kwargs):
        """TraceEnum_ELBO's loss of a model with enumerated sites and no guide."""
        return float(
            self.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(
                model, lambda *a, **k: None, *args, **kwargs
            )
        )

    def autoguide(self, kind, model):
        return getattr(self.autoguides, kind)(model)

    def predictive(self, model, samples, *args, num_samples=None, seed=0):
        self.pyro.set_rng_seed(seed)
        out = self.infer.Predictive(model, posterior_samples=samples, num_samples=num_samples)(
            *args
        )
        return {k: self.np(v) for k, v in out.items()}

    def mcmc(self, model, *args, num_samples=20, warmup=10):
        mcmc = self.infer.MCMC(
            self.infer.NUTS(model),
            num_samples=num_samples,
            warmup_steps=warmup,
            disable_progbar=True,
        )
        mcmc.run(*args)
        return {k: self.np(v) for k, v in mcmc.get_samples().items()}

    def recorder(self, fn, store, tag, name):
        """``fn`` run under a messenger that records the ``fn`` (the distribution,
        after the handlers below it) of site ``name`` in ``store[tag]``."""
        Messenger = self.poutine.messenger.Messenger

        class Record(Messenger):
            def _pyro_post_sample(self, msg):
                if msg["name"] == name:
                    store.setdefault(tag, []).append(msg["fn"])

        return Record()(fn)

    def fixed_embedding_noise(self, fn, eps):
        """``fn`` with every embedding draw made ``loc + scale * eps`` of the
        (fused) embedding distribution (an outer messenger: it sees what the
        handlers below it made)."""
        eps = self.array(eps)

        class FixNoise(self.poutine.messenger.Messenger):
            def _pyro_embed(self, msg):
                d = msg["args"][0].base_dist
                msg["value"] = d.loc + d.scale * eps

        return FixNoise()(fn)


class NumPyroHarness:
    name = "numpyro"

    def __init__(self):
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        import numpyro.infer
        import numpyro.infer.autoguide
        from numpyro import handlers

        import pyro_mixup.numpyro as pmn
        from pyro_mixup.numpyro.backend import BACKEND

        self.jax, self.jnp, self.numpyro, self.handlers = jax, jnp, numpyro, handlers
        self.dist, self.ops, self.softplus = dist, jnp, jax.nn.softplus
        self.plate, self.sample, self.deterministic, self.factor = (
            numpyro.plate,
            numpyro.sample,
            numpyro.deterministic,
            numpyro.factor,
        )
        self.probmix, self.mixup = pmn.handlers.probmix, pmn.handlers.mixup
        self.embed, self.mixable = pmn.embed, pmn.mixable
        self.log_linear_pool, self.pool_pairs = pmn.log_linear_pool, pmn.pool_pairs
        self.mask, self.condition = handlers.mask, handlers.condition
        self.backend = BACKEND
        self.infer, self.autoguides = numpyro.infer, numpyro.infer.autoguide

    def reset(self, seed=0):
        pass

    def array(self, x, dtype=None):
        x = np.asarray(x)
        if dtype is None:
            dtype = np.float32 if np.issubdtype(x.dtype, np.floating) else np.int32
        return self.jnp.asarray(x.astype(dtype))

    def np(self, x):
        return np.asarray(x)

    def param(self, name, init):
        return self.numpyro.param(name, self.jnp.asarray(np.asarray(init, dtype=np.float32)))

    def trace(self, fn, *args, seed=0, **kwargs):
        tr = self.handlers.trace(self.handlers.seed(fn, seed)).get_trace(*args, **kwargs)
        return {
            n: site(
                s["value"],
                s["fn"],
                s["fn"].log_prob(s["value"]),
                s["scale"] if s["scale"] is not None else 1.0,
            )
            for n, s in tr.items()
            if s["type"] == "sample"
        }

    def log_density(self, fn, *args, seed=0, **kwargs):
        from numpyro.infer.util import log_density

        return float(log_density(self.handlers.seed(fn, seed), args, kwargs, {})[0])

    def elbo(self, kind="trace", **kw):
        return {"trace": self.infer.Trace_ELBO, "meanfield": self.infer.TraceMeanField_ELBO}[kind](
            **kw
        )

    def svi(self, model, guide, lr=0.02, elbo=None, jit=True, around=None):
        """An SVI runner whose ``step(*args)`` returns the loss (a jitted update);
        ``around``: a handler entered around each update, inside the compiled step."""
        svi = self.infer.SVI(
            model,
            guide or (lambda *a, **k: None),
            self.numpyro.optim.Adam(lr),
            elbo or self.infer.Trace_ELBO(),
        )

        def update(state, *args, **kwargs):
            if around is None:
                return svi.update(state, *args, **kwargs)
            with around:
                return svi.update(state, *args, **kwargs)

        update = self.jax.jit(update) if jit else update
        box = {}

        def step(*args, **kwargs):
            if "state" not in box:
                box["state"] = svi.init(self.jax.random.key(0), *args, **kwargs)
            box["state"], loss = update(box["state"], *args, **kwargs)
            return float(loss)

        return SimpleNamespace(step=step, svi=svi, box=box)

    def enum_loss(self, model, *args, **kwargs):
        """TraceEnum_ELBO's loss of a model with enumerated sites and no guide (needs funsor)."""
        from numpyro.infer import TraceEnum_ELBO

        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        return float(
            elbo.loss(self.jax.random.key(0), {}, model, lambda *a, **k: None, *args, **kwargs)
        )

    def autoguide(self, kind, model):
        return getattr(self.autoguides, kind)(model)

    def predictive(self, model, samples, *args, num_samples=None, seed=0):
        out = self.infer.Predictive(model, posterior_samples=samples, num_samples=num_samples)(
            self.jax.random.key(seed), *args
        )
        return {k: np.asarray(v) for k, v in out.items()}

    def mcmc(self, model, *args, num_samples=20, warmup=10):
        mcmc = self.infer.MCMC(
            self.infer.NUTS(model), num_warmup=warmup, num_samples=num_samples, progress_bar=False
        )
        mcmc.run(self.jax.random.key(0), *args)
        return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}

    def recorder(self, fn, store, tag, name):
        """``fn`` run under a messenger that records the ``fn`` of site ``name`` in
        ``store[tag]`` (its ``loc``, through a debug callback: works under jit)."""
        jax, Messenger = self.jax, self.numpyro.primitives.Messenger

        class Record(Messenger):
            def postprocess_message(self, msg):
                if msg["type"] == "sample" and msg["name"] == name:
                    jax.debug.callback(
                        lambda v: store.setdefault(tag, []).append(
                            SimpleNamespace(loc=np.asarray(v))
                        ),
                        msg["fn"].loc,
                    )

        return Record(fn)

    def fixed_embedding_noise(self, fn, eps):
        eps = self.array(eps)

        class FixNoise(self.numpyro.primitives.Messenger):
            def process_message(self, msg):
                if msg["type"] == "embed":
                    d = msg["args"][0].base_dist
                    msg["value"] = d.loc + d.scale * eps

        return FixNoise(fn)


HARNESSES = {"pyro": PyroHarness, "numpyro": NumPyroHarness}
_CACHE = {}


def harness(name):
    if name not in _CACHE:
        _CACHE[name] = HARNESSES[name]()
    return _CACHE[name]
