"""ArviZ diagnostics for Pyro and NumPyro models trained with or without our handlers.

:func:`to_inference_data` turns a model plus a fitted guide (SVI) or posterior
samples (MCMC) into an ArviZ object with the groups ``posterior``,
``posterior_predictive``, ``log_likelihood`` (one value per observation and
draw, for LOO / WAIC / ``az.compare``) and ``observed_data``; dims are named
after the model's plates.

The log-likelihood always comes from the **plain** model. A model wrapped in
:func:`pyro_mixup.handlers.probmix` / :func:`~pyro_mixup.handlers.mixup` (or
their NumPyro twins) scores pooled densities on mixed targets, which is a
training objective, not a predictive density:

- an outer wrapper (``probmix(model, ...)``, ``mixup(model, ...)``) is stripped
  (see :func:`unwrap`), so passing the model you trained is fine;
- a handler still active while the model runs (an enclosing ``with probmix():``,
  or one applied inside the model's own code) raises :class:`HandlerLeakError`.

Works with ArviZ 0.x (returns ``arviz.InferenceData``) and with ArviZ 1.x,
where there is no Pyro converter (returns an ``xarray.DataTree`` with the same
groups): the groups are built here as ``xarray.Dataset`` objects.

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
"""

from __future__ import annotations

import contextlib
import functools
import math
import os

import numpy as np

__all__ = [
    "HandlerLeakError",
    "to_inference_data",
    "unwrap",
    "save",
    "load",
    "test_metrics",
    "log_mean_exp",
]


class HandlerLeakError(RuntimeError):
    """A pyro_mixup handler was active while diagnostics ran the model."""


_LEAK_MSG = (
    "a pyro_mixup handler ({name}) is active while the model runs for diagnostics: the "
    "log-likelihood would be that of pooled densities on mixed targets, not the model's "
    "predictive density. Pass the plain model (outer probmix(model)/mixup(model) wrappers "
    "are stripped for you) and call to_inference_data outside any `with probmix():` block."
)


_HANDLER_MODULES = ("pyro_mixup.pyro.handlers", "pyro_mixup.numpyro.handlers")


def _is_ours(handler) -> bool:
    """True for a pyro_mixup mixing handler (a Pyro or NumPyro messenger)."""
    return type(handler).__module__ in _HANDLER_MODULES


def _refuse_active_handlers(stack) -> None:
    """Raise if a pyro_mixup handler is on the (Pyro or NumPyro) handler stack."""
    for h in stack:
        if _is_ours(h):
            raise HandlerLeakError(_LEAK_MSG.format(name=type(h).__name__))


# ----------------------------------------------------------------------------- backend


def _detect_backend(model, guide_or_samples, x_test, backend):
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


def unwrap(model):
    """Strip outer pyro_mixup handler wrappers (``probmix(model)``, ``mixup(model)``,
    Pyro or NumPyro) and return the plain model. Other handlers are kept."""
    while _is_ours(getattr(model, "mixup_handler", model)) and callable(getattr(model, "__wrapped__", None)):
        model = model.__wrapped__
    return model


# ----------------------------------------------------------------------------- dims


def _site_dims(name, shape, frames, n_batch, user_dims):
    """Dim names for a value of ``shape`` whose first ``n_batch`` dims are batch dims."""
    if user_dims and name in user_dims:
        dims = list(user_dims[name])
        if len(dims) != len(shape):
            raise ValueError(f"dims[{name!r}] has {len(dims)} names for a value of shape {tuple(shape)}")
        return dims
    by_dim = {f[1]: f[0] for f in frames}
    dims = []
    k = 0
    for i in range(len(shape)):
        if i < n_batch and (i - n_batch) in by_dim:
            dims.append(by_dim[i - n_batch])
        else:
            dims.append(f"{name}_dim_{k}")
            k += 1
    return dims


def _frames(site):
    out = []
    for f in site["cond_indep_stack"]:
        if f.dim is None or f.name in ("num_particles_vectorized", "_num_particles_vectorized"):
            continue
        out.append((f.name, f.dim, f.size))
    return out


# ----------------------------------------------------------------------------- Pyro


