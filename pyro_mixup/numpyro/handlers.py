"""NumPyro effect handlers for probabilistic mixup, in the style of ``numpyro.handlers``.

- :func:`probmix` -- ProbMix: each observed likelihood becomes the log-linear
  pool of an example's density with its partner's. With ``at=`` -- M-ProbMix:
  the pool happens at an intermediate site (an :func:`~pyro_mixup.numpyro.embed`
  layer or a latent sample site of the model or guide) instead.
- :func:`mixup` -- vanilla mixup (``at=`` the inputs) and manifold mixup
  (``at=`` a hidden layer), on arrays marked with :func:`~pyro_mixup.numpyro.mixable`.

Same options and meaning as the Pyro handlers; the logic is the same object,
:class:`pyro_mixup.core.handler.MixingCore`, connected here to NumPyro's
effect system (:class:`NumPyroEffects`). Draws come from
``numpyro.prng_key()`` (see :mod:`pyro_mixup.numpyro.random`), so inside
``jax.jit(svi.update)`` every update draws afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as nd
from numpyro.distributions import Distribution
from numpyro.handlers import condition, replay
from numpyro.primitives import _PYRO_STACK, CondIndepStackFrame, Messenger

from ..core._types import Message
from ..core.docs import dress
from ..core.handler import PARTICLE_PLATES, MixingCore, called_from, runs_as_guide
from ..core.options import MixOptions
from ..core.pairing import PartnerTable
from .backend import BACKEND
from .distributions import PairedTarget, SoftLabelTarget
from .random import KeyedRandom

__all__ = ["MixupMessenger", "ProbMixMessenger", "mixup", "probmix"]

#: NumPyro's MCMC driver and kernels (any of them on the call stack means MCMC runs the model).
_MCMC_MODULES = (
    "numpyro.infer.mcmc",
    "numpyro.infer.hmc",
    "numpyro.infer.barker",
    "numpyro.infer.sa",
    "numpyro.infer.ensemble",
    "numpyro.infer.mixed_hmc",
)


def _plates(msg: Message) -> list[CondIndepStackFrame]:
    if msg["type"] == "sample":
        return msg["cond_indep_stack"]
    # numpyro.plate fills cond_indep_stack only for its own message types;
    # for embed / mixable read the plates on the handler stack.
    return [
        CondIndepStackFrame(h.name, h.dim, h.subsample_size)
        for h in _PYRO_STACK
        if isinstance(h, numpyro.plate)
    ]


class NumPyroEffects:
    """NumPyro's effect system, as :class:`~pyro_mixup.core.handler.MixingCore` uses it."""

    backend = BACKEND
    plate_example = "numpyro.plate('data', n)"
    paired_target = PairedTarget
    soft_label_target = SoftLabelTarget
    size = staticmethod(int)

    @staticmethod
    def random_source(options: MixOptions) -> KeyedRandom:
        table = options.pairing if isinstance(options.pairing, PartnerTable) else None
        return KeyedRandom(options.rng_key, table)

    @staticmethod
    def rsample(msg: Message, dist: Distribution, index: int) -> jax.Array:
        """Draw ``index`` of an embed layer's distribution, from the layer's own key."""
        key = msg["kwargs"].get("rng_key")
        if key is None:
            return msg["fn"](
                dist, rng_key=None
            )  # refuses, naming the layer: no seed around the model
        return dist.rsample(jax.random.fold_in(key, index))

    @staticmethod
    def frames(msg: Message) -> list[CondIndepStackFrame]:
        return [f for f in _plates(msg) if f.dim is not None and f.name not in PARTICLE_PLATES]

    @staticmethod
    def plate_depth(msg: Message) -> int:
        return max((-f.dim for f in _plates(msg) if f.dim is not None), default=0)

    @staticmethod
    def carries_likelihood(msg: Message) -> bool:
        # numpyro.factor sites (a Unit distribution, also added by NumPyro's own
        # reparameterisations) hold no observations, and an observed site
        # masked out entirely (mask=False, e.g. from obs_mask=) no likelihood.
        fn = msg["fn"]
        if msg["infer"].get("is_auxiliary") or isinstance(fn, nd.distribution.Unit):
            return False
        return not (type(fn) is nd.MaskedDistribution and fn._mask is False)

    @staticmethod
    def split_mask(msg: Message) -> tuple[Distribution, jax.Array | None]:
        fn = msg["fn"]
        if (
            type(fn) is not nd.MaskedDistribution or fn._mask is True
        ):  # a constant mask is a Python bool
            return (fn.base_dist if type(fn) is nd.MaskedDistribution else fn), None
        base = fn.base_dist
        return base, jnp.broadcast_to(jnp.asarray(fn._mask, dtype=bool), base.batch_shape)

    @staticmethod
    def remask(fn: Distribution, mask: jax.Array) -> Distribution:
        return fn.mask(mask)

    @staticmethod
    def conditioned_inside(messenger: Messenger, msg: Message) -> bool:
        for h in _PYRO_STACK[_PYRO_STACK.index(messenger) + 1 :]:
            if isinstance(h, condition):
                value = h.data.get(msg["name"]) if h.data is not None else h.condition_fn(msg)
                if value is not None:
                    return True
        return False

    @staticmethod
    def replayed_infer(messenger: Messenger, name: str) -> dict[str, Any] | None:
        for h in _PYRO_STACK[: _PYRO_STACK.index(messenger)]:
            if isinstance(h, replay) and name in h.trace:
                return h.trace[name]["infer"]
        return None

    @staticmethod
    def in_mcmc() -> bool:
        return called_from(*_MCMC_MODULES)

    @staticmethod
    def staging() -> bool:
        # inside jax.jit every new array is a tracer; under grad or vmap alone it is not
        return isinstance(jnp.zeros(()), jax.core.Tracer)

    @staticmethod
    def enumerated(msg: Message) -> bool:
        # numpyro.contrib.funsor's enum handler fills the value itself and marks it done
        return msg["infer"].get("enumerate") == "parallel" and msg.get("done", False)

    @staticmethod
    def runs_as_guide(messenger: Messenger) -> bool:
        return runs_as_guide(messenger, ("numpyro.infer",))

    @staticmethod
    def inference_conditions() -> bool:
        return False  # NumPyro's MCMC and Predictive substitute latents, they do not observe them

    @staticmethod
    def is_real_support(support: nd.constraints.Constraint) -> bool:
        while isinstance(support, nd.constraints.independent):
            support = support.base_constraint
        return support is nd.constraints.real


