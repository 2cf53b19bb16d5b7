"""ArviZ diagnostics for Pyro and NumPyro models trained with or without our handlers.

:func:`to_inference_data` turns a model plus a fitted guide (SVI) or posterior
samples (MCMC) into an ArviZ object with the groups ``posterior``,
``posterior_predictive``, ``log_likelihood`` (one value per observation and
draw), ``observed_data`` and, from an ``MCMC`` object, ``sample_stats``; dims
are named after the model's plates. :func:`log_predictive_density` scores a
held-out test set from it directly; LOO (``az.loo``) estimates
leave-one-out on the *training* data and is the wrong tool there.

What runs: the model, once per posterior draw, on ``(x_test, y_test)``, by the
backend's adapter (:mod:`pyro_mixup.pyro.diagnostics`,
:mod:`pyro_mixup.numpyro.diagnostics`); the groups are built by
:mod:`pyro_mixup.core.inference_data`. Per draw:

- only the **latent** sites take the posterior draw; deterministic and
  observed sites recorded at training time (``mu = w * x``, ``y``) are dropped
  and recomputed from the test inputs;
- every subsampled plate (``plate("data", N, subsample_size=b)``) covers all
  ``N`` rows in order, so every draw scores every test row;
- the log-likelihood is the **plain** model's: an outer
  :func:`pyro_mixup.handlers.probmix` / :func:`~pyro_mixup.handlers.mixup`
  wrapper (or a NumPyro twin) is stripped (:func:`unwrap`), and a handler still
  active while the model runs raises :class:`HandlerLeakError`.

Works with ArviZ 0.x (returns ``arviz.InferenceData``) and with ArviZ 1.x,
where there is no Pyro converter (returns an ``xarray.DataTree`` with the same
groups).

Example (Pyro, SVI)::

    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> from pyro.infer.autoguide import AutoNormal
    >>> def model(x, y=None):
    ...     w = pyro.sample("w", dist.Normal(0., 1.))
    ...     with pyro.plate("data", len(x)):
    ...         return pyro.sample("y", dist.Normal(w * x, 1.), obs=y)
    >>> x = torch.linspace(-1, 1, 20); y = 2 * x
    >>> guide = AutoNormal(model)
    >>> pyro.clear_param_store(); _ = guide(x, y)
    >>> idata = to_inference_data(model, guide, x, y, num_samples=50, rng_seed=0)
    >>> idata.log_likelihood["y"].dims
    ('chain', 'draw', 'data')
    >>> idata.posterior["w"].shape
    (1, 50)
    >>> lpd = log_predictive_density(idata)
    >>> lpd.per_row.shape, bool(abs(lpd.total - lpd.per_row.sum()) < 1e-9)
    ((20,), True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from .core.inference_data import arviz_major, build_groups, make_container
from .core.plain_model import HandlerLeakError, unwrap

__all__ = [
    "HandlerLeakError",
    "PredictiveDensity",
    "load",
    "log_mean_exp",
    "log_predictive_density",
    "save",
    "test_metrics",
    "to_inference_data",
    "unwrap",
]


# ----------------------------------------------------------------------------- backend


def _detect_backend(
    model: Callable[..., Any], guide_or_samples: Any, x_test: Any, backend: str | None
) -> str:
    if backend is not None:
        if backend not in ("pyro", "numpyro"):
            raise ValueError(f"backend must be 'pyro' or 'numpyro'; got {backend!r}")
        return backend
    obj = guide_or_samples
    if isinstance(obj, tuple):
        return "numpyro"  # (guide, params)
    mod = type(obj).__module__
    if mod.startswith("numpyro"):
        return "numpyro"
    if mod.startswith("pyro.") or mod == "pyro":
        return "pyro"
    try:
        import torch
    except ImportError:  # pragma: no cover - numpyro-only install
        return "numpyro"
    if isinstance(obj, torch.nn.Module) or isinstance(model, torch.nn.Module):
        return "pyro"
    if isinstance(obj, dict) and obj:
        v = next(iter(obj.values()))
        if isinstance(v, torch.Tensor):
            return "pyro"
        if type(v).__module__.startswith("jax"):
            return "numpyro"
    if isinstance(x_test, torch.Tensor):
        return "pyro"
    if type(x_test).__module__.startswith("jax"):
        return "numpyro"
    raise ValueError(
        "cannot tell whether this is a Pyro or a NumPyro model from the inputs; pass backend='pyro' or 'numpyro'"
    )


def _adapter(backend: str) -> ModuleType:
    if backend == "pyro":
        from .pyro import diagnostics as pyro_adapter

        return pyro_adapter
    from .numpyro import diagnostics as numpyro_adapter

    return numpyro_adapter


def _is_mcmc(obj: object) -> bool:
    mod = type(obj).__module__
    return mod.startswith(("pyro.infer.mcmc", "numpyro.infer.mcmc")) and hasattr(obj, "get_samples")


def _split_guide(
    guide_or_samples: Any, params: Mapping[str, Any] | None, group_by_chain: bool
) -> tuple[Callable[..., Any] | None, Mapping[str, Any] | None, dict[str, Any] | None, int]:
    """-> (guide, params, samples dict or None, chains) for anything but an MCMC object."""
    obj = guide_or_samples
    if isinstance(obj, tuple):
        if len(obj) != 2:
            raise ValueError("pass a NumPyro guide as (guide, params)")
        return obj[0], obj[1], None, 1
    if isinstance(obj, dict):
        if not obj:
            raise ValueError("the posterior samples dict is empty")
        chains = 1
        if group_by_chain:
            shapes = {k: tuple(np.shape(v))[:2] for k, v in obj.items()}
            if len(set(shapes.values())) != 1:
                raise ValueError(
                    f"group_by_chain=True needs every site as [chain, draw, ...]; got {shapes}"
                )
            chains = int(next(iter(shapes.values()))[0])
            obj = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in obj.items()}
        sizes = {k: int(np.shape(v)[0]) if np.ndim(v) else None for k, v in obj.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ValueError(
                f"every site of the samples needs the same number of draws along axis 0; got {sizes}"
            )
        return None, params, obj, chains
    if not callable(obj):
        raise TypeError(
            "guide_or_samples must be a guide, a (guide, params) pair, a dict of samples or an MCMC object; "
            f"got {type(obj).__name__}"
        )
    return obj, params, None, 1


def _model_args(
    x: Any, y: Any, obs_kwarg: str | None, model_kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The model's call ``model(*args, **kwargs)`` with the test data."""
    if obs_kwarg is None:
        return (x, y), dict(model_kwargs)
    return (x,), {**model_kwargs, obs_kwarg: y}