def _pyro_detector():
    from pyro.poutine.messenger import Messenger
    from pyro.poutine.runtime import _PYRO_STACK

    class _LeakDetector(Messenger):
        def _process_message(self, msg):
            _refuse_active_handlers(_PYRO_STACK)

    return _LeakDetector()


def _pyro_run(model, guide, samples, x, y, num_samples, obs_kw, model_kwargs, rng_seed, progress):
    import torch
    from pyro import poutine
    from pyro.poutine.runtime import _PYRO_STACK
    from pyro.poutine.util import prune_subsample_sites

    from .pyro.distributions import PairScore

    _refuse_active_handlers(_PYRO_STACK)

    def as_tensor(v):
        if v is None or isinstance(v, torch.Tensor):
            return v
        return torch.as_tensor(np.asarray(v), dtype=torch.get_default_dtype())

    x, y = as_tensor(x), as_tensor(y)

    def call(fn, y_value):
        kwargs = dict(model_kwargs)
        if obs_kw is None:
            return fn(x, y_value, **kwargs)
        kwargs[obs_kw] = y_value
        return fn(x, **kwargs)

    rng = torch.random.fork_rng() if rng_seed is not None else contextlib.nullcontext()
    with rng, torch.no_grad():
        if rng_seed is not None:
            torch.manual_seed(rng_seed)
        if samples is not None:
            num_draws = next(iter(samples.values())).shape[0]
        else:
            num_draws = num_samples
        latent, det, ll, pp = {}, {}, {}, {}
        info = {}
        it = range(num_draws)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="posterior draws", leave=False)
        for s in it:
            if samples is not None:
                draw = {k: v[s] for k, v in samples.items()}
            else:
                gtr = poutine.trace(guide).get_trace(*((x,) if obs_kw is not None else (x, y)),
                                                      **({obs_kw: y} if obs_kw else {}), **model_kwargs)
                gtr = prune_subsample_sites(gtr)
                draw = {
                    n: site["value"]
                    for n, site in gtr.nodes.items()
                    if site["type"] == "sample" and not site["is_observed"]
                }
            tr = poutine.trace(poutine.condition(model, data=draw))
            with _pyro_detector():
                call(tr, y)
            tr = prune_subsample_sites(tr.trace)
            for name, site in tr.nodes.items():
                if site["type"] != "sample":
                    continue
                fn = site["fn"]
                if isinstance(fn, PairScore) or isinstance(getattr(fn, "base_dist", None), PairScore):
                    raise HandlerLeakError(_LEAK_MSG.format(name=type(fn).__name__))
                if site["infer"].get("_deterministic"):
                    det.setdefault(name, []).append(site["value"].detach().cpu().numpy())
                    info.setdefault(name, (_frames(site), site["value"].dim()))
                elif name in draw:
                    latent.setdefault(name, []).append(site["value"].detach().cpu().numpy())
                    info.setdefault(name, (_frames(site), len(fn.batch_shape)))
                elif site["is_observed"]:
                    lp = fn.log_prob(site["value"])
                    ll.setdefault(name, []).append(lp.detach().cpu().numpy())
                    pp.setdefault(name, []).append(fn.sample().detach().cpu().numpy())
                    info.setdefault(name, (_frames(site), len(fn.batch_shape), site["value"].detach().cpu().numpy()))
                else:
                    # a latent the guide / samples did not cover: drawn from the prior
                    latent.setdefault(name, []).append(site["value"].detach().cpu().numpy())
                    info.setdefault(name, (_frames(site), len(fn.batch_shape)))
    return latent, det, ll, pp, info


# ----------------------------------------------------------------------------- NumPyro


