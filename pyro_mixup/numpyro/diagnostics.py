"""The NumPyro side of :func:`pyro_mixup.diagnostics.to_inference_data`: run the plain model on the test data once per posterior draw.

Per draw (vectorised with ``jax.vmap``), only the **latent** sites are
substituted (deterministic and observed sites are recomputed from the test
inputs), and every subsampled plate covers its full index range, in order
(:class:`full_plates`), so each draw scores every test row. The groups are
built by :mod:`pyro_mixup.core.inference_data`. Imports without torch.

Example::

    >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> def model(x, y=None):
    ...     w = numpyro.sample("w", dist.Normal(0., 1.))
    ...     with numpyro.plate("data", len(x), subsample_size=2) as idx:
    ...         return numpyro.sample("y", dist.Normal(w * x[idx], 1.), obs=None if y is None else y[idx])
    >>> x = jnp.arange(4.)
    >>> runs = run_test_model(model, None, None, {"w": jnp.array([0., 1.])}, (x,), {"y": x})
    >>> runs.log_likelihood["y"].shape   # 2 draws x all 4 rows, not a subsample of 2
    (2, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpyro.primitives import Messenger

from ..core._types import Message
from ..core.inference_data import (
    ModelSites,
    SiteLayout,
    TestRuns,
    fit_latent_shapes,
    flatten_chains,
    latent_draws,
    refuse_row_latents,
    refuse_uncovered_latents,
)
from ..core.plain_model import refuse_active_handlers

if TYPE_CHECKING:
    import jax
    from numpyro.infer import MCMC

__all__ = [
    "SAMPLE_STATS_NAMES",
    "full_plates",
    "mcmc_draws",
    "mcmc_sample_stats",
    "model_sites",
    "run_test_model",
]

# NumPyro's extra_fields under ArviZ's sample_stats names (as az.from_numpyro).
SAMPLE_STATS_NAMES = {
    "potential_energy": "lp",  # negated: lp is the log density
    "adapt_state.step_size": "step_size",
    "num_steps": "n_steps",
    "accept_prob": "acceptance_rate",
}


def _stack() -> list[Messenger]:
    # NumPyro has no public accessor for its handler stack; the guard has to look at it.
    from numpyro.primitives import _PYRO_STACK

    return _PYRO_STACK


class _LeakDetector(Messenger):
    """Refuses a mixing handler on the stack at every site."""

    def process_message(self, msg: Message) -> None:
        refuse_active_handlers(_stack())


class full_plates(Messenger):
    """Every plate covers all of its rows, in order: ``plate(name, N, subsample_size=b)``
    yields ``arange(N)``. For scoring a test set, where a random subset per draw
    would score different rows in each draw.

    Example::

        >>> import numpyro
        >>> with full_plates():
        ...     with numpyro.plate("data", 5, subsample_size=2) as idx:
        ...         pass
        >>> idx.tolist()
        [0, 1, 2, 3, 4]
    """

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "plate":
            import jax.numpy as jnp

            size = msg["args"][0]
            msg["value"] = jnp.arange(size)
            msg["args"] = (size, None)  # no subsample size: the plate is whole, and unscaled


def _plates(site: Message) -> tuple[tuple[str, int], ...]:
    return tuple((f.name, f.dim) for f in site["cond_indep_stack"] if f.dim is not None)


def model_sites(trace: Mapping[str, Message]) -> ModelSites:
    """The latent, deterministic and observed sites of a NumPyro trace."""
    latent = tuple(n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"])
    observed = tuple(n for n, s in trace.items() if s["type"] == "sample" and s["is_observed"])
    deterministic = tuple(n for n, s in trace.items() if s["type"] == "deterministic")
    return ModelSites(latent, deterministic, observed)


def run_test_model(
    model: Callable[..., Any],
    guide: Callable[..., Any] | None,
    params: Mapping[str, Any] | None,
    samples: Mapping[str, jax.Array] | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    num_samples: int = 100,
    rng_seed: int | None = 0,
    same_rows: bool = False,
) -> TestRuns:
    """Run ``model(*args, **kwargs)`` once per posterior draw and collect NumPy arrays.

    :param guide, params: a NumPyro guide and its fitted parameters, drawn
        ``num_samples`` times; or None with ``samples``, a dict ``{site: array[draw, ...]}``.
    :param rng_seed: seeds the guide, any ``embed`` noise and the predictive draws.
    """
    import jax
    from numpyro import handlers
    from numpyro.infer import Predictive

    refuse_active_handlers(_stack())
    key = jax.random.PRNGKey(0 if rng_seed is None else rng_seed)
    k_post, k_run = jax.random.split(key)
    model = full_plates(model)

    with _LeakDetector():
        proto = handlers.trace(handlers.seed(model, k_run)).get_trace(*args, **kwargs)
    sites = model_sites(proto)
    if not sites.latent:
        raise ValueError(
            "the model has no latent sites when run on the test data: there is no posterior to draw from"
        )
    if samples is None:
        guide_trace = handlers.trace(
            handlers.substitute(handlers.seed(full_plates(guide), k_post), data=params)
        )
        refuse_uncovered_latents(sites, guide_trace.get_trace(*args, **kwargs))
        predictive = Predictive(
            model,
            guide=full_plates(guide),
            params=params,
            num_samples=num_samples,
            return_sites=list(sites.latent),
        )
        samples = {
            k: v for k, v in predictive(k_post, *args, **kwargs).items() if k in sites.latent
        }
    else:
        samples = latent_draws(samples, sites)
        refuse_row_latents(
            sites, {n: [f.name for f in proto[n]["cond_indep_stack"]] for n in proto}, same_rows
        )
    samples = fit_latent_shapes(samples, {k: np.shape(proto[k]["value"]) for k in sites.latent})
    num_draws = next(iter(samples.values())).shape[0]

    def one_draw(
        draw: Mapping[str, jax.Array], k: jax.Array
    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array], dict[str, jax.Array]]:
        k_model, k_pred = jax.random.split(k)
        with _LeakDetector():
            tr = handlers.trace(
                handlers.substitute(handlers.seed(model, k_model), data=draw)
            ).get_trace(*args, **kwargs)
        log_lik = {n: tr[n]["fn"].log_prob(tr[n]["value"]) for n in sites.observed}
        predictive = {
            n: tr[n]["fn"].sample(jax.random.fold_in(k_pred, i))
            for i, n in enumerate(sites.observed)
        }
        posterior = {n: tr[n]["value"] for n in sites.latent + sites.deterministic}
        return log_lik, predictive, posterior

    log_lik, predictive, posterior = jax.jit(jax.vmap(one_draw))(
        samples, jax.random.split(k_run, num_draws)
    )
    layouts = {}
    for n in sites.latent + sites.observed:
        layouts[n] = SiteLayout(_plates(proto[n]), len(proto[n]["fn"].batch_shape))
    for n in sites.deterministic:
        layouts[n] = SiteLayout(_plates(proto[n]), np.ndim(proto[n]["value"]))
    as_numpy = lambda d: {k: np.asarray(v) for k, v in d.items()}
    return TestRuns(
        posterior=as_numpy(posterior),
        log_likelihood=as_numpy(log_lik),
        posterior_predictive=as_numpy(predictive),
        observed_data={n: np.asarray(proto[n]["value"]) for n in sites.observed},
        layouts=layouts,
    )


def mcmc_draws(mcmc: MCMC) -> tuple[dict[str, Any], int]:
    """``({site: array[chain * draw, ...]}, chains)`` from a fitted ``numpyro.infer.MCMC``."""
    return flatten_chains(mcmc.get_samples(group_by_chain=True))


def mcmc_sample_stats(mcmc: MCMC) -> dict[str, np.ndarray]:
    """The per-draw statistics MCMC collected (``extra_fields``), under ArviZ's names.

    ``diverging`` is always there; ``energy`` (for ``az.plot_energy``), ``lp``,
    ``step_size``, ``n_steps`` / ``tree_depth``, ``acceptance_rate`` when the
    run asked for them, e.g. ``mcmc.run(key, ..., extra_fields=("energy",
    "potential_energy", "adapt_state.step_size", "num_steps", "accept_prob"))``.
    """
    stats = {}
    for field, value in mcmc.get_extra_fields(group_by_chain=True).items():
        if isinstance(value, (dict, tuple)):
            continue  # structured fields (e.g. the whole adapt_state) have no per-draw scalar
        value = np.asarray(value)
        name = SAMPLE_STATS_NAMES.get(field, field)
        stats[name] = -value if field == "potential_energy" else value
        if field == "num_steps":
            # a NUTS tree of depth d takes up to 2^d - 1 steps (as az.from_numpyro)
            stats["tree_depth"] = np.log2(value).astype(int) + 1
    return stats
