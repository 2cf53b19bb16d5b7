"""NumPyro effect handlers for probabilistic mixup, in the style of ``numpyro.handlers``.

- :func:`probmix` -- ProbMix: each observed likelihood becomes the log-linear
  pool of an example's density with its partner's. With ``at=`` -- M-ProbMix:
  the pool happens at an intermediate site (an :func:`~pyro_mixup.numpyro.embed`
  layer or a latent sample site of the model or guide) instead.
- :func:`mixup` -- vanilla mixup (``at=`` the inputs) and manifold mixup
  (``at=`` a hidden layer), on arrays marked with :func:`~pyro_mixup.numpyro.mixable`.

Same options and meaning as the Pyro handlers (:mod:`pyro_mixup.handlers`).
Each is a :class:`numpyro.primitives.Messenger`, usable as ``probmix(fn, ...)``
or as ``with probmix(...):``. One draw of the mixing weight ``lam ~ Beta(alpha,
alpha)`` and of the partners is made per *entry* of the handler, lazily at its
first use, and shared by every site inside: ``probmix(model)`` draws once per
model call; ``with probmix(...): svi.update(...)`` (or ``probmix(svi.update)``)
draws once per update, shared by model and guide.

**Randomness.** Draws come from ``numpyro.prng_key()``, i.e. from the enclosing
:class:`~numpyro.handlers.seed` that SVI, Predictive and MCMC put around the
model, so inside ``jax.jit(svi.update)`` every update gets a fresh ``lam`` and
pairing, reproducible from the SVI state's key. ``rng_key=`` gives the handler
its own key instead (every entry then makes the same draw); ``lam=`` and
``perm=`` fix the draws. With no key at all the handler raises.

**MCMC.** A potential energy must be deterministic. NumPyro builds MCMC's
potential with a fixed default key, so a wrapped model under MCMC uses one
fixed draw for the whole chain: the chain targets the posterior under that one
pooled likelihood. Pass ``lam=`` and ``perm=`` to choose it; mixup is a
training-time regulariser, meant for SVI / MAP.
"""

from __future__ import annotations

import numpy as np

import jax.numpy as jnp
import numpyro
import numpyro.distributions as nd
from numpyro.primitives import _PYRO_STACK, CondIndepStackFrame, Messenger

from .. import _engine
from .._options import PARTICLE_PLATES, check_common
from .._site_rules import SiteRules
from ..pairing import PartnerTable
from ._scoring import (
    PAIR_BACKEND,
    HashStream,
    PairedTarget,
    Partner,
    SoftLabelTarget,
    mix_values,
    partner_of,
    is_real_support,
)
from .backend import BACKEND

__all__ = ["PairingDraws", "ProbMixMessenger", "MixupMessenger", "probmix", "mixup"]


def _float_dtype(like):
    dtype = jnp.result_type(like)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