EFFECTS = NumPyroEffects()


class _MixingMessenger(Messenger):
    kind = "?"
    at_type = "?"  # the message type of the sites at= names ("embed", "mixable")

    def __init__(self, fn: Callable[..., Any] | None = None, **options: Any) -> None:
        self.core = MixingCore(self.kind, MixOptions(**options, arrays=BACKEND), EFFECTS)
        super().__init__(fn)

    def __enter__(self) -> _MixingMessenger:
        self.core.enter(self)
        super().__enter__()
        self.core.entered()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc_value, traceback)
        self.core.exit(exc_type is not None, self.fn is not None)

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "sample":
            self.core.sample(msg)
        elif msg["type"] == self.at_type:
            getattr(self.core, self.at_type)(msg)

    def postprocess_message(self, msg: Message) -> None:
        if msg["type"] == "sample":
            self.core.sample_done(msg)


class ProbMixMessenger(_MixingMessenger):
    """ProbMix / M-ProbMix; see :func:`probmix`."""

    kind, at_type = "probmix", "embed"


class MixupMessenger(_MixingMessenger):
    """Vanilla and manifold mixup; see :func:`mixup`."""

    kind, at_type = "mixup", "mixable"


_RNG_KEY = "a PRNG key for the draws instead of ``numpyro.prng_key()``; every entry then makes the same draw."


def _make_handler(
    messenger_cls: type[_MixingMessenger], example: str
) -> Callable[..., _MixingMessenger]:
    """``handler(fn=None, **options)``: the messenger itself, as in
    ``numpyro.handlers`` (it keeps ``fn``'s ``__name__`` and ``__wrapped__``)."""

    def handler(fn: Callable[..., Any] | None = None, **options: Any) -> _MixingMessenger:
        return messenger_cls(fn, **options)

    return dress(
        handler,
        messenger_cls.kind,
        module=__name__,
        library="NumPyro",
        embed=":func:`~pyro_mixup.numpyro.embed`",
        mixable=":func:`~pyro_mixup.numpyro.mixable`",
        example=example,
        rng_key=_RNG_KEY,
    )


probmix = _make_handler(
    ProbMixMessenger,
    """
**Example:**

.. doctest::

   >>> import jax.numpy as jnp
   >>> import numpyro, numpyro.distributions as dist
   >>> from numpyro.handlers import trace
   >>> def model(x, y=None):
   ...     with numpyro.plate("data", len(x)):
   ...         return numpyro.sample("y", dist.Normal(x, 1.0), obs=y)
   >>> x = y = jnp.array([1.0, 2.0, 3.0])
   >>> tr = trace(probmix(model, lam=0.5, perm=[2, 0, 1])).get_trace(x, y)
   >>> tr["y"]["fn"].loc      # each x_i pooled with its partner
   Array([2. , 1.5, 2.5], dtype=float32)
   >>> tr["y"]["value"]       # scored at the mixed target
   Array([2. , 1.5, 2.5], dtype=float32)

Under SVI a fresh ``lam`` and pairing are drawn every update from the SVI
key, inside ``jax.jit``:

.. doctest::

   >>> import jax
   >>> from numpyro.infer import SVI, Trace_ELBO
   >>> def model(x, y=None):
   ...     w = numpyro.param("w", 0.0)
   ...     with numpyro.plate("data", len(x)):
   ...         numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)
   >>> svi = SVI(probmix(model, alpha=0.4), lambda x, y: None,
   ...           numpyro.optim.Adam(0.1), Trace_ELBO())
   >>> x = jnp.linspace(-1, 1, 32)
   >>> state = svi.init(jax.random.key(0), x, 2 * x)
   >>> update = jax.jit(svi.update)
   >>> for _ in range(200):
   ...     state, loss = update(state, x, 2 * x)
   >>> round(float(svi.get_params(state)["w"]), 1)
   2.0
""",
)

mixup = _make_handler(
    MixupMessenger,
    """
**Example:**

.. doctest::

   >>> import jax.numpy as jnp
   >>> import numpyro, numpyro.distributions as dist
   >>> from numpyro.handlers import trace
   >>> from pyro_mixup.numpyro import mixable
   >>> def model(x, y=None):
   ...     with numpyro.plate("data", len(x)):
   ...         x = mixable("x", x)
   ...         return numpyro.sample("y", dist.Normal(2 * x.squeeze(-1), 1.0), obs=y)
   >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([0.0, 2.0])
   >>> tr = trace(mixup(model, at="x", lam=0.25, perm=[1, 0])).get_trace(x, y)
   >>> tr["y"]["fn"].loc, tr["y"]["value"]
   (Array([1.5, 0.5], dtype=float32), Array([1.5, 0.5], dtype=float32))
""",
)