def _numpyro_run(model, guide, params, samples, x, y, num_samples, obs_kw, model_kwargs, rng_seed):
    import jax
    import jax.numpy as jnp
    from numpyro import handlers
    from numpyro.infer import Predictive
    from numpyro.primitives import Messenger, _PYRO_STACK

    _refuse_active_handlers(_PYRO_STACK)

    class _LeakDetector(Messenger):
        def process_message(self, msg):
            _refuse_active_handlers(_PYRO_STACK)

    def call(fn, y_value):
        kwargs = dict(model_kwargs)
        if obs_kw is None:
            return fn(x, y_value, **kwargs)
        kwargs[obs_kw] = y_value
        return fn(x, **kwargs)

    key = jax.random.PRNGKey(0 if rng_seed is None else rng_seed)
    k_post, k_run = jax.random.split(key)

    # the model's structure: which sites are latent, observed, deterministic
    with _LeakDetector():
        proto = handlers.trace(handlers.seed(model, k_run)).get_trace(
            *((x,) if obs_kw is not None else (x, y)), **({obs_kw: y} if obs_kw else {}), **model_kwargs
        )
    latent_names = [n for n, s in proto.items() if s["type"] == "sample" and not s["is_observed"]]
    obs_names = [n for n, s in proto.items() if s["type"] == "sample" and s["is_observed"]]
    det_names = [n for n, s in proto.items() if s["type"] == "deterministic"]

    if samples is None:
        pred = Predictive(model, guide=guide, params=params, num_samples=num_samples, return_sites=latent_names)
        samples = pred(k_post, *((x,) if obs_kw is not None else (x, None)), **model_kwargs)
        samples = {k: v for k, v in samples.items() if k in latent_names}
    num_draws = next(iter(samples.values())).shape[0]

    def one(draw, k):
        k1, k2 = jax.random.split(k)
        m = handlers.substitute(handlers.seed(model, k1), data=draw)
        with _LeakDetector():
            tr = handlers.trace(m).get_trace(
                *((x,) if obs_kw is not None else (x, y)), **({obs_kw: y} if obs_kw else {}), **model_kwargs
            )
        ll, pp, det, lat = {}, {}, {}, {}
        for i, n in enumerate(obs_names):
            fn = tr[n]["fn"]
            ll[n] = fn.log_prob(tr[n]["value"])
            pp[n] = fn.sample(jax.random.fold_in(k2, i))
        for n in det_names:
            det[n] = tr[n]["value"]
        for n in latent_names:
            lat[n] = tr[n]["value"]
        return ll, pp, det, lat

    keys = jax.random.split(k_run, num_draws)
    ll, pp, det, lat = jax.vmap(one)(samples, keys)
    info = {}
    for n, s in proto.items():
        if n in obs_names:
            info[n] = (_frames(s), len(s["fn"].batch_shape), np.asarray(s["value"]))
        elif n in latent_names:
            info[n] = (_frames(s), len(s["fn"].batch_shape))
        elif n in det_names:
            info[n] = (_frames(s), jnp.ndim(s["value"]))
    conv = lambda d: {k: np.asarray(v) for k, v in d.items()}  # noqa: E731
    return conv(lat), conv(det), conv(ll), conv(pp), info


# ----------------------------------------------------------------------------- public


def _split_guide(guide_or_samples, params, group_by_chain):
    """-> (guide, params, samples dict or None, chains)."""
    obj = guide_or_samples
    mod = type(obj).__module__
    if mod.startswith(("pyro.infer.mcmc", "numpyro.infer.mcmc")) and hasattr(obj, "get_samples"):
        obj = obj.get_samples(group_by_chain=True)
        group_by_chain = True
    if isinstance(obj, tuple):
        if len(obj) != 2:
            raise ValueError("pass a NumPyro guide as (guide, params)")
        return obj[0], obj[1], None, 1
    if isinstance(obj, dict):
        if not obj:
            raise ValueError("the posterior samples dict is empty")
        if group_by_chain:
            first = next(iter(obj.values()))
            chains = int(first.shape[0])
            obj = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in obj.items()}
        else:
            chains = 1
        return None, params, obj, chains
    if not callable(obj):
        raise TypeError(f"guide_or_samples must be a guide, a (guide, params) pair, a dict of samples or an MCMC object; got {type(obj).__name__}")
    return obj, params, None, 1