class PairingDraws:
    """The random part of a handler: the weight ``lam`` and the partner of each
    example, drawn lazily on first use and reused until :meth:`reset`.

    Drawing lazily (rather than at ``__enter__``) keeps the draw inside the
    seeded, traced region, so under ``jax.jit(svi.update)`` every update gets a
    fresh one.
    """

    def __init__(self, alpha, lam, perm, pairing, per_example, rng_key=None):
        self.alpha = float(alpha)
        self.fixed_lam = None if lam is None else jnp.asarray(lam, dtype=jnp.result_type(float))
        self.fixed_perm = None if perm is None else jnp.asarray(perm, dtype=jnp.int32)
        self.pairing = pairing
        self.per_example = per_example
        self.rng_key = rng_key
        _engine.check_explicit_pairing(BACKEND, self.fixed_lam, self.fixed_perm)
        if isinstance(pairing, PartnerTable):
            self._table = (
                jnp.asarray(pairing.candidates, dtype=jnp.int32),
                None if pairing.probs is None else jnp.asarray(np.cumsum(pairing.probs, axis=1), dtype=jnp.result_type(float)),
            )
        self.reset()

    def reset(self):
        self._stream = None
        self._lam = {}
        self._perm = {}

    # --- randomness -----------------------------------------------------------
    @property
    def stream(self):
        """This entry's random stream, from one key taken at first use."""
        if self._stream is None:
            key = self.rng_key
            if key is None:
                key = numpyro.prng_key() if _PYRO_STACK else None
                if key is None:
                    raise ValueError(
                        "mixup handlers draw lam and partners from a PRNG key, and none is "
                        "available here: wrap in numpyro.handlers.seed or pass rng_key= "
                        "(SVI, Predictive and MCMC seed the model for you), or fix the draws "
                        "with lam= and perm="
                    )
            self._stream = HashStream(key)
        return self._stream

    # --- lam ----------------------------------------------------------------
    def lam(self, n, like):
        dtype = _float_dtype(like)
        key = n if self.per_example else None
        lam = self._lam.get(key)
        if lam is None:
            if self.fixed_lam is not None:
                lam = self.fixed_lam
                if lam.ndim == 1 and lam.shape[0] != n:
                    raise ValueError(f"lam has {lam.shape[0]} values but the batch has {n} examples")
            elif self.alpha == 0.0:
                lam = jnp.ones((n,) if self.per_example else (), dtype)
            else:
                lam = self.stream.beta_symmetric(self.alpha, (n,) if self.per_example else (), dtype)
            self._lam[key] = lam
        return lam if lam.dtype == dtype else lam.astype(dtype)

    # --- partners -------------------------------------------------------------
    def perm(self, n):
        perm = self._perm.get(n)
        if perm is None:
            if n < 2:
                raise ValueError(
                    f"cannot pair examples in a batch of size {n}: mixup needs at least 2 "
                    "examples along the plate (use a larger batch, or leave the model unwrapped)"
                )
            if self.fixed_perm is not None:
                if self.fixed_perm.shape[0] != n:
                    raise ValueError(
                        f"perm has length {self.fixed_perm.shape[0]} but the batch has {n} examples"
                    )
                perm = Partner(self.fixed_perm)
            elif isinstance(self.pairing, PartnerTable):
                perm = Partner(self._draw_from_table(n))
            elif self.pairing == "shift":
                perm = Partner(shift=self.stream.randint((), n), n=n)
            else:
                perm = Partner(self.stream.permutation(n))
            self._perm[n] = perm
        return perm

    def _draw_from_table(self, n):
        table = self.pairing
        if table.size != n:
            raise ValueError(
                f"the pairing table covers {table.size} examples but the batch has {n}: a table "
                "pairs a full batch; for minibatches use table.batches(...) and pass perm="
            )
        cand, cum_probs = self._table
        if cum_probs is None:
            cols = self.stream.randint((n,), cand.shape[1])
        else:
            u = self.stream.uniform((n, 1), cum_probs.dtype)
            cols = jnp.minimum((u > cum_probs).sum(-1), cand.shape[1] - 1)
        return cand[jnp.arange(n), cols]


