"""The Pyro side of :func:`pyro_mixup.diagnostics.to_inference_data`: run the plain model on the test data once per posterior draw.

Per draw, only the **latent** sites are conditioned on the posterior draw
(deterministic and observed sites are recomputed from the test inputs), and a
subsampled plate is covered in order, chunk by chunk (Pyro fixes the
subsample size when the plate is built), so each draw scores every test row. The groups are built by
:mod:`pyro_mixup.core.inference_data`.

Example::

    >>> import torch, pyro, pyro.distributions as dist
    >>> def model(x, y=None):
    ...     w = pyro.sample("w", dist.Normal(0., 1.))
    ...     with pyro.plate("data", len(x), subsample_size=2) as idx:
    ...         return pyro.sample("y", dist.Normal(w * x[idx], 1.), obs=None if y is None else y[idx])
    >>> x = torch.arange(4.)
    >>> runs = run_test_model(model, None, {"w": torch.tensor([0., 1.])}, (x,), {"y": x})
    >>> runs.log_likelihood["y"].shape   # 2 draws x all 4 rows, not a subsample of 2
    (2, 4)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.handler import PARTICLE_PLATES
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
from ..core.plain_model import LEAK_MESSAGE, HandlerLeakError, refuse_active_handlers

if TYPE_CHECKING:
    import torch
    from pyro.infer import MCMC
    from pyro.poutine.messenger import Messenger
    from pyro.poutine.runtime import Message
    from pyro.poutine.trace_struct import Trace

__all__ = ["mcmc_draws", "mcmc_sample_stats", "model_sites", "run_test_model"]


def _stack() -> list[Messenger]:
    # Pyro has no public accessor for its handler stack; the guard has to look at it.
    from pyro.poutine.runtime import _PYRO_STACK

    return _PYRO_STACK


def _leak_detector() -> Messenger:
    """A messenger that refuses a mixing handler on the stack at every site."""
    from pyro.poutine.messenger import Messenger

    class LeakDetector(Messenger):
        def _process_message(self, msg: Message) -> None:
            refuse_active_handlers(_stack())

    return LeakDetector()


def _plates(site: Message) -> tuple[tuple[str, int], ...]:
    """``(name, dim)`` of the plates a site sits in (vectorised-particle plates excluded)."""
    return tuple(
        (f.name, f.dim)
        for f in site["cond_indep_stack"]
        if f.dim is not None and f.name not in PARTICLE_PLATES
    )


def model_sites(trace: Trace) -> ModelSites:
    """The latent, deterministic and observed sites of a (subsample-pruned) Pyro trace."""
    from pyro.infer.inspect import site_is_deterministic

    latent, det, obs = [], [], []
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site_is_deterministic(site):
            det.append(name)
        elif site["is_observed"]:
            obs.append(name)
        else:
            latent.append(name)
    return ModelSites(tuple(latent), tuple(det), tuple(obs))


def _subsampled_plate(trace: Trace) -> tuple[str, int, int] | None:
    """``(name, full size, subsample size)`` of the one plate that subsamples, or None.

    Pyro fixes a plate's subsample size when the model builds it (a handler may
    choose *which* rows, not how many), so the full range is covered in chunks
    of that size, in order. Two subsampling plates are refused: their chunks
    would have to be crossed."""
    plates = {}
    for site in trace.nodes.values():
        for f in site.get("cond_indep_stack", ()):
            if f.full_size is not None and f.size is not None and 0 <= f.size < f.full_size:
                plates[f.name] = (f.name, int(f.full_size), int(f.size))
    if len(plates) > 1:
        raise ValueError(
            f"the plates {sorted(plates)} all subsample; diagnostics score every test row by covering one "
            "subsampled plate in chunks. Call the model without subsampling for diagnostics "
            "(subsample_size=None, e.g. through model_kwargs)"
        )
    return next(iter(plates.values()), None)


def _chunks(full_size: int, size: int) -> Iterator[tuple[torch.Tensor, slice]]:
    """``(indices, keep)`` pairs: conditioning the plate on ``indices`` (``size`` rows)
    in turn and keeping ``indices[keep]`` gives rows ``0 .. full_size - 1`` in order."""
    import torch

    for start in range(0, full_size, size):
        first = min(
            start, full_size - size
        )  # the last chunk ends at full_size and overlaps the one before
        yield torch.arange(first, first + size), slice(start - first, size)


def _in_plate(site: Message, plate: str | None) -> bool:
    return plate is not None and any(f.name == plate for f in site["cond_indep_stack"])


def _score_once(
    model: Callable[..., Any],
    data: Mapping[str, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    sites: ModelSites,
    plate: str | None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, SiteLayout], dict[str, dict[str, int]]]:
    """Run the conditioned model once: ``{group: {site: array}}``, layouts, observed values,
    and for sites in ``plate`` the array axis that plate indexes (per group)."""
    from pyro import poutine
    from pyro.poutine.util import prune_subsample_sites

    from .distributions import PairScore

    tracer = poutine.trace(poutine.condition(model, data=data))
    with _leak_detector():
        tracer(*args, **kwargs)
    tr = prune_subsample_sites(tracer.trace)
    out: dict[str, dict[str, np.ndarray]] = {
        "posterior": {},
        "log_likelihood": {},
        "posterior_predictive": {},
        "observed_data": {},
    }
    layouts: dict[str, SiteLayout] = {}
    axes: dict[str, dict[str, int]] = {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample":
            continue
        fn = site["fn"]
        if isinstance(fn, PairScore) or isinstance(getattr(fn, "base_dist", None), PairScore):
            raise HandlerLeakError(LEAK_MESSAGE.format(name=type(fn).__name__))
        value = site["value"].detach().cpu().numpy()
        if name in sites.deterministic:
            out["posterior"][name] = value
            layouts[name] = SiteLayout(
                _plates(site), len(fn.batch_shape)
            )  # a Delta with the site's event_dim
        elif name in sites.observed:
            out["log_likelihood"][name] = fn.log_prob(site["value"]).detach().cpu().numpy()
            out["posterior_predictive"][name] = fn.sample().detach().cpu().numpy()
            out["observed_data"][name] = value
            layouts[name] = SiteLayout(_plates(site), len(fn.batch_shape))
        else:  # latent: the draw, or (a guide that does not cover it) a prior draw
            out["posterior"][name] = value
            layouts[name] = SiteLayout(_plates(site), len(fn.batch_shape))
        if _in_plate(site, plate):
            dim = next(f.dim for f in site["cond_indep_stack"] if f.name == plate)
            # the plate's dim counts from the right of the batch shape; values also have event dims
            axes[name] = {"log_likelihood": dim, "value": dim - len(fn.event_shape)}
    return out, layouts, axes


def _score_all_rows(
    model: Callable[..., Any],
    draw: Mapping[str, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    sites: ModelSites,
    subsampled: tuple[str, int, int] | None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, SiteLayout]]:
    """:func:`_score_once`, over the chunks of a subsampled plate, rows joined in order."""
    if subsampled is None:
        return _score_once(model, draw, args, kwargs, sites, None)[:2]
    plate, full_size, size = subsampled
    parts = [
        _score_once(model, {**draw, plate: idx}, args, kwargs, sites, plate) + (keep,)
        for idx, keep in _chunks(full_size, size)
    ]
    out, layouts, axes, _ = parts[0]
    for group, by_site in out.items():
        for name in by_site:
            if name in axes:  # in the plate: the kept rows of every chunk, in order
                axis = axes[name]["log_likelihood" if group == "log_likelihood" else "value"]
                pieces = []
                for p_out, _, _, keep in parts:
                    arr = p_out[group][name]
                    index = [slice(None)] * arr.ndim
                    index[axis] = keep
                    pieces.append(arr[tuple(index)])
                by_site[name] = np.concatenate(pieces, axis=axis)
    return out, layouts


def run_test_model(
    model: Callable[..., Any],
    guide: Callable[..., Any] | None,
    samples: Mapping[str, torch.Tensor] | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    num_samples: int = 100,
    rng_seed: int | None = 0,
    progress: bool = False,
    same_rows: bool = False,
) -> TestRuns:
    """Run ``model(*args, **kwargs)`` once per posterior draw and collect NumPy arrays.

    :param guide: a Pyro guide (parameters in the param store), drawn ``num_samples``
        times; or None with ``samples``, a dict ``{site: tensor[draw, ...]}``.
    :param rng_seed: seeds the guide, any ``embed`` noise and the predictive
        draws; the global torch RNG state is restored afterwards (None: unseeded).
    """
    import torch
    from pyro import poutine
    from pyro.poutine.util import prune_subsample_sites

    refuse_active_handlers(_stack())
    rng = torch.random.fork_rng() if rng_seed is not None else contextlib.nullcontext()
    with rng, torch.no_grad():
        if rng_seed is not None:
            torch.manual_seed(rng_seed)
        with _leak_detector():
            proto = prune_subsample_sites(poutine.trace(model).get_trace(*args, **kwargs))
        sites = model_sites(proto)
        subsampled = _subsampled_plate(proto)
        local = [n for n in sites.latent if subsampled and _in_plate(proto.nodes[n], subsampled[0])]
        if local:
            raise ValueError(
                f"the latent sites {local} sit in the subsampled plate {subsampled[0]!r}: a test row's local "
                "latent has no posterior draw to score it with. Call the model without subsampling for "
                "diagnostics (subsample_size=None)"
            )
        if samples is not None:
            plates_of = {
                n: [f.name for f in site["cond_indep_stack"]]
                for n, site in proto.nodes.items()
                if site["type"] == "sample"
            }
            refuse_row_latents(sites, plates_of, same_rows)
            samples = fit_latent_shapes(
                latent_draws(samples, sites),
                {k: tuple(proto.nodes[k]["value"].shape) for k in sites.latent},
            )
            num_draws = next(iter(samples.values())).shape[0]
        else:
            num_draws = num_samples
        collected: dict[str, dict[str, list[np.ndarray]]] = {
            "posterior": {},
            "log_likelihood": {},
            "posterior_predictive": {},
        }
        observed: dict[str, np.ndarray] = {}
        layouts: dict[str, SiteLayout] = {}
        draws = range(num_draws)
        if progress:
            from tqdm.auto import tqdm

            draws = tqdm(draws, desc="posterior draws", leave=False)
        for s in draws:
            if samples is not None:
                draw = {k: v[s] for k, v in samples.items()}
            else:
                gtr = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
                draw = {n: site["value"] for n, site in gtr.nodes.items() if n in sites.latent}
                if s == 0:
                    refuse_uncovered_latents(sites, draw)
            out, layouts = _score_all_rows(model, draw, args, kwargs, sites, subsampled)
            for group, by_site in collected.items():
                for name, value in out[group].items():
                    by_site.setdefault(name, []).append(value)
            if not observed:
                observed = out["observed_data"]
    stacked = {group: {k: np.stack(v) for k, v in d.items()} for group, d in collected.items()}
    return TestRuns(observed_data=observed, layouts=layouts, **stacked)


def mcmc_draws(mcmc: MCMC) -> tuple[dict[str, Any], int]:
    """``({site: tensor[chain * draw, ...]}, chains)`` from a fitted ``pyro.infer.MCMC``."""
    return flatten_chains(mcmc.get_samples(group_by_chain=True))


def mcmc_sample_stats(mcmc: MCMC) -> dict[str, np.ndarray]:
    """``{"diverging": bool[chain, draw]}``: what Pyro's MCMC records per draw (as ``az.from_pyro``).

    Pyro keeps no per-draw energy, step size or tree depth, so ``az.plot_energy``
    needs a NumPyro fit."""
    grouped = mcmc.get_samples(group_by_chain=True)
    chains, draws = tuple(next(iter(grouped.values())).shape[:2])
    divergences = mcmc.diagnostics().get("divergences", {})
    diverging = np.zeros((chains, draws), dtype=bool)
    # keys are "chain 0", "chain 1", ...: order by the number ("chain 10" after "chain 9")
    for i, key in enumerate(sorted(divergences, key=lambda k: int(str(k).split()[-1]))):
        diverging[i, np.asarray(divergences[key], dtype=int)] = True
    return {"diverging": diverging}
