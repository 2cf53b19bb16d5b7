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

import numpy as np

#: The one vocabulary of the JSON records of ``bench uci``, ``bench toy-*`` and ``bnn``: the
#: same metric has the same name in every command (docs/experiments.md, "Metric names").
#: A name starts with the rows it scores: ``test_`` (held-out test rows), ``id_`` / ``ood_``
#: (the toy's in- and out-of-distribution test sets), ``val_``, ``train_``.
METRIC_NAMES = {
    "test_nll": "mean over test rows of -log p(y | x), original units of y",
    "test_rmse": "root mean squared error of the predictive mean, original units",
    "test_accuracy": "fraction of test rows whose most probable class is the label",
    "coverage_90": "fraction of test rows inside the central 90% predictive interval",
    "pit_mean": "mean probability integral transform of the test rows (0.5 when calibrated)",
    "test_nll_mean_embedding": "test_nll of an embedding network with its embedding at its mean",
    "id_nll": "test_nll on the toy's in-distribution test set",
    "ood_nll": "test_nll on the toy's out-of-distribution test set",
    "id_mse": "mean squared error on the in-distribution test set, original units",
    "ood_mse": "mean squared error on the out-of-distribution test set, original units",
    "id_nll_standardised": "id_nll in standardised units of y (the paper's Table 5)",
    "ood_nll_standardised": "ood_nll in standardised units of y (the paper's Table 5)",
    "id_nll_mean_embedding": "id_nll with the embedding at its mean",
    "ood_nll_mean_embedding": "ood_nll with the embedding at its mean",
    "val_nll": "best validation NLL per row, the trainer's standardised units",
    "train_loss_first": "training loss (negative ELBO per row) at the first epoch",
    "train_loss_last": "training loss at the last epoch",
    "embed_scale": "the embedding's mean standard deviation over training (every few epochs)",
    "embed_scale_first": "the embedding's mean standard deviation after the first epoch",
    "embed_scale_last": "the embedding's mean standard deviation after the last epoch",
    "seconds": "wall time of this record: its training and scoring",
    "config_seconds": "wall time of the configuration this record was trained in (members share it)",
    "fit_seconds": "wall time of the fit alone (bnn)",
    "diagnostics_seconds": "wall time of the ArviZ conversion and scoring (bnn)",
    "wall_seconds": "wall time of the whole command",
    "wall_seconds_last_invocation": "wall time of the last invocation of a resumable command",
}

#: :func:`pyro_mixup.diagnostics.test_metrics`' keys (at ``interval=0.9``) as record names
FROM_TEST_METRICS = {"nll": "test_nll", "rmse": "test_rmse", "coverage": "coverage_90"}

_METRIC_WORDS = {"nll", "rmse", "mse", "accuracy", "coverage", "pit", "seconds", "loss"}


def unknown_metric_names(record: dict) -> list[str]:
    """The keys of ``record`` that look like metrics but are not in :data:`METRIC_NAMES`.

    >>> unknown_metric_names({"method": "erm", "test_nll": 1.0, "nll": 1.0})
    ['nll']
    """
    return [k for k in record if _METRIC_WORDS & set(k.split("_")) and k not in METRIC_NAMES]


def renamed_legacy_record(record: dict) -> dict:
    """A record of the previous release with its metrics under today's names (``bnn``
    wrote ``nll``, ``rmse`` and ``coverage``); records of this release come back unchanged.

    >>> renamed_legacy_record({"nll": 1.5, "rmse": 2.0, "coverage": 0.9})
    {'test_nll': 1.5, 'test_rmse': 2.0, 'coverage_90': 0.9}
    """
    return {FROM_TEST_METRICS.get(k, k): v for k, v in record.items()}


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


def gaussian_scores(mu, sigma, y, y_scale: float = 1.0, interval: float = 0.9) -> dict[str, float]:
    """Test scores of a Gaussian prediction ``N(mu, sigma^2)`` made in standardised
    units against standardised ``y``, in the original units of y: ``test_nll``,
    ``test_rmse``, ``coverage_90`` (the central ``interval``) and ``pit_mean``.
    The one-component case of :func:`mixture_scores`."""
    return mixture_scores(
        np.asarray(mu, np.float64)[None], np.asarray(sigma, np.float64)[None], y, y_scale, interval
    )


def mixture_scores(
    means, stds, y, y_scale: float = 1.0, interval: float = 0.9, log_density=None
) -> dict[str, float]:
    """Test scores of the equal-weight mixture of ``N(means[s], stds[s]^2)`` (arrays
    ``(S, n)``: the components of a marginal predictive, e.g.
    :class:`~pyro_mixup.core.predictive.MarginalPredictive`'s ``draw_means`` and the
    square root of its ``draw_variances``), as :func:`gaussian_scores`. The PIT is
    the mixture's CDF at ``y``; the central interval covers ``y`` where the PIT lies
    in ``[(1 - interval) / 2, (1 + interval) / 2]``; ``log_density`` (per point,
    standardised units) defaults to the mixture's, computed here."""
    from scipy.special import logsumexp, ndtr

    means, stds = (np.asarray(a, np.float64) for a in (means, stds))
    y = np.asarray(y, np.float64)
    if log_density is None:
        r = (y - means) / stds
        log_density = logsumexp(-HALF_LOG_2PI - np.log(stds) - 0.5 * r**2, axis=0) - math.log(
            means.shape[0]
        )
    u = ndtr((y - means) / stds).mean(0)
    tail = (1 - interval) / 2
    return {
        "test_nll": float(-np.mean(log_density)) + math.log(y_scale),
        "test_rmse": float(np.sqrt(np.mean((means.mean(0) - y) ** 2))) * y_scale,
        f"coverage_{round(100 * interval)}": float(np.mean((u >= tail) & (u <= 1 - tail))),
        "pit_mean": float(u.mean()),
    }


def mixture_quantile(means, stds, q: float, iterations: int = 60):
    """The ``q``-quantile of the equal-weight Gaussian mixture per point (bisection
    on its CDF; components along axis 0)."""
    from scipy.special import ndtr

    means, stds = (np.asarray(a, np.float64) for a in (means, stds))
    lo, hi = (means - 10 * stds).min(0), (means + 10 * stds).max(0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        below = ndtr((mid - means) / stds).mean(0) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)
