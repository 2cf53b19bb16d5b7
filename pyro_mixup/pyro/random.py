"""The draws of the Pyro handlers: ``lam``, partners and jitter.

Eagerly, a handful of numbers come from Python's and NumPy's global RNGs (both
seeded by ``pyro.set_rng_seed``), far cheaper than torch ops for a scalar.
Under ``torch.jit`` tracing (``JitTrace_ELBO`` around a wrapped model) every
draw is a torch op instead, so that the compiled step replays it fresh.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import torch


def _sigmoid_of_log_ratio(log_g1, log_g2):
    return 0.5 * (1.0 + math.tanh(0.5 * (log_g1 - log_g2)))  # sigmoid without overflow


class TorchRandom:
    """The random source of one Pyro handler (stateless across entries)."""

    def __init__(self):
        self._table = None  # (table, candidates, probs) as tensors, made on first use

    def begin(self):
        pass

    # --- lam ------------------------------------------------------------------
    def beta(self, alpha: float, n):
        """``Beta(alpha, alpha)``: a Python float (``n=None``, eager) or a tensor.

        Beta(a, a) = G1 / (G1 + G2), with log G(a) = log G(a + 1) + log(U) / a:
        stable for small a, where G(a) itself underflows to 0.
        """
        if torch.jit.is_tracing():
            shape = (2,) if n is None else (2, n)
            gamma = torch._standard_gamma(torch.full(shape, alpha + 1.0))
            u = torch.rand(shape).clamp_min_(torch.finfo(torch.float32).tiny)
            log_g = gamma.log() + u.log() / alpha
            return torch.sigmoid(log_g[0] - log_g[1])
        if n is None:
            log_g1 = (
                math.log(random.gammavariate(alpha + 1.0, 1.0))
                + math.log(1.0 - random.random()) / alpha
            )
            log_g2 = (
                math.log(random.gammavariate(alpha + 1.0, 1.0))
                + math.log(1.0 - random.random()) / alpha
            )
            return _sigmoid_of_log_ratio(log_g1, log_g2)
        log_g = (
            np.log(np.random.standard_gamma(alpha + 1.0, (2, n)))
            + np.log1p(-np.random.random_sample((2, n))) / alpha
        )
        return torch.as_tensor(
            0.5 * (1.0 + np.tanh(0.5 * (log_g[0] - log_g[1]))), dtype=torch.get_default_dtype()
        )

    @staticmethod
    def ones(n):
        return 1.0 if n is None else torch.ones(n)

    @staticmethod
    def fixed_weight(lam):
        if lam.dim() == 0 and not torch.jit.is_tracing():
            return float(lam)
        return lam

    @staticmethod
    def cast_weight(lam, like):
        if isinstance(lam, float):
            return lam
        # class labels and counts can be integer tensors: weights stay floating point
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return (
            lam
            if lam.dtype == dtype and lam.device == like.device
            else lam.to(dtype=dtype, device=like.device)
        )

    # --- partners -------------------------------------------------------------
    @staticmethod
    def permutation(n: int):
        return torch.randperm(n)

    @staticmethod
    def shift(n: int):
        if torch.jit.is_tracing():
            return torch.randint(0, n, ())
        return random.randrange(n)

    def from_table(self, table, n: int):
        if self._table is None or self._table[0] is not table:
            probs = None if table.probs is None else torch.as_tensor(table.probs)
            self._table = (table, torch.as_tensor(table.candidates), probs)
        _, cand, probs = self._table
        if probs is None:
            cols = torch.randint(0, cand.shape[1], (n,))
        else:
            cols = torch.multinomial(probs, 1).squeeze(-1)
        return cand[torch.arange(n), cols]

    # --- jitter -----------------------------------------------------------------
    @staticmethod
    def normal(like):
        return torch.randn_like(like)

    @staticmethod
    def uniform(n: int, like):
        return torch.rand(n, dtype=like.dtype, device=like.device)


def size(n) -> int:
    """A plate size as a Python int: sizes are tensors under torch.jit tracing
    (a plate of ``len(x)``); the pairing is drawn per size, so a constant is right."""
    if isinstance(n, int):
        return n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(n)
