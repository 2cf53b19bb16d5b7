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

from ..core.pairing import PartnerTable


def _sigmoid_of_log_ratio(log_g1: float, log_g2: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * (log_g1 - log_g2)))  # sigmoid without overflow


class TorchRandom:
    """The random source of one Pyro handler (stateless across entries)."""

    def __init__(self) -> None:
        # (table, candidates, probs) as tensors, made on first use
        self._table: tuple[PartnerTable, torch.Tensor, torch.Tensor | None] | None = None

    def begin(self) -> None:
        pass

    # --- lam ------------------------------------------------------------------
    def beta(self, alpha: float, n: int | None) -> float | torch.Tensor:
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
        log_g_np = (
            np.log(np.random.standard_gamma(alpha + 1.0, (2, n)))
            + np.log1p(-np.random.random_sample((2, n))) / alpha
        )
        return torch.as_tensor(
            0.5 * (1.0 + np.tanh(0.5 * (log_g_np[0] - log_g_np[1]))),
            dtype=torch.get_default_dtype(),
        )

    @staticmethod
    def ones(n: int | None) -> float | torch.Tensor:
        return 1.0 if n is None else torch.ones(n)

    @staticmethod
    def fixed_weight(lam: torch.Tensor) -> float | torch.Tensor:
        if lam.dim() == 0 and not torch.jit.is_tracing():
            return float(lam)
        return lam

    @staticmethod
    def cast_weight(lam: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
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
    def permutation(n: int) -> torch.Tensor:
        return torch.randperm(n)

    @staticmethod
    def local_permutation(n: int, shards: int) -> torch.Tensor:
        """A random permutation of ``0..n-1`` mapping each of ``shards`` contiguous
        blocks onto itself (uniform and independent per block): the argsort of
        float64 uniforms per block (ties, at 2**-53, are negligible)."""
        size = n // shards
        order = torch.rand(shards, size, dtype=torch.float64).argsort(dim=1)
        return (order + torch.arange(0, n, size).unsqueeze(1)).reshape(n)

    @staticmethod
    def shift(n: int) -> int | torch.Tensor:
        if torch.jit.is_tracing():
            return torch.randint(0, n, ())
        return random.randrange(n)

    def from_table(self, table: PartnerTable, n: int) -> torch.Tensor:
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
    def normal(like: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(like)

    @staticmethod
    def uniform(n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.rand(n, dtype=like.dtype, device=like.device)


def size(n: int | torch.Tensor) -> int:
    """A plate size as a Python int: sizes are tensors under torch.jit tracing
    (a plate of ``len(x)``); the pairing is drawn per size, so a constant is right."""
    if isinstance(n, int):
        return n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(n)