def to_inference_data(
    model,
    guide_or_samples,
    x_test,
    y_test,
    num_samples: int = 500,
    *,
    params=None,
    backend: str | None = None,
    obs_kwarg: str | None = "y",
    model_kwargs: dict | None = None,
    group_by_chain: bool = False,
    coords: dict | None = None,
    dims: dict | None = None,
    rng_seed: int | None = 0,
    progress: bool = False,
):
    """ArviZ object for ``model`` on ``(x_test, y_test)`` under a posterior.

    :param model: the Pyro or NumPyro model, called as ``model(x, y=y, **model_kwargs)``
        (``obs_kwarg=None``: ``model(x, y, ...)``). An outer pyro_mixup handler
        wrapper is stripped; a handler active at run time raises :class:`HandlerLeakError`.
    :param guide_or_samples: a Pyro guide (its parameters in the param store);
        a NumPyro guide with ``params=`` (or a ``(guide, params)`` pair); a dict of
        posterior samples ``{site: array[draw, ...]}`` (``[chain, draw, ...]`` with
        ``group_by_chain=True``); or a Pyro / NumPyro ``MCMC`` object.
    :param x_test, y_test: the data the log-likelihood and the predictive checks use.
    :param num_samples: draws from a guide (samples dicts keep all their draws).
    :param backend: "pyro" or "numpyro"; default: detected from the inputs.
    :param coords, dims: override coordinates / dim names (``dims={site: [names]}``).
    :param rng_seed: seed for the guide draws, the embedding noise and the
        predictive draws (the global RNG state is left as it was); None: no seeding.
    :returns: ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x)
        with groups posterior, posterior_predictive, log_likelihood, observed_data.

    Every posterior draw runs the model once: with an :func:`~pyro_mixup.embed`
    layer the embedding noise is drawn afresh per draw, so log-mean-exp over
    the draws marginalises both the weights and the embedding noise.
    """
    if y_test is None:
        raise ValueError("to_inference_data needs y_test: the log-likelihood is of the observed test data")
    model = unwrap(model)
    model_kwargs = dict(model_kwargs or {})
    backend = _detect_backend(model, guide_or_samples, x_test, backend)
    guide, params, samples, chains = _split_guide(guide_or_samples, params, group_by_chain)
    if guide is not None:
        guide = unwrap(guide)
    if backend == "pyro":
        if params is not None:
            raise ValueError("params= is for NumPyro guides; a Pyro guide keeps its parameters in the param store")
        if samples is not None:
            import torch

            samples = {k: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for k, v in samples.items()}
        latent, det, ll, pp, info = _pyro_run(
            model, guide, samples, x_test, y_test, num_samples, obs_kwarg, model_kwargs, rng_seed, progress
        )
        latent = {k: np.stack(v) for k, v in latent.items()}
        det = {k: np.stack(v) for k, v in det.items()}
        ll = {k: np.stack(v) for k, v in ll.items()}
        pp = {k: np.stack(v) for k, v in pp.items()}
    else:
        if guide is not None and params is None:
            raise ValueError("a NumPyro guide needs its fitted parameters: pass params=svi_result.params")
        if samples is not None:
            import jax.numpy as jnp

            samples = {k: jnp.asarray(v) for k, v in samples.items()}
        latent, det, ll, pp, info = _numpyro_run(
            model, guide, params, samples, x_test, y_test, num_samples, obs_kwarg, model_kwargs, rng_seed
        )
    if not ll:
        raise ValueError("the model has no observed site when called with y_test: nothing to score")
    attrs = {
        "backend": backend,
        "inference": "samples" if samples is not None else "guide",
        "created_by": "pyro_mixup.diagnostics.to_inference_data",
    }
    return _build(latent, det, ll, pp, info, chains, coords or {}, dims or {}, attrs)


