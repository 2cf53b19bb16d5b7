"""Pyro effect handlers for probabilistic mixup, in the style of ``pyro.poutine``.

- :func:`probmix` -- ProbMix: each observed likelihood becomes the log-linear
  pool of an example's density with its partner's. With ``at=`` -- M-ProbMix:
  the pool happens at an intermediate site (an :func:`~pyro_mixup.embed` layer
  or a latent sample site of the model or guide) instead.
- :func:`mixup` -- vanilla mixup (``at=`` the inputs) and manifold mixup
  (``at=`` a hidden layer), on tensors marked with :func:`~pyro_mixup.mixable`.

Each is a :class:`~pyro.poutine.messenger.Messenger`, usable as ``probmix(fn, ...)``
or as ``with probmix(...):``. One draw of the mixing weight ``lam ~ Beta(alpha,
alpha)`` and of the partners is made per *entry* of the handler and shared by
every site inside: ``probmix(model)`` draws once per model call, and ``with
probmix(): svi.step(...)`` (or ``probmix(svi.step)``) draws once per step,
shared by model and guide. ERM is the unwrapped model.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.messenger import Messenger

from . import _engine
from ._options import PARTICLE_PLATES, check_common
from ._site_rules import SiteRules
from ._torch_scoring import PairedTarget, SoftLabelTarget, is_real_support, mix_values, partner_of
from .pairing import PartnerTable
from .torch_backend import BACKEND


class PairingDraws:
    """The random part of a handler: the weight ``lam`` and the partner of each
    example, drawn lazily on first use and reused until :meth:`reset`.

    Drawing lazily (rather than at ``__enter__``) keeps the draw inside the
    traced region under ``JitTrace_ELBO``, so every step gets a fresh one.
    """

    def __init__(self, alpha, lam, perm, pairing, per_example):
        self.alpha = float(alpha)
        self.fixed_lam = None if lam is None else torch.as_tensor(lam, dtype=torch.get_default_dtype())
        self.fixed_perm = None if perm is None else torch.as_tensor(perm, dtype=torch.long)
        self.pairing = pairing
        self.per_example = per_example
        _engine.check_explicit_pairing(BACKEND, self.fixed_lam, self.fixed_perm)
        self.reset()

    def reset(self):
        self._lam = {}
        self._perm = {}

    @staticmethod
    def _size(n):
        """Sizes are tensors under torch.jit tracing (a plate of ``len(x)``); the
        pairing is drawn per size, so a constant size is what we want."""
        if isinstance(n, int):
            return n
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return int(n)

    def lam(self, n, like):
        """The mixing weight: a Python float (one per batch, eager mode), or a
        tensor (one per example, or under torch.jit tracing)."""
        n = self._size(n)
        key = n if self.per_example else None
        lam = self._lam.get(key)
        if lam is None:
            if self.fixed_lam is not None:
                lam = self.fixed_lam
                if lam.dim() == 1 and lam.shape[0] != n:
                    raise ValueError(f"lam has {lam.shape[0]} values but the batch has {n} examples")
                if lam.dim() == 0 and not torch.jit.is_tracing():
                    lam = float(lam)
            else:
                lam = self._draw_lam(n if self.per_example else None)
            self._lam[key] = lam
        if isinstance(lam, float):
            return lam
        # class labels and counts can be integer tensors: weights stay floating point
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return lam if lam.dtype == dtype and lam.device == like.device else lam.to(dtype=dtype, device=like.device)

    def _draw_lam(self, n):
        if self.alpha == 0.0:
            # Beta(0, 0) limit: all weight on one member, i.e. ERM
            return 1.0 if n is None else torch.ones(n)
        # Beta(a, a) = G1 / (G1 + G2), with log G(a) = log G(a + 1) + log(U) / a:
        # stable for small a, where G(a) itself underflows to 0.
        a = self.alpha
        if torch.jit.is_tracing():
            # torch ops, so that torch.jit records the draw and replays it fresh each step
            shape = (2,) if n is None else (2, n)
            gamma = torch._standard_gamma(torch.full(shape, a + 1.0))
            u = torch.rand(shape).clamp_min_(torch.finfo(torch.float32).tiny)
            log_g = gamma.log() + u.log() / a
            return torch.sigmoid(log_g[0] - log_g[1])
        # Eagerly, Python's and numpy's global RNGs (both seeded by
        # pyro.set_rng_seed) draw a few numbers far cheaper than torch ops.
        if n is None:
            log_g1 = math.log(random.gammavariate(a + 1.0, 1.0)) + math.log(1.0 - random.random()) / a
            log_g2 = math.log(random.gammavariate(a + 1.0, 1.0)) + math.log(1.0 - random.random()) / a
            return 0.5 * (1.0 + math.tanh(0.5 * (log_g1 - log_g2)))  # sigmoid without overflow
        log_g = np.log(np.random.standard_gamma(a + 1.0, (2, n))) + np.log1p(-np.random.random_sample((2, n))) / a
        return torch.as_tensor(0.5 * (1.0 + np.tanh(0.5 * (log_g[0] - log_g[1]))), dtype=torch.get_default_dtype())

    def perm(self, n, device):
        n = self._size(n)
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
                perm = self.fixed_perm
            elif isinstance(self.pairing, PartnerTable):
                perm = self._draw_from_table(n)
            elif self.pairing == "shift":
                perm = (torch.arange(n) + torch.randint(0, n, ())) % n
            else:
                perm = torch.randperm(n)
            self._perm[n] = perm
        return perm if perm.device == device else perm.to(device)

    def _draw_from_table(self, n):
        table = self.pairing
        if table.size != n:
            raise ValueError(
                f"the pairing table covers {table.size} examples but the batch has {n}: a table "
                "pairs a full batch; for minibatches use table.batches(...) and pass perm="
            )
        if not hasattr(table, "_torch"):
            cand = torch.as_tensor(table.candidates)
            probs = None if table.probs is None else torch.as_tensor(table.probs)
            table._torch = (cand, probs)
        cand, probs = table._torch
        if probs is None:
            cols = torch.randint(0, cand.shape[1], (n,))
        else:
            cols = torch.multinomial(probs, 1).squeeze(-1)
        return cand[torch.arange(n), cols]


class _PairMessenger(SiteRules, Messenger):
    """Options, draws and site bookkeeping shared by :class:`ProbMixMessenger`
    and :class:`MixupMessenger`."""

    _plate_example = "pyro.plate('data', n)"
    _backend = BACKEND
    _is_real_support = staticmethod(is_real_support)
    _size = staticmethod(PairingDraws._size)

    def __init__(
        self,
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
    ):
        super().__init__()
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
        self.draws = PairingDraws(alpha, lam, perm, pairing, per_example)
        self._reset_sites()
        self._targets = {}

    def __enter__(self):
        self.draws.reset()
        self._reset_sites()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        out = super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None:
            self._check_exit()
        return out

    # --- where to pair --------------------------------------------------------
    def _frames(self, msg):
        return [
            f
            for f in msg["cond_indep_stack"]
            if f.vectorized and f.dim is not None and f.name not in PARTICLE_PLATES
        ]

    def _selected(self, msg):
        if not msg["is_observed"] or (self.sites is not None and msg["name"] not in self.sites):
            return False
        # pyro.deterministic records an observed Delta, pyro.factor an auxiliary
        # observed Unit, and obs_mask= an observed site masked out entirely: none
        # carries a likelihood of data to mix.
        if msg["infer"].get("_deterministic") or msg["infer"].get("is_auxiliary") or msg["mask"] is False:
            return False
        fn = msg["fn"]
        return not (type(fn) is MaskedDistribution and fn._mask is False)

    # --- the observed sites -----------------------------------------------------
    def _score(self, msg, pool):
        """Replace an observed site's likelihood by its mixup target (and pool it first if asked)."""
        fn = msg["fn"]
        frame = self._pair_frame(msg)
        dim = frame.dim
        batch_shape = fn.batch_shape
        n = frame.size  # a Python int, also under torch.jit tracing
        perm = self.draws.perm(n, msg["value"].device)
        mask = None
        if type(fn) is MaskedDistribution:
            mask, fn = fn._mask, fn.base_dist
            if isinstance(mask, bool):  # Pyro keeps constant masks as Python bools
                mask = None if mask else torch.zeros(batch_shape, dtype=torch.bool, device=msg["value"].device)
        site_mask = msg["mask"]
        if isinstance(site_mask, torch.Tensor):
            mask = site_mask if mask is None else mask & site_mask
            msg["mask"] = None
        if mask is not None:
            mask = mask.expand(batch_shape)
        family, target = self._target_for(msg["name"], fn)
        lam = self.draws.lam(n, msg["value"])
        if pool:
            fn = _engine.pool_pairs(BACKEND, fn, lam, perm, dim, validate=False)
        if target == "expected":
            msg["fn"] = PairedTarget(fn, lam, perm, dim, mask)
        elif family is not None and family.classification:
            msg["fn"] = SoftLabelTarget(fn, lam, perm, dim, self.beta, family.label_kind, mask)
        else:
            axis = dim - len(fn.event_shape)
            msg["value"] = mix_values(msg["value"], lam, perm, axis, self.beta)
            msg["fn"] = fn if mask is None else fn.mask(mask & partner_of(mask, perm, dim))


