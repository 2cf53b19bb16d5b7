"""Pyro effect handlers for probabilistic mixup, in the style of ``pyro.poutine``.

- :func:`probmix` -- ProbMix: each observed likelihood becomes the log-linear
  pool of an example's density with its partner's. With ``at=`` -- M-ProbMix:
  the pool happens at an intermediate site (an :func:`~pyro_mixup.embed` layer
  or a latent sample site of the model or guide) instead.
- :func:`mixup` -- vanilla mixup (``at=`` the inputs) and manifold mixup
  (``at=`` a hidden layer), on tensors marked with :func:`~pyro_mixup.mixable`.

Each is a :class:`~pyro.poutine.messenger.Messenger`, usable as ``probmix(fn, ...)``
or as ``with probmix(...):``. The logic lives in
:class:`pyro_mixup.core.handler.MixingCore`; this module connects it to Pyro's
effect system (:class:`PyroEffects`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.condition_messenger import ConditionMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.replay_messenger import ReplayMessenger
from pyro.poutine.runtime import _PYRO_STACK

from ..core._types import Message
from ..core.docs import dress
from ..core.handler import PARTICLE_PLATES, MixingCore, called_from, runs_as_guide
from ..core.options import MixOptions
from . import random as torch_random
from .backend import BACKEND
from .distributions import PairedTarget, SoftLabelTarget

if TYPE_CHECKING:
    from pyro.distributions import TorchDistribution
    from pyro.poutine.indep_messenger import CondIndepStackFrame
    from pyro.poutine.runtime import Message as PyroMessage

__all__ = ["MixupMessenger", "ProbMixMessenger", "mixup", "probmix"]


def _inner(messenger: Messenger) -> list[Messenger]:
    """The handlers that process a message before ``messenger`` (entered after it)."""
    return _PYRO_STACK[_PYRO_STACK.index(messenger) + 1 :]


def _outer(messenger: Messenger) -> list[Messenger]:
    return _PYRO_STACK[: _PYRO_STACK.index(messenger)]


class PyroEffects:
    """Pyro's effect system, as :class:`~pyro_mixup.core.handler.MixingCore` uses it."""

    backend = BACKEND
    plate_example = "pyro.plate('data', n)"
    paired_target = PairedTarget
    soft_label_target = SoftLabelTarget
    size = staticmethod(torch_random.size)
    random_source = staticmethod(lambda options: torch_random.TorchRandom())
    staging = staticmethod(torch.jit.is_tracing)
    rsample = staticmethod(lambda msg, dist, index: dist.rsample())

    @staticmethod
    def frames(msg: Message) -> list[CondIndepStackFrame]:
        return [
            f
            for f in msg["cond_indep_stack"]
            if f.dim is not None and f.name not in PARTICLE_PLATES
        ]

    @staticmethod
    def plate_depth(msg: Message) -> int:
        return max((-f.dim for f in msg["cond_indep_stack"] if f.dim is not None), default=0)

    @staticmethod
    def carries_likelihood(msg: Message) -> bool:
        # pyro.deterministic records an observed Delta, pyro.factor an auxiliary
        # observed Unit, and obs_mask= an observed site masked out entirely:
        # none carries a likelihood of data to mix.
        if (
            msg["infer"].get("_deterministic")
            or msg["infer"].get("is_auxiliary")
            or msg["mask"] is False
        ):
            return False
        fn = msg["fn"]
        return not (type(fn) is MaskedDistribution and fn._mask is False)

    @staticmethod
    def split_mask(msg: Message) -> tuple[TorchDistribution, torch.Tensor | None]:
        fn = msg["fn"]
        mask: bool | torch.Tensor | None = None
        if type(fn) is MaskedDistribution:
            mask, fn = fn._mask, fn.base_dist
            if isinstance(mask, bool):  # Pyro keeps constant masks as Python bools
                mask = None if mask else torch.zeros(fn.batch_shape, dtype=torch.bool)
        site_mask = msg["mask"]
        if isinstance(site_mask, torch.Tensor):  # poutine.mask: taken over by the target
            mask = site_mask if mask is None else mask & site_mask
            msg["mask"] = None
        return fn, None if mask is None else mask.expand(fn.batch_shape)

    @staticmethod
    def remask(fn: TorchDistribution, mask: torch.Tensor) -> TorchDistribution:
        return fn.mask(mask)

    @staticmethod
    def conditioned_inside(messenger: Messenger, msg: Message) -> bool:
        name = msg["name"]
        return any(isinstance(h, ConditionMessenger) and name in h.data for h in _inner(messenger))

    @staticmethod
    def replayed_infer(messenger: Messenger, name: str) -> dict[str, Any] | None:
        for h in _outer(messenger):
            if isinstance(h, ReplayMessenger) and h.trace is not None and name in h.trace.nodes:
                return h.trace.nodes[name]["infer"]
        return None

    @staticmethod
    def in_mcmc() -> bool:
        # SVI runs the model replaying the guide (cheap to see); MCMC's potential never does
        if any(type(h) is ReplayMessenger for h in _PYRO_STACK):
            return False
        return called_from("pyro.infer.mcmc")

    @staticmethod
    def enumerated(msg: Message) -> bool:
        return msg["infer"].get("_enumerate_dim") is not None

    @staticmethod
    def runs_as_guide(messenger: Messenger) -> bool:
        return runs_as_guide(messenger, ("pyro.infer",))

    @staticmethod
    def inference_conditions() -> bool:
        # MCMC's potential and Predictive condition the model on posterior draws of its latents
        return called_from(
            "pyro.infer.mcmc",
            "pyro.infer.predictive",
            "pyro.infer.importance",
            "pyro.infer.discrete",
        )

    @staticmethod
    def is_real_support(support: torch.distributions.constraints.Constraint) -> bool:
        while isinstance(support, torch.distributions.constraints.independent):
            support = support.base_constraint
        return support is torch.distributions.constraints.real