# ----------------------------------------------------------------------------- public


def to_inference_data(
    model: Callable[..., Any],
    guide_or_samples: Any,
    x_test: Any,
    y_test: Any,
    num_samples: int = 500,
    *,
    params: Mapping[str, Any] | None = None,
    backend: str | None = None,
    obs_kwarg: str | None = "y",
    model_kwargs: Mapping[str, Any] | None = None,
    group_by_chain: bool = False,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, list[str]] | None = None,
    rng_seed: int | None = 0,
    progress: bool = False,
    same_rows: bool = False,
) -> Any:
    """ArviZ object for ``model`` on ``(x_test, y_test)`` under a posterior.

    :param model: the Pyro or NumPyro model, called as ``model(x, y=y, **model_kwargs)``
        (``obs_kwarg=None``: ``model(x, y, ...)``). An outer pyro_mixup handler
        wrapper is stripped; a handler active at run time raises :class:`HandlerLeakError`.
    :param guide_or_samples: a Pyro guide (its parameters in the param store);
        a NumPyro guide with ``params=`` (or a ``(guide, params)`` pair); a dict of
        posterior samples ``{site: array[draw, ...]}`` (``[chain, draw, ...]`` with
        ``group_by_chain=True``); or a Pyro / NumPyro ``MCMC`` object (its chains
        and its per-draw statistics, as ``sample_stats``, are kept). From samples,
        only the latent sites are used: deterministic and observed sites are
        recomputed on the test data; a key that is no site of the model, or a
        latent without draws, is refused.
    :param x_test: the inputs the log-likelihood and the predictive checks use.
    :param y_test: the observations they score.
    :param num_samples: draws from a guide (samples and MCMC keep all their draws).
    :param backend: "pyro" or "numpyro"; default: detected from the inputs.
    :param coords: override coordinates.
    :param dims: override dim names (``dims={site: [names]}``).
    :param rng_seed: seed for the guide draws, the embedding noise and the
        predictive draws (the global RNG state is left as it was); None: no seeding.
    :param same_rows: ``x_test`` are the rows the samples were fitted on (LOO on the
        training data): posterior draws of per-row latents are then carried over.
        Otherwise samples of a latent in the observations' plate are refused.
    :returns: ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x)
        with groups posterior, posterior_predictive, log_likelihood, observed_data,
        and sample_stats from an MCMC object. Deterministic sites in ``posterior``
        hold their values on the test inputs.

    Every posterior draw runs the model once: with an :func:`~pyro_mixup.embed`
    layer the embedding noise is drawn afresh per draw, so log-mean-exp over
    the draws marginalises both the weights and the embedding noise.
    """
    if y_test is None:
        raise ValueError(
            "to_inference_data needs y_test: the log-likelihood is of the observed test data"
        )
    model = unwrap(model)
    backend = _detect_backend(model, guide_or_samples, x_test, backend)
    adapter = _adapter(backend)
    sample_stats = None
    if _is_mcmc(guide_or_samples):
        samples, chains = adapter.mcmc_draws(guide_or_samples)
        sample_stats = adapter.mcmc_sample_stats(guide_or_samples)
        guide = None
    else:
        guide, params, samples, chains = _split_guide(guide_or_samples, params, group_by_chain)
    if guide is not None:
        guide = unwrap(guide)
    if backend == "pyro":
        import torch

        if params is not None:
            raise ValueError(
                "params= is for NumPyro guides; a Pyro guide keeps its parameters in the param store"
            )
        as_tensor = lambda v: (
            v
            if v is None or isinstance(v, torch.Tensor)
            else torch.as_tensor(np.asarray(v), dtype=torch.get_default_dtype())
        )
        args, kwargs = _model_args(
            as_tensor(x_test), as_tensor(y_test), obs_kwarg, model_kwargs or {}
        )
        if samples is not None:
            samples = {
                k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
                for k, v in samples.items()
            }
        runs = adapter.run_test_model(
            model, guide, samples, args, kwargs, num_samples, rng_seed, progress, same_rows
        )
    else:
        import jax.numpy as jnp

        if guide is not None and params is None:
            raise ValueError(
                "a NumPyro guide needs its fitted parameters: pass params=svi_result.params"
            )
        args, kwargs = _model_args(x_test, y_test, obs_kwarg, model_kwargs or {})
        if samples is not None:
            samples = {k: jnp.asarray(v) for k, v in samples.items()}
        runs = adapter.run_test_model(
            model, guide, params, samples, args, kwargs, num_samples, rng_seed, same_rows
        )
    if not runs.log_likelihood:
        raise ValueError("the model has no observed site when called with y_test: nothing to score")
    attrs = {
        "backend": backend,
        "inference": "samples" if samples is not None else "guide",
        "created_by": "pyro_mixup.diagnostics.to_inference_data",
    }
    groups = build_groups(
        runs, chains=chains, coords=coords, dims=dims, attrs=attrs, sample_stats=sample_stats
    )
    return make_container(groups)


