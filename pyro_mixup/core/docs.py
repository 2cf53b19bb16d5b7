"""The handlers' docstrings, written once and filled in per backend (the
backend adds its name for ``at=`` sites and a runnable example)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .options import handler_signature, options_doc

_Handler = TypeVar("_Handler", bound=Callable[..., Any])

PROBMIX = """ProbMix (and, with ``at=``, M-ProbMix) as a {library} effect handler.

Without ``at``: each selected observed site's likelihood ``p(y | x_i)``
becomes the log-linear pool ``p(y|x_i)^lam p(y|x_j)^(1-lam)`` with the
example's partner ``j`` along the site's plate, scored on the target. With
``at="name"``: the pool happens at an {embed} layer or a latent sample site of
that name (in the model or the guide) and observed sites are scored on the
target without pooling again.

One draw of ``lam ~ Beta(alpha, alpha)`` and of the partners is made per
*entry* of the handler, at its first use, and shared by every site inside:
``probmix(model)`` draws once per model call; ``with probmix(...):`` around a
step draws once per step, shared by model and guide. A model and a guide
wrapped separately share the guide's draw when the model replays the fused
latent. Refused, with what to do instead: MCMC on a randomly drawn pool, a
handler entered outside a compiled step that runs the model, a latent fused in
the model but drawn unfused by the guide, a handler nested in itself.

{options}

{example}"""

MIXUP = """Vanilla mixup (``at=`` the inputs) or manifold mixup (``at=`` a hidden layer), as a {library} effect handler.

Replaces the {mixable} tensor named ``at`` by ``lam * t_i + (1 - lam) * t_j``
along the examples' plate and scores observed sites on the mixed target (for
class labels: ``lam*log p(y_i) + (1-lam)*log p(y_j)``, the usual mixup
cross-entropy). Draws and refusals as in ``probmix``.

{options}

{example}"""

AT = {
    "probmix": "fuse at this embed layer or latent sample site instead of at the likelihood.",
    "mixup": "the name of the mixable tensor to mix (required).",
}


def handler_doc(
    kind: str, *, library: str, embed: str, mixable: str, example: str, rng_key: str | None
) -> str:
    template = PROBMIX if kind == "probmix" else MIXUP
    options = options_doc(at=AT[kind], rng_key=rng_key)
    return template.format(
        library=library, embed=embed, mixable=mixable, options=options, example=example.strip("\n")
    )


def dress(
    handler: _Handler,
    kind: str,
    *,
    module: str,
    library: str,
    embed: str,
    mixable: str,
    example: str,
    rng_key: str | None,
) -> _Handler:
    """Name, docstring and signature of a backend's functional handler."""
    handler.__name__ = handler.__qualname__ = kind
    handler.__module__ = module
    handler.__doc__ = handler_doc(
        kind, library=library, embed=embed, mixable=mixable, example=example, rng_key=rng_key
    )
    # read by inspect.signature; functions do not declare the attribute
    handler.__signature__ = handler_signature(  # type: ignore[attr-defined]
        required_at=kind == "mixup", with_rng_key=rng_key is not None
    )
    return handler
