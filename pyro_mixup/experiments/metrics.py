"""The scores of every experiment, once: Gaussian NLL, RMSE, interval coverage, PIT.

Written against an array namespace ``xp`` (NumPy by default; ``jax.numpy``
inside a compiled trainer) so the trainer's validation NLL and the reported
test NLL are the same function. Networks predict in standardised units of y;
:func:`gaussian_scores` reports in the original units (the NLL shifts by
``log(y_scale)``, the change of variables). Sample-based predictives (the BNN)
are scored by the library's :func:`pyro_mixup.diagnostics.test_metrics`, which
works on any user's ``InferenceData`` (same definitions: log-mean-exp NLL,
RMSE of the mean, central-interval coverage, PIT with ties split).
"""

from __future__ import annotations

import math
from typing import Dict

import numpy as np

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: The NLL per point of N(0, 1) on standardised data with unit variance: what a
#: network that learnt nothing (a constant prediction) scores.
CONSTANT_PREDICTOR_NLL = HALF_LOG_2PI + 0.5


def gaussian_nll(mu, sigma, y, xp=np):
    """Mean over points of ``-log N(y | mu, sigma^2)``."""
    return xp.mean(HALF_LOG_2PI + xp.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2)


def coverage(y, lo, hi) -> float:
    """Fraction of ``y`` inside ``[lo, hi]``."""
    y = np.asarray(y, np.float64)
    return float(np.mean((y >= lo) & (y <= hi)))


def gaussian_scores(mu, sigma, y, y_scale: float = 1.0, interval: float = 0.9) -> Dict[str, float]:
    """Test scores of a Gaussian prediction ``N(mu, sigma^2)`` made in standardised
    units against standardised ``y``, in the original units of y: ``test_nll``,
    ``test_rmse``, ``coverage_90`` (the central ``interval``) and ``pit_mean``."""
    from scipy.special import ndtr, ndtri

    mu, sigma, y = (np.asarray(a, np.float64) for a in (mu, sigma, y))
    z = ndtri(0.5 + interval / 2)
    u = ndtr((y - mu) / sigma)
    return {
        "test_nll": float(gaussian_nll(mu, sigma, y)) + math.log(y_scale),
        "test_rmse": float(np.sqrt(np.mean((mu - y) ** 2))) * y_scale,
        f"coverage_{round(100 * interval)}": coverage(y, mu - z * sigma, mu + z * sigma),
        "pit_mean": float(u.mean()),
    }
