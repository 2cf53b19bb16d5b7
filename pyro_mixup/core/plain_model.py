"""Diagnostics score the plain model: strip outer mixing wrappers, refuse active mixing handlers.

A model wrapped in ``probmix`` / ``mixup`` (Pyro or NumPyro) scores pooled
densities on mixed targets, which is a training objective, not a predictive
density. Both backends' diagnostics use these checks; they look at handler
objects only through the module that defines their class, so no torch or JAX
is imported here.

Example::

    >>> def model(x, y=None):
    ...     pass
    >>> unwrap(model) is model
    True
    >>> refuse_active_handlers([object()])  # no mixing handler on this stack: nothing raised
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "LEAK_MESSAGE",
    "HandlerLeakError",
    "is_mixing_handler",
    "refuse_active_handlers",
    "unwrap",
]

# The modules whose messengers mix (a Pyro and a NumPyro one).
_MIXING_HANDLER_MODULES = ("pyro_mixup.pyro.handlers", "pyro_mixup.numpyro.handlers")


class HandlerLeakError(RuntimeError):
    """A pyro_mixup handler was active while diagnostics ran the model."""


LEAK_MESSAGE = (
    "a pyro_mixup handler ({name}) is active while the model runs for diagnostics or prediction: the "
    "log-likelihood would be that of pooled densities on mixed targets, not the model's "
    "predictive density. Pass the plain model (outer probmix(model)/mixup(model) wrappers "
    "are stripped for you) and call to_inference_data or marginal_predictive outside any "
    "`with probmix():` block."
)


def is_mixing_handler(handler: object) -> bool:
    """True for a pyro_mixup mixing handler (a Pyro or NumPyro messenger)."""
    return type(handler).__module__ in _MIXING_HANDLER_MODULES


def refuse_active_handlers(stack: Iterable[object]) -> None:
    """Raise :class:`HandlerLeakError` if a mixing handler is on ``stack`` (Pyro's or NumPyro's)."""
    for handler in stack:
        if is_mixing_handler(handler):
            raise HandlerLeakError(LEAK_MESSAGE.format(name=type(handler).__name__))


def unwrap(model: Callable[..., Any]) -> Callable[..., Any]:
    """Strip outer pyro_mixup handler wrappers (``probmix(model)``, ``mixup(model)``,
    Pyro or NumPyro) and return the plain model. Other handlers are kept."""
    while is_mixing_handler(getattr(model, "mixup_handler", model)):
        wrapped = getattr(model, "__wrapped__", None)
        if not callable(wrapped):
            break
        model = wrapped
    return model
