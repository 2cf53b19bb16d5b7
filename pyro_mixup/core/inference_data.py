"""Build ArviZ groups from what a test-time model run produced, for either backend.

The Pyro and NumPyro adapters (``pyro_mixup.{pyro,numpyro}.diagnostics``) run
the model once per posterior draw and hand over NumPy arrays in a
:class:`TestRuns`; everything after that is here, once: which posterior sites
may be substituted into the test-time model (:func:`latent_draws`), dim names
from plates, the ``posterior`` / ``log_likelihood`` / ``posterior_predictive`` /
``observed_data`` / ``sample_stats`` datasets, and the container (an
``arviz.InferenceData`` with ArviZ 0.x, an ``xarray.DataTree`` with ArviZ 1.x).
Imports NumPy and xarray, never torch or JAX (``ArviZ``'s ``io_pyro`` and
``io_numpyro`` share a builder the same way).

Example::

    >>> import numpy as np
    >>> runs = TestRuns(
    ...     posterior={"w": np.array([0.5, 1.0])},
    ...     log_likelihood={"y": np.log(np.full((2, 3), 0.25))},
    ...     posterior_predictive={"y": np.zeros((2, 3))},
    ...     observed_data={"y": np.ones(3)},
    ...     layouts={"w": SiteLayout((), 0), "y": SiteLayout((("data", -1),), 1)},
    ... )
    >>> groups = build_groups(runs, chains=1)
    >>> groups["log_likelihood"]["y"].dims
    ('chain', 'draw', 'data')
    >>> groups["posterior"]["w"].shape
    (1, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "ModelSites",
    "SiteLayout",
    "TestRuns",
    "arviz_major",
    "build_groups",
    "latent_draws",
    "make_container",
    "sample_stats_dataset",
]

# The group names, in ArviZ's order.
GROUPS = ("posterior", "posterior_predictive", "log_likelihood", "sample_stats", "observed_data")


@dataclass(frozen=True)
class SiteLayout:
    """Where a site's batch dims come from: ``plates`` as ``(name, dim)`` pairs
    (``dim`` negative, counted from the right of the batch shape) and the number
    of batch dims of one draw's value (the rest are event dims)."""

    plates: tuple[tuple[str, int], ...]
    batch_ndim: int


@dataclass(frozen=True)
class ModelSites:
    """The sites of one run of the model on the test inputs, by role."""

    latent: tuple[str, ...]
    deterministic: tuple[str, ...]
    observed: tuple[str, ...]


@dataclass
class TestRuns:
    """The test-time model's output, NumPy arrays with the draws along axis 0
    (``observed_data`` has no draw axis)."""

    __test__ = False  # not a pytest test class despite the name

    posterior: dict[str, np.ndarray]
    log_likelihood: dict[str, np.ndarray]
    posterior_predictive: dict[str, np.ndarray]
    observed_data: dict[str, np.ndarray]
    layouts: dict[str, SiteLayout] = field(default_factory=dict)