class _PairMessenger(SiteRules, Messenger):
    """Options, draws and site bookkeeping shared by :class:`ProbMixMessenger`
    and :class:`MixupMessenger`."""

    _plate_example = "numpyro.plate('data', n)"
    _backend = BACKEND
    _is_real_support = staticmethod(is_real_support)
    _size = staticmethod(int)

    def __init__(
        self,
        fn=None,
        *,
        alpha=1.0,
        lam=None,
        perm=None,
        at=None,
        sites=None,
        plate=None,
        target=None,
        beta=0.0,
        per_example=False,
        pairing="permutation",
        rng_key=None,
    ):
        check_common(
            alpha=alpha,
            beta=beta,
            target=target,
            sites=sites,
            per_example=per_example,
            pairing=pairing,
            perm_given=perm is not None,
        )
        self.at = at
        self.sites = None if sites is None else frozenset(sites)
        self.plate = plate
        self.target = target
        self.beta = float(beta)
        self.draws = PairingDraws(alpha, lam, perm, pairing, per_example, rng_key)
        self._reset_sites()
        self._targets = {}
        super().__init__(fn)

    def __enter__(self):
        self.draws.reset()
        self._reset_sites()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        out = super().__exit__(exc_type, exc_value, traceback)
        self.draws.reset()  # drop traced values: they must not outlive the trace
        if exc_type is None:
            self._check_exit()
        return out

    def process_message(self, msg):
        handler = getattr(self, "_process_" + msg["type"], None)
        if handler is not None:
            handler(msg)

    # --- where to pair --------------------------------------------------------
    def _frames(self, msg):
        if msg["type"] == "sample":
            stack = msg["cond_indep_stack"]
        else:
            # numpyro.plate fills cond_indep_stack only for its own message types;
            # for embed / mixable read the plates on the handler stack.
            stack = [
                CondIndepStackFrame(h.name, h.dim, h.subsample_size)
                for h in reversed(_PYRO_STACK)
                if isinstance(h, numpyro.plate)
            ]
        return [f for f in stack if f.dim is not None and f.name not in PARTICLE_PLATES]

    def _selected(self, msg):
        if not msg["is_observed"] or (self.sites is not None and msg["name"] not in self.sites):
            return False
        # numpyro.factor sites (a Unit distribution, also added by NumPyro's own
        # reparameterisations) hold no observations to pair, and an observed site
        # masked out entirely (mask=False, e.g. from obs_mask=) no likelihood.
        fn = msg["fn"]
        if msg["infer"].get("is_auxiliary") or isinstance(fn, nd.distribution.Unit):
            return False
        return not (type(fn) is nd.MaskedDistribution and fn._mask is False)

    # --- the observed sites -----------------------------------------------------
    def _score(self, msg, pool):
        """Replace an observed site's likelihood by its mixup target (and pool it first if asked)."""
        fn = msg["fn"]
        frame = self._pair_frame(msg)
        dim = frame.dim
        batch_shape = fn.batch_shape
        n = frame.size
        perm = self.draws.perm(n)
        mask = None
        if type(fn) is nd.MaskedDistribution:
            mask, fn = fn._mask, fn.base_dist
            if mask is True:  # a constant mask is kept as a Python bool
                mask = None
        if mask is not None:
            mask = jnp.broadcast_to(jnp.asarray(mask, dtype=bool), batch_shape)
        family, target = self._target_for(msg["name"], fn)
        lam = self.draws.lam(n, msg["value"])
        if pool:
            fn = _engine.pool_pairs(PAIR_BACKEND, fn, lam, perm, dim, validate=False)
        if target == "expected":
            msg["fn"] = PairedTarget(fn, lam, perm, dim, mask)
        elif family is not None and family.classification:
            msg["fn"] = SoftLabelTarget(fn, lam, perm, dim, self.beta, family.label_kind, mask)
        else:
            axis = dim - len(fn.event_shape)
            stream = self.draws.stream if self.beta > 0 else None
            msg["value"] = mix_values(msg["value"], lam, perm, axis, self.beta, stream)
            msg["fn"] = fn if mask is None else fn.mask(mask & partner_of(mask, perm, dim))


class ProbMixMessenger(_PairMessenger):
    """ProbMix / M-ProbMix; see :func:`probmix`."""

    _at_kinds = "embed or sample site"

    def _process_sample(self, msg):
        self._probmix_sample(msg)

    def _process_embed(self, msg):
        self._probmix_embed(msg)

    def _fuse(self, msg, dist, fallback):
        frame = self._pair_frame(msg, fallback)
        dim = _engine.normalise_dim(fallback if frame is None else frame.dim, dist.batch_shape)
        n = self._example_count(frame, dist.batch_shape[dim], "embedding distribution's batch dim", dim)
        like = BACKEND.first_param(_engine.decompose(BACKEND, dist))
        perm = self.draws.perm(n)
        lam = self.draws.lam(n, like)
        return _engine.pool_pairs(PAIR_BACKEND, dist, lam, perm, dim, validate=False)


