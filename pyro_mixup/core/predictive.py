"""The marginal predictive of a model with stochastic layers, shared by both backends.

A model with an :func:`~pyro_mixup.embed` layer (M-ProbMix, paper eq. 27) predicts
with ``p(y | x) = \u222b p(y | z) q(z | x) dz``; with a guide over latent weights (a BNN)
the integral runs over the weights too. Both adapters estimate it the way
``Predictive`` does, with ``S`` independent draws of everything stochastic in
the model (and guide), and hand the per-draw distributions of one observed
site to :class:`MarginalPredictive`, which turns them into

- the log density of the equal-weight mixture of the draws,
  ``log p(y | x) ~= logsumexp_s log p(y | draw s) - log S``;
- its mean and variance by the laws of total expectation and variance,
  ``E[y] = mean_s m_s`` and ``Var[y] = mean_s v_s + mean_s (m_s - E[y])^2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._types import Array, Distribution

if TYPE_CHECKING:
    from .backend import PoolingBackend

#: Draws of the embedding (and latents) per prediction. Measured by
#: ``benchmarks/predictive_draws.py`` on the toy regression: in distribution the
#: test NLL of M-ProbMix moves by at most 0.002 nats between independent sets of
#: 1000 draws and the mean at 10000; out of distribution, where the density is a
#: rare draw's, the log-mean-exp needs many more draws (docs/results.md).
DEFAULT_NUM_DRAWS = 1000

#: ``embedding=`` of the predictive functions.
EMBEDDING_MODES = ("sample", "mean")


def check_predictive_options(num_draws: Any, embedding: Any, site: Any) -> int:
    """Refuse options that would give a wrong predictive quietly; the draw count as an int."""
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive int; got {num_draws!r}")
    if embedding not in EMBEDDING_MODES:
        raise ValueError(
            f"embedding must be 'sample' (the marginal over q(z|x), the paper's predictive) or 'mean' "
            f"(z = the mean of q(z|x), the shortcut); got {embedding!r}"
        )
    if not isinstance(site, str):
        raise TypeError(
            f"site must be the name of the model's observed sample site, a str; got {site!r}"
        )
    return num_draws


def missing_site_error(site: str, sample_sites: Iterable[str]) -> KeyError:
    names = ", ".join(repr(n) for n in sample_sites) or "none"
    return KeyError(
        f"the model has no sample site {site!r} to predict (its sample sites: {names}); pass site= the name of "
        "its likelihood site"
    )


@dataclass(frozen=True)
class MarginalPredictive:
    """The predictive distribution of one site as an equal-weight mixture of ``S`` draws.

    Arrays are torch tensors or JAX arrays, as the model computes them, each with
    the draws along axis 0.

    :ivar site: the site predicted.
    :ivar draw_means: per-draw mean of the site, ``(S, *batch, *event)``; ``None``
        for a distribution without a mean (categorical: use :attr:`log_density`).
    :ivar draw_variances: per-draw variance, the same shape (or ``None``).
    :ivar samples: one value of the site per draw, ``(S, ...)``: draws from the
        mixture, for quantiles and bands.
    :ivar log_density: ``log p(values | x)`` under the mixture, the batch shape of
        ``values`` against the site's; ``None`` where no values were given and the
        site was not observed.
    :ivar embedding: ``"sample"`` (marginal over the embedding) or ``"mean"``.
    """

    site: str
    draw_means: Any
    draw_variances: Any
    samples: Any
    log_density: Any | None
    embedding: str

    @property
    def num_draws(self) -> int:
        return int(self.samples.shape[0])

    def _moments(self) -> tuple[Array, Array]:
        if self.draw_means is None:
            raise ValueError(
                f"site {self.site!r}: its distribution has no mean and variance (a categorical likelihood?); "
                "use log_density or samples"
            )
        return self.draw_means, self.draw_variances

    @property
    def mean(self) -> Array:
        """``E[y | x] = mean_s m_s`` (law of total expectation)."""
        means, _ = self._moments()
        return means.mean(0)

    @property
    def variance(self) -> Array:
        """``Var[y | x] = mean_s v_s + mean_s (m_s - E[y|x])^2`` (law of total variance)."""
        means, variances = self._moments()
        return variances.mean(0) + ((means - means.mean(0)) ** 2).mean(0)


def mixture_log_density(draw_log_probs: Array, logsumexp: Callable[[Array, int], Array]) -> Array:
    """``logsumexp_s lp_s - log S`` over axis 0: the log density of the equal-weight mixture."""
    return logsumexp(draw_log_probs, 0) - math.log(draw_log_probs.shape[0])


def moments(backend: PoolingBackend, d: Distribution) -> tuple[Array, Array] | None:
    """``(mean, variance)`` of ``d``, or None where they are not numbers: a
    categorical's are NaN in both libraries, and some distributions (a
    transformed one, say) do not implement them."""
    base = d
    while (layer := backend.unwrap(base)) is not None:
        base = layer[1]
    family = backend.lookup(base)
    if family is not None and family.label_kind == "categorical":
        return None
    try:
        return d.mean, d.variance
    except NotImplementedError:
        return None


def subsample_error(site: str, plate: str, size: int, full_size: int) -> ValueError:
    return ValueError(
        f"site {site!r} is in plate {plate!r}, which subsamples {size} of {full_size} rows: every draw would "
        "predict other rows, and the mixture would average different examples. Predict on the rows you want "
        "with the plate unsubsampled (no subsample_size; for a model that takes num_data=, leave it out)"
    )


def latent_site_error(site: str, where: str) -> ValueError:
    return ValueError(
        f"site {site!r} takes its value from the {where}, so its distribution in the model is not the one its "
        "draws come from: marginal_predictive predicts an observed (likelihood) site; name that one with site="
    )