class ProbMixMessenger(_PairMessenger):
    """ProbMix / M-ProbMix; see :func:`probmix`."""

    _at_kinds = "embed or sample site"

    def _pyro_sample(self, msg):
        self._probmix_sample(msg)

    def _pyro_embed(self, msg):
        self._probmix_embed(msg)

    def _fuse(self, msg, dist, fallback):
        frame = self._pair_frame(msg, fallback)
        dim = _engine.normalise_dim(fallback if frame is None else frame.dim, dist.batch_shape)
        n = self._example_count(frame, dist.batch_shape[dim], "embedding distribution's batch dim", dim)
        like = BACKEND.first_param(_engine.decompose(BACKEND, dist))
        perm = self.draws.perm(n, like.device)
        lam = self.draws.lam(n, like)
        return _engine.pool_pairs(BACKEND, dist, lam, perm, dim, validate=False)


class MixupMessenger(_PairMessenger):
    """Vanilla and manifold mixup; see :func:`mixup`."""

    _at_kinds = "mixable"

    def __init__(self, *, at, **kwargs):
        if not isinstance(at, str):
            raise ValueError(
                "mixup needs at='<name of a pyro_mixup.mixable tensor>' (the inputs for "
                f"vanilla mixup, a hidden layer for manifold mixup); got {at!r}"
            )
        super().__init__(at=at, **kwargs)

    def _pyro_sample(self, msg):
        self._seen_sites.add(msg["name"])
        if self._selected(msg):
            self._score(msg, pool=False)

    def _pyro_mixable(self, msg):
        if msg["name"] != self.at:
            return
        self._seen_at = True
        tensor = msg["args"][0]
        event_dim = msg["kwargs"].get("event_dim")
        if event_dim is None:
            event_dim = 1 if tensor.dim() >= 2 else 0
        frame = self._pair_frame(msg, fallback=-1)
        dim = -1 if frame is None else frame.dim
        axis = dim - event_dim
        if -axis > tensor.dim():
            raise ValueError(
                f"mixable {self.at!r} of shape {tuple(tensor.shape)} has no example dim {dim} "
                f"left of its {event_dim} feature dim(s); pass event_dim="
            )
        n = self._example_count(frame, tensor.shape[axis], "tensor's dim", axis)
        perm = self.draws.perm(n, tensor.device)
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
):
    """ProbMix (and, with ``at=``, M-ProbMix) as a Pyro effect handler.

    Without ``at``: each selected observed site's likelihood ``p(y | x_i)``
    becomes the log-linear pool ``p(y|x_i)^lam p(y|x_j)^(1-lam)`` with the
    example's partner ``j = perm[i]`` along the site's plate, scored on the
    target. With ``at="name"``: the pool happens at an
    :func:`~pyro_mixup.embed` layer or latent sample site of that name (in the
    model or the guide) and observed sites are scored on the target without
    pooling again.

    :param fn: the model (or step function) to wrap; omit for ``with probmix(...):``.
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

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> def model(x, y=None):
        ...     with pyro.plate("data", len(x)):
        ...         return pyro.sample("y", dist.Normal(x, 1.0), obs=y)
        >>> x, y = torch.tensor([1., 2., 3.]), torch.tensor([1., 2., 3.])
        >>> tr = pyro.poutine.trace(probmix(model, lam=0.5, perm=[2, 0, 1])).get_trace(x, y)
        >>> tr.nodes["y"]["fn"].loc   # each x_i pooled with its partner
        tensor([2.0000, 1.5000, 2.5000])
        >>> tr.nodes["y"]["value"]    # scored at the mixed target
        tensor([2.0000, 1.5000, 2.5000])
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
):
    """Vanilla mixup (``at=`` the inputs) or manifold mixup (``at=`` a hidden layer).

    Replaces the :func:`~pyro_mixup.mixable` tensor named ``at`` by
    ``lam * t_i + (1 - lam) * t_perm[i]`` and scores observed sites on the
    mixed target (for class labels: ``lam*log p(y_i) + (1-lam)*log p(y_j)``,
    the usual mixup cross-entropy). Options as in :func:`probmix`.

    Example::

        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro_mixup import mixable
        >>> def model(x, y=None):
        ...     x = mixable("x", x)
        ...     with pyro.plate("data", len(x)):
        ...         return pyro.sample("y", dist.Normal(2 * x.squeeze(-1), 1.0), obs=y)
        >>> x, y = torch.tensor([[0.], [1.]]), torch.tensor([0., 2.])
        >>> tr = pyro.poutine.trace(mixup(model, at="x", lam=0.25, perm=[1, 0])).get_trace(x, y)
        >>> tr.nodes["y"]["fn"].loc, tr.nodes["y"]["value"]
        (tensor([1.5000, 0.5000]), tensor([1.5000, 0.5000]))
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
    )
    return msngr(fn) if fn is not None else msngr