def save(idata: Any, path: str | os.PathLike[str]) -> str:
    """Write to NetCDF (ArviZ 0.x ``InferenceData`` or 1.x ``DataTree``)."""
    path = os.fspath(path)
    idata.to_netcdf(path)
    return path


def load(path: str | os.PathLike[str]) -> Any:
    """Read what :func:`save` wrote, with whichever ArviZ is installed."""
    import arviz as az

    if arviz_major() < 1 and hasattr(az, "from_netcdf"):
        return az.from_netcdf(os.fspath(path))
    import xarray as xr

    return xr.open_datatree(os.fspath(path))


# ----------------------------------------------------------------------------- metrics


def log_mean_exp(a: ArrayLike, axis: int = 0) -> np.ndarray:
    """``log(mean(exp(a), axis))`` without overflow, in float64."""
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.mean(np.exp(a - m), axis=axis))


class PredictiveDensity(NamedTuple):
    """A test set's log predictive density (see :func:`log_predictive_density`)."""

    total: float  #: sum over test rows of ``per_row``
    mean: float  #: mean over test rows (``-mean`` is the test NLL)
    per_row: np.ndarray  #: ``log mean_s p(y_i | draw s)``, the observation shape
    num_draws: int


def log_predictive_density(idata: Any, var_name: str | None = None) -> PredictiveDensity:
    """The held-out log predictive density: per test row ``log (1/S) sum_s p(y_i | draw s)``
    over all chains and draws, its sum and its mean.

    This is the measure for a test set: a Monte Carlo average of the posterior
    predictive density at data the model never saw. ``az.loo`` on the same
    log-likelihood answers another question — it importance-samples to
    approximate leaving each row out of the *training* posterior — and on test
    rows its Pareto k is often high (the draws were never conditioned on those
    rows) and its ranking is not to be trusted.

    Example::

        >>> import numpy as np, xarray as xr
        >>> ll = np.log([[[0.5, 0.1], [0.3, 0.1]]])          # 1 chain, 2 draws, 2 rows
        >>> lpd = log_predictive_density({"log_likelihood": xr.Dataset({"y": (("chain", "draw", "data"), ll)})})
        >>> np.round(np.exp(lpd.per_row), 6).tolist(), lpd.num_draws
        ([0.4, 0.1], 2)
    """
    ll_group = idata["log_likelihood"]
    name = var_name or _only(ll_group)
    ll = np.asarray(ll_group[name].values, dtype=np.float64)
    ll = ll.reshape((-1,) + ll.shape[2:])  # (chain, draw, ...) -> (draw, ...)
    if np.isnan(ll).any():
        raise ValueError(f"log_likelihood[{name!r}] holds NaN: the predictive density is undefined")
    per_row = log_mean_exp(ll, axis=0)
    return PredictiveDensity(float(per_row.sum()), float(per_row.mean()), per_row, int(ll.shape[0]))