class MixupMessenger(_PairMessenger):
    """Vanilla and manifold mixup; see :func:`mixup`."""

    _at_kinds = "mixable"

    def __init__(self, fn=None, *, at, **kwargs):
        if not isinstance(at, str):
            raise ValueError(
                "mixup needs at='<name of a pyro_mixup.numpyro.mixable array>' (the inputs for "
                f"vanilla mixup, a hidden layer for manifold mixup); got {at!r}"
            )
        super().__init__(fn, at=at, **kwargs)

    def _process_sample(self, msg):
        self._seen_sites.add(msg["name"])
        if self._selected(msg):
            self._score(msg, pool=False)

    def _process_mixable(self, msg):
        if msg["name"] != self.at:
            return
        self._seen_at = True
        tensor = msg["args"][0]
        event_dim = msg["kwargs"].get("event_dim")
        if event_dim is None:
            event_dim = 1 if jnp.ndim(tensor) >= 2 else 0
        frame = self._pair_frame(msg, fallback=-1)
        dim = -1 if frame is None else frame.dim
        axis = dim - event_dim
        if -axis > jnp.ndim(tensor):
            raise ValueError(
                f"mixable {self.at!r} of shape {tuple(jnp.shape(tensor))} has no example dim {dim} "
                f"left of its {event_dim} feature dim(s); pass event_dim="
            )
        n = self._example_count(frame, jnp.shape(tensor)[axis], "array's dim", axis)
        perm = self.draws.perm(n)
        lam = self.draws.lam(n, tensor)
        msg["args"] = (mix_values(tensor, lam, perm, axis, 0.0),) + tuple(msg["args"][1:])


def probmix(
    fn=None,
    *,
    alpha=1.0,
    lam=None,
    perm=None,
    at=None,
    sites=None,
    plate=None,
    target=None,
    beta=0.0,
    per_example=False,
    pairing="permutation",
    rng_key=None,
):
    """ProbMix (and, with ``at=``, M-ProbMix) as a NumPyro effect handler.

    Without ``at``: each selected observed site's likelihood ``p(y | x_i)``
    becomes the log-linear pool ``p(y|x_i)^lam p(y|x_j)^(1-lam)`` with the
    example's partner ``j = perm[i]`` along the site's plate, scored on the
    target. With ``at="name"``: the pool happens at an
    :func:`~pyro_mixup.numpyro.embed` layer or latent sample site of that name
    (in the model or the guide) and observed sites are scored on the target
    without pooling again.

    :param fn: the model (or ``svi.update``) to wrap; omit for ``with probmix(...):``.
    :param float alpha: ``lam ~ Beta(alpha, alpha)``; ``alpha=0`` is ERM.
    :param lam: a fixed weight in ``[0, 1]`` (scalar or one per example) instead of a draw.
    :param perm: a fixed permutation of the batch instead of a random one.
    :param str at: fuse at this embed/latent site instead of at the likelihood.
    :param sites: names of the observed sites to treat (default: all).
    :param str plate: the plate over examples (default: the one plate a site is in).
    :param str target: "mixed" (``lam*y_i + (1-lam)*y_j``) or "expected"
        (``lam*log p(y_i) + (1-lam)*log p(y_j)``); default per family: "mixed"
        for continuous families with convex support, "expected" for counts,
        classes and angles. For classification families "mixed" scores the
        log-linear pool of ``beta``-smoothed labels (the paper's choice).
    :param float beta: variance of the Gaussian jitter added to the mixed
        target (regression), or the label-smoothing constant (classification).
    :param bool per_example: one ``lam`` per example instead of one per batch.
    :param pairing: "permutation" (uniform random permutation, default),
        "shift" (a random cyclic shift: the same pair marginals, cheaper), or a
        :class:`~pyro_mixup.pairing.PartnerTable` (LocK, C-Mixup).
    :param rng_key: a PRNG key for the draws instead of ``numpyro.prng_key()``;
        every entry of the handler then makes the same draw.

    **Example:**

    .. doctest::

       >>> import jax.numpy as jnp
       >>> import numpyro, numpyro.distributions as dist
       >>> from numpyro.handlers import trace
       >>> def model(x, y=None):
       ...     with numpyro.plate("data", len(x)):
       ...         return numpyro.sample("y", dist.Normal(x, 1.0), obs=y)
       >>> x = y = jnp.array([1.0, 2.0, 3.0])
       >>> tr = trace(probmix(model, lam=0.5, perm=[2, 0, 1])).get_trace(x, y)
       >>> tr["y"]["fn"].loc      # each x_i pooled with its partner
       Array([2. , 1.5, 2.5], dtype=float32)
       >>> tr["y"]["value"]       # scored at the mixed target
       Array([2. , 1.5, 2.5], dtype=float32)

    Under SVI a fresh ``lam`` and pairing are drawn every update from the SVI
    key, inside ``jax.jit``:

    .. doctest::

       >>> import jax
       >>> from numpyro.infer import SVI, Trace_ELBO
       >>> def model(x, y=None):
       ...     w = numpyro.param("w", 0.0)
       ...     with numpyro.plate("data", len(x)):
       ...         numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)
       >>> svi = SVI(probmix(model, alpha=0.4), lambda x, y: None,
       ...           numpyro.optim.Adam(0.1), Trace_ELBO())
       >>> x = jnp.linspace(-1, 1, 32)
       >>> state = svi.init(jax.random.key(0), x, 2 * x)
       >>> update = jax.jit(svi.update)
       >>> for _ in range(200):
       ...     state, loss = update(state, x, 2 * x)
       >>> round(float(svi.get_params(state)["w"]), 1)
       2.0
    """
    msngr = ProbMixMessenger(
        alpha=alpha,
        lam=lam,
        perm=perm,
        at=at,
        sites=sites,
        plate=plate,
        target=target,
        beta=beta,
        per_example=per_example,
        pairing=pairing,
        rng_key=rng_key,
    )
    return msngr(fn) if fn is not None else msngr