def flatten_chains(grouped: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """``({site: array[chain * draw, ...]}, chains)`` from an MCMC's ``get_samples(group_by_chain=True)``
    (Pyro's and NumPyro's MCMC share that API)."""
    if not isinstance(grouped, dict) or not grouped:
        raise ValueError(
            "the MCMC object has no samples of model sites: run it on a model (mcmc.run(...)) first"
        )
    chains = int(next(iter(grouped.values())).shape[0])
    return {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in grouped.items()}, chains


def latent_draws(samples: Mapping[str, Any], sites: ModelSites) -> dict[str, Any]:
    """The part of ``samples`` that may be substituted into the test-time model.

    Only latent sites carry over to new inputs. A deterministic site (``mu =
    w * x``) or an observed one (``y``) recorded at training time belongs to the
    training rows: substituted at test time it would replace the test rows'
    values (silently, when the sizes agree), so both are dropped and recomputed.
    A key that is no site of the model, or a latent site without draws, is
    refused: either would leave a latent drawn from its prior without a word.
    """
    if not sites.latent:
        raise ValueError(
            "the model has no latent sites when run on the test data: there is no posterior to draw from"
        )
    known = set(sites.latent) | set(sites.deterministic) | set(sites.observed)
    unknown = sorted(k for k in samples if k not in known)
    if unknown:
        raise ValueError(
            f"the posterior samples have sites {unknown} that the model does not have when run on the test "
            f"data (its latent sites: {list(sites.latent)}); remove them, or check that the model and the "
            "samples belong together"
        )
    missing = [k for k in sites.latent if k not in samples]
    if missing:
        raise ValueError(
            f"the posterior samples have no draws for the latent sites {missing}: they would be drawn from "
            "their priors. Pass draws of every latent site (mcmc.get_samples() has them), or a guide"
        )
    return {k: samples[k] for k in sites.latent}


def refuse_row_latents(
    sites: ModelSites, plates_of: Mapping[str, Sequence[str]], same_rows: bool
) -> None:
    """Posterior draws of a latent in the plate of the observations (one value per
    training row, e.g. a per-row scale) belong to the training rows: carried to test
    rows of the same number they would pair row i of one set with row i of the other,
    quietly. Refused unless the rows are the training rows (``same_rows=True``)."""
    if same_rows:
        return
    row_plates = {p for name in sites.observed for p in plates_of[name]}
    local = [name for name in sites.latent if set(plates_of[name]) & row_plates]
    if local:
        raise ValueError(
            f"the latent sites {local} have one value per row (they sit in the plate(s) "
            f"{sorted(row_plates)} of the observations): their posterior draws belong to the rows the "
            "posterior was fitted on, not to x_test. Score the training rows with same_rows=True (LOO), "
            "or make them global latents"
        )


def refuse_uncovered_latents(sites: ModelSites, drawn: Mapping[str, Any]) -> None:
    """A guide that draws no value for a latent leaves it to its prior at every draw."""
    missing = [name for name in sites.latent if name not in drawn]
    if missing:
        raise ValueError(
            f"the guide draws no value for the latent sites {missing}: they would be drawn from their priors "
            "at every posterior draw, and the log-likelihood would be conditional on those. Cover them in the "
            "guide; a discrete latent that TraceEnum_ELBO marginalised in training is not marginalised here: "
            "marginalise it in the model, or pass posterior samples of it (infer_discrete)"
        )


def fit_latent_shapes(
    draws: Mapping[str, Any], test_shapes: Mapping[str, Sequence[int]]
) -> dict[str, Any]:
    """``draws`` with each site's draw shaped as the site is in the test-time model.

    Leading singleton dims (``Predictive`` returns a scalar latent of a model
    with one plate as ``[draw, 1]``) are dropped. Any other difference is
    refused: a latent inside a data plate (one value per training row) cannot
    be carried to other rows, and without this check the substitution fails
    later with a bare broadcasting error, or broadcasts without one.
    """
    out = {}
    for name, value_shape in test_shapes.items():
        value_shape = tuple(value_shape)
        draw_shape = tuple(np.shape(draws[name]))[1:]
        if _strip_ones(draw_shape) != _strip_ones(value_shape):
            raise ValueError(
                f"the posterior draws of {name!r} have shape {draw_shape} per draw but the model run on the test "
                f"data gives {name!r} the shape {value_shape}. A latent with one value per training row "
                "(inside the data plate) cannot be carried over to other rows: score it on the training data, or "
                "make it a global latent"
            )
        value = draws[name]
        out[name] = (
            value
            if draw_shape == value_shape
            else value.reshape((np.shape(value)[0],) + value_shape)
        )
    return out


def _strip_ones(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


# ----------------------------------------------------------------------------- dims


def site_dims(
    name: str,
    shape: Sequence[int],
    layout: SiteLayout,
    user_dims: Mapping[str, Sequence[str]],
    batch_ndim: int | None = None,
) -> list[str]:
    """Dim names for a value of ``shape`` (no draw axis): plate names for batch
    dims under a plate, ``<name>_dim_<k>`` for the others; ``user_dims`` wins."""
    if name in user_dims:
        dims = list(user_dims[name])
        if len(dims) != len(shape):
            raise ValueError(
                f"dims[{name!r}] has {len(dims)} names for a value of shape {tuple(shape)}"
            )
        return dims
    n_batch = layout.batch_ndim if batch_ndim is None else batch_ndim
    by_dim = {dim: plate for plate, dim in layout.plates}
    dims, k = [], 0
    for i in range(len(shape)):
        if i < n_batch and (i - n_batch) in by_dim:
            dims.append(by_dim[i - n_batch])
        else:
            dims.append(f"{name}_dim_{k}")
            k += 1
    return dims


# ----------------------------------------------------------------------------- groups


def build_groups(
    runs: TestRuns,
    *,
    chains: int,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    attrs: Mapping[str, Any] | None = None,
    sample_stats: Mapping[str, Any] | None = None,
) -> dict[str, xr.Dataset]:
    """``{group: xarray.Dataset}`` from ``runs`` (draws split into ``chains`` equal chains)."""
    import xarray as xr

    coords, dims, attrs = dict(coords or {}), dict(dims or {}), dict(attrs or {})
    num_draws = _num_draws(runs)
    if num_draws % chains:
        raise ValueError(f"{num_draws} draws do not split into {chains} chains of equal length")
    draws = num_draws // chains

    def by_chain(name: str, arr: Any, batch_ndim: int | None = None) -> xr.DataArray:
        arr = np.asarray(arr)
        arr = arr.reshape((chains, draws) + arr.shape[1:])
        names = site_dims(name, arr.shape[2:], runs.layouts[name], dims, batch_ndim)
        return xr.DataArray(arr, dims=["chain", "draw"] + names)

    groups = {
        "posterior": xr.Dataset({k: by_chain(k, v) for k, v in runs.posterior.items()}),
        "posterior_predictive": xr.Dataset(
            {k: by_chain(k, v) for k, v in runs.posterior_predictive.items()}
        ),
        # every dim of a log-density is a batch dim: one value per observation
        "log_likelihood": xr.Dataset(
            {k: by_chain(k, v, np.ndim(v) - 1) for k, v in runs.log_likelihood.items()}
        ),
        "observed_data": xr.Dataset(
            {
                k: xr.DataArray(v, dims=site_dims(k, np.shape(v), runs.layouts[k], dims))
                for k, v in runs.observed_data.items()
            }
        ),
    }
    if sample_stats:
        groups["sample_stats"] = sample_stats_dataset(sample_stats, chains, draws)
    out = {}
    for name in GROUPS:
        if name in groups:
            ds = _with_coords(groups[name], coords)
            ds.attrs.update(attrs)
            out[name] = ds
    return out


def sample_stats_dataset(stats: Mapping[str, Any], chains: int, draws: int) -> xr.Dataset:
    """A ``sample_stats`` dataset from ``{stat: array[chain, draw, ...]}`` (ArviZ's names:
    ``diverging``, ``energy``, ``lp``, ``step_size``, ``tree_depth``, ...)."""
    import xarray as xr

    variables = {}
    for name, value in stats.items():
        value = np.asarray(value)
        if value.shape[:2] != (chains, draws):
            raise ValueError(
                f"sample_stats[{name!r}] has shape {value.shape}, not (chains, draws, ...) = ({chains}, {draws}, ...)"
            )
        variables[name] = xr.DataArray(
            value, dims=["chain", "draw"] + [f"{name}_dim_{k}" for k in range(value.ndim - 2)]
        )
    return xr.Dataset(variables)


def _num_draws(runs: TestRuns) -> int:
    sizes = {
        np.shape(v)[0]
        for d in (runs.posterior, runs.log_likelihood, runs.posterior_predictive)
        for v in d.values()
    }
    if len(sizes) != 1:
        raise ValueError(f"the groups disagree on the number of draws: {sorted(sizes)}")
    return sizes.pop()


def _with_coords(ds: xr.Dataset, coords: Mapping[Any, Any]) -> xr.Dataset:
    """Integer coordinates for every dim, or the user's ``coords``."""
    return ds.assign_coords(
        {
            dim: np.asarray(coords[dim]) if dim in coords else np.arange(size)
            for dim, size in ds.sizes.items()
        }
    )


# ----------------------------------------------------------------------------- container


def arviz_major() -> int:
    """The installed ArviZ's major version (0 or 1)."""
    import arviz as az

    try:
        return int(str(az.__version__).split(".")[0])
    except ValueError:  # pragma: no cover - a version string we cannot read
        return 0


def make_container(groups: Mapping[str, xr.Dataset]) -> Any:
    """``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x) of ``groups``
    (``Any`` to the type checker: which one depends on the ArviZ installed)."""
    import arviz as az

    if arviz_major() < 1 and hasattr(az, "InferenceData"):
        # the keys are group names (GROUPS), never InferenceData's own keyword arguments
        return az.InferenceData(**groups)  # type: ignore[arg-type]
    import xarray as xr  # ArviZ 1.x: a DataTree with one child per group

    return xr.DataTree.from_dict({f"/{k}": v for k, v in groups.items()})