def _build(latent, det, ll, pp, info, chains, coords, user_dims, attrs):
    import xarray as xr

    def var(name, arr, n_batch):
        frames = info[name][0]
        arr = np.asarray(arr)
        draws = arr.shape[0] // chains
        arr = arr.reshape((chains, draws) + arr.shape[1:])
        names = _site_dims(name, arr.shape[2:], frames, n_batch, user_dims)
        return xr.DataArray(arr, dims=["chain", "draw"] + names)

    def dataset(d, n_batch_of):
        vars_ = {k: var(k, v, n_batch_of(k, v)) for k, v in d.items()}
        ds = xr.Dataset(vars_)
        return _with_coords(ds, info, coords)

    posterior = dataset({**latent, **det}, lambda k, v: info[k][1])
    log_lik = dataset(ll, lambda k, v: v.ndim - 1)
    ppc = dataset(pp, lambda k, v: info[k][1])
    obs_vars = {}
    for k in ll:
        frames, n_batch, value = info[k]
        names = _site_dims(k, value.shape, frames, n_batch, user_dims)
        obs_vars[k] = xr.DataArray(value, dims=names)
    observed = _with_coords(xr.Dataset(obs_vars), info, coords)
    groups = {
        "posterior": posterior,
        "posterior_predictive": ppc,
        "log_likelihood": log_lik,
        "observed_data": observed,
    }
    for ds in groups.values():
        ds.attrs.update(attrs)
    return _make_container(groups)


def _with_coords(ds, info, coords):
    new = {}
    for dim, size in ds.sizes.items():
        if dim in coords:
            new[dim] = np.asarray(coords[dim])
        else:
            new[dim] = np.arange(size)
    return ds.assign_coords(new)


def _arviz_major():
    import arviz as az

    try:
        return int(str(az.__version__).split(".")[0])
    except ValueError:  # pragma: no cover
        return 0


def _make_container(groups):
    import arviz as az

    if _arviz_major() < 1 and hasattr(az, "InferenceData"):
        return az.InferenceData(**groups)
    import xarray as xr  # ArviZ 1.x: a DataTree with one child per group

    return xr.DataTree.from_dict({f"/{k}": v for k, v in groups.items()})


def save(idata, path):
    """Write to NetCDF (ArviZ 0.x ``InferenceData`` or 1.x ``DataTree``)."""
    path = os.fspath(path)
    idata.to_netcdf(path)
    return path


def load(path):
    """Read what :func:`save` wrote, with whichever ArviZ is installed."""
    import arviz as az

    if _arviz_major() < 1 and hasattr(az, "from_netcdf"):
        return az.from_netcdf(os.fspath(path))
    import xarray as xr

    return xr.open_datatree(os.fspath(path))


# ----------------------------------------------------------------------------- metrics


def log_mean_exp(a, axis=0):
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.mean(np.exp(a - m), axis=axis))


def test_metrics(idata, var_name: str | None = None, interval: float = 0.9):
    """Test-set metrics from :func:`to_inference_data`'s output.

    - ``nll``: mean over observations of ``-log mean_s p(y_i | draw s)``
      (log-mean-exp over posterior draws, in the units of the observed data);
    - ``rmse``: of the posterior-predictive mean;
    - ``coverage``: fraction of ``y_i`` inside the central ``interval`` of the
      posterior-predictive draws;
    - ``pit``: per-observation probability-integral transform values (from the
      predictive draws), for calibration plots.
    """
    ll_group = idata["log_likelihood"]
    name = var_name or _only(ll_group)
    ll = np.asarray(ll_group[name].values, dtype=np.float64)
    ll = ll.reshape((-1,) + ll.shape[2:])
    lppd = log_mean_exp(ll, axis=0)
    pp = np.asarray(idata["posterior_predictive"][name].values, dtype=np.float64)
    pp = pp.reshape((-1,) + pp.shape[2:])
    obs = np.asarray(idata["observed_data"][name].values, dtype=np.float64)
    mean = pp.mean(0)
    lo, hi = np.quantile(pp, [(1 - interval) / 2, (1 + interval) / 2], axis=0)
    pit = (pp < obs).mean(0) + 0.5 * (pp == obs).mean(0)
    return {
        "nll": float(-lppd.mean()),
        "rmse": float(math.sqrt(np.mean((mean - obs) ** 2))),
        "coverage": float(np.mean((obs >= lo) & (obs <= hi))),
        "interval": interval,
        "num_draws": int(ll.shape[0]),
        "num_obs": int(lppd.size),
        "pit": pit.ravel().tolist(),
    }


test_metrics.__test__ = False  # not a pytest test despite the name


def _only(ds):
    names = list(ds.data_vars)
    if len(names) != 1:
        raise ValueError(f"several observed sites {names}: pass var_name=")
    return names[0]