def mixup(
    fn=None,
    *,
    at,
    alpha=1.0,
    lam=None,
    perm=None,
    sites=None,
    plate=None,
    target=None,
    beta=0.0,
    per_example=False,
    pairing="permutation",
    rng_key=None,
):
    """Vanilla mixup (``at=`` the inputs) or manifold mixup (``at=`` a hidden layer).

    Replaces the :func:`~pyro_mixup.numpyro.mixable` array named ``at`` by
    ``lam * t_i + (1 - lam) * t_perm[i]`` and scores observed sites on the
    mixed target (for class labels: ``lam*log p(y_i) + (1-lam)*log p(y_j)``,
    the usual mixup cross-entropy). Options as in :func:`probmix`.

    **Example:**

    .. doctest::

       >>> import jax.numpy as jnp
       >>> import numpyro, numpyro.distributions as dist
       >>> from numpyro.handlers import trace
       >>> from pyro_mixup.numpyro import mixable
       >>> def model(x, y=None):
       ...     x = mixable("x", x)
       ...     with numpyro.plate("data", len(x)):
       ...         return numpyro.sample("y", dist.Normal(2 * x.squeeze(-1), 1.0), obs=y)
       >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([0.0, 2.0])
       >>> tr = trace(mixup(model, at="x", lam=0.25, perm=[1, 0])).get_trace(x, y)
       >>> tr["y"]["fn"].loc, tr["y"]["value"]
       (Array([1.5, 0.5], dtype=float32), Array([1.5, 0.5], dtype=float32))
    """
    msngr = MixupMessenger(
        at=at,
        alpha=alpha,
        lam=lam,
        perm=perm,
        sites=sites,
        plate=plate,
        target=target,
        beta=beta,
        per_example=per_example,
        pairing=pairing,
        rng_key=rng_key,
    )
    return msngr(fn) if fn is not None else msngr