EFFECTS = PyroEffects()


class _MixingMessenger(Messenger):
    kind = "?"
    at_type = "?"  # the message type of the sites at= names ("embed", "mixable")

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.core = MixingCore(self.kind, MixOptions(**options, arrays=BACKEND), EFFECTS)
        self._functional = False

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        self._functional = True  # entered by the wrapped function, not by a `with`
        return super().__call__(fn)

    def __enter__(self) -> _MixingMessenger:
        self.core.enter(self)
        out = super().__enter__()
        self.core.entered()
        return out

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        out = super().__exit__(exc_type, exc_value, traceback)
        self.core.exit(exc_type is not None, self._functional)
        return out

    # One dispatch per message instead of Messenger's getattr of a formatted
    # method name in both phases: this handler sees every param and plate message.
    def _process_message(self, msg: PyroMessage) -> None:
        kind = msg["type"]
        if kind == "sample":
            self.core.sample(msg)
        elif kind == self.at_type:
            getattr(self.core, kind)(msg)

    def _postprocess_message(self, msg: PyroMessage) -> None:
        if msg["type"] == "sample":
            self.core.sample_done(msg)


class ProbMixMessenger(_MixingMessenger):
    """ProbMix / M-ProbMix; see :func:`probmix`."""

    kind, at_type = "probmix", "embed"


class MixupMessenger(_MixingMessenger):
    """Vanilla and manifold mixup; see :func:`mixup`."""

    kind, at_type = "mixup", "mixable"


def _make_handler(messenger_cls: type[_MixingMessenger], example: str) -> Callable[..., Any]:
    """``handler(fn=None, **options)``: a messenger for ``with``, or ``fn``
    wrapped by one (keeping its ``__name__`` and ``__wrapped__``), as
    ``pyro.poutine``'s handlers do."""

    def handler(
        fn: Callable[..., Any] | None = None, **options: Any
    ) -> _MixingMessenger | Callable[..., Any]:
        if fn is not None and not callable(fn):
            raise ValueError(
                f"{fn!r} is not callable; did you mean to pass it as a keyword option?"
            )
        msngr = messenger_cls(**options)
        if fn is None:
            return msngr
        wrapped = functools.update_wrapper(msngr(fn), fn, updated=())
        wrapped.mixup_handler = msngr  # what diagnostics.unwrap strips
        return wrapped

    return dress(
        handler,
        messenger_cls.kind,
        module=__name__,
        library="Pyro",
        embed=":func:`~pyro_mixup.embed`",
        mixable=":func:`~pyro_mixup.mixable`",
        example=example,
        rng_key=None,
    )


probmix = _make_handler(
    ProbMixMessenger,
    """
Example::

    >>> import torch, pyro, pyro.distributions as dist
    >>> def model(x, y=None):
    ...     with pyro.plate("data", len(x)):
    ...         return pyro.sample("y", dist.Normal(x, 1.0), obs=y)
    >>> x, y = torch.tensor([1., 2., 3.]), torch.tensor([1., 2., 3.])
    >>> tr = pyro.poutine.trace(probmix(model, lam=0.5, perm=[2, 0, 1])).get_trace(x, y)
    >>> tr.nodes["y"]["fn"].loc   # each x_i pooled with its partner
    tensor([2.0000, 1.5000, 2.5000])
    >>> tr.nodes["y"]["value"]    # scored at the mixed target
    tensor([2.0000, 1.5000, 2.5000])
""",
)

mixup = _make_handler(
    MixupMessenger,
    """
Example::

    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyro_mixup import mixable
    >>> def model(x, y=None):
    ...     with pyro.plate("data", len(x)):
    ...         x = mixable("x", x)
    ...         return pyro.sample("y", dist.Normal(2 * x.squeeze(-1), 1.0), obs=y)
    >>> x, y = torch.tensor([[0.], [1.]]), torch.tensor([0., 2.])
    >>> tr = pyro.poutine.trace(mixup(model, at="x", lam=0.25, perm=[1, 0])).get_trace(x, y)
    >>> tr.nodes["y"]["fn"].loc, tr.nodes["y"]["value"]
    (tensor([1.5000, 0.5000]), tensor([1.5000, 0.5000]))
""",
)