def test_metrics(idata: Any, var_name: str | None = None, interval: float = 0.9) -> dict[str, Any]:
    """Test-set metrics from :func:`to_inference_data`'s output.

    - ``nll``: mean over observations of ``-log mean_s p(y_i | draw s)``
      (``-log_predictive_density(idata).mean``);
    - ``rmse``: of the posterior-predictive mean;
    - ``coverage``: fraction of ``y_i`` inside the central ``interval`` of the
      posterior-predictive draws;
    - ``pit``: per-observation probability-integral transform values (from the
      predictive draws), for calibration plots.
    """
    name = var_name or _only(idata["log_likelihood"])
    lpd = log_predictive_density(idata, name)
    pp = np.asarray(idata["posterior_predictive"][name].values, dtype=np.float64)
    pp = pp.reshape((-1,) + pp.shape[2:])
    obs = np.asarray(idata["observed_data"][name].values, dtype=np.float64)
    mean = pp.mean(0)
    lo, hi = np.quantile(pp, [(1 - interval) / 2, (1 + interval) / 2], axis=0)
    pit = (pp < obs).mean(0) + 0.5 * (pp == obs).mean(0)
    return {
        "nll": -lpd.mean,
        "rmse": float(math.sqrt(np.mean((mean - obs) ** 2))),
        "coverage": float(np.mean((obs >= lo) & (obs <= hi))),
        "interval": interval,
        "num_draws": lpd.num_draws,
        "num_obs": int(lpd.per_row.size),
        "pit": pit.ravel().tolist(),
    }


# not a pytest test despite the name (an attribute functions do not declare)
test_metrics.__test__ = False  # type: ignore[attr-defined]


def _only(ds: Any) -> str:
    names = list(ds.data_vars)
    if len(names) != 1:
        raise ValueError(f"several observed sites {names}: pass var_name=")
    return names[0]
