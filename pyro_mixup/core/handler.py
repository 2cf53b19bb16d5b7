"""The logic of a mixing handler, once for Pyro and NumPyro.

A :class:`MixingCore` is owned by each backend's messenger (composition: the
messenger forwards its messages and its entry and exit here). Per entry of the
handler it keeps fresh state (:class:`_Entry`): one draw of ``lam`` and the
partners, shared by every site inside. It decides which sites are treated,
along which plate examples are paired, what an observed site is scored on,
and it refuses the idioms that would run but compute something else than the
mixup objective. The messenger's effect system is reached only through the
adapter's :class:`~pyro_mixup.core.backend.Effects` hooks.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import pooling
from ._types import Array, Distribution, Message
from .draws import Draws
from .errors import MixupUsageError, UnsupportedDistributionError
from .families import Family
from .options import MixOptions
from .targets import along, mix_values, resolve_target

if TYPE_CHECKING:
    from types import FrameType

    from .backend import Effects, Frame

#: The key under which a fused latent site's draws are recorded in ``msg["infer"]``,
#: so that a model replaying the guide's value can check (and share) them.
DRAWS_KEY = "_pyro_mixup_draws"

_entry_ids = itertools.count()

#: (leaf class, family, target option, beta > 0) -> the target it resolves to
_LEAF_TARGETS: dict[tuple[type, Family, str | None, bool], str] = {}

#: Plates the libraries add around a whole model (vectorised ELBO particles,
#: Pyro's vectorised Predictive): never a plate over examples.
PARTICLE_PLATES = (
    "num_particles_vectorized",
    "_num_particles_vectorized",
    "_num_predictive_samples",
)


def called_from(*module_prefixes: str) -> bool:
    """Whether code of one of these modules is on the Python call stack (how a
    handler tells that an MCMC kernel is running the model: neither library
    marks its potential-energy evaluations on the handler stack)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(module_prefixes):
            return True
        frame = frame.f_back
    return False


def runs_as_guide(messenger: object, module_prefixes: tuple[str, ...]) -> bool:
    """Whether an inference routine of these modules (an ELBO, SVI, Predictive) is
    running the function that ``messenger`` wraps as its guide: its ``guide``
    (or ``self.guide``) is that function, possibly under other wrappers."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(module_prefixes):
            local = frame.f_locals
            for guide in (local.get("guide"), getattr(local.get("self"), "guide", None)):
                if _wrapped_by(guide, messenger):
                    return True
        frame = frame.f_back
    return False


def _wrapped_by(fn: object, messenger: object, depth: int = 8) -> bool:
    for _ in range(depth):
        if fn is None:
            return False
        if fn is messenger or getattr(fn, "mixup_handler", None) is messenger:
            return True
        fn = getattr(fn, "__wrapped__", None) or getattr(fn, "fn", None)
    return False


class _DrawsRecord:
    """What a fused latent site leaves in its trace node: whose draws they were."""

    __slots__ = ("draws", "entry", "name", "options", "replayed_by_model")

    def __init__(self, draws: Draws, options: MixOptions, entry: int, name: str) -> None:
        self.draws = draws
        self.options = options
        self.entry = entry
        self.name = name
        self.replayed_by_model = False


class _Entry:
    """The state of one entry of a handler (fresh every time it is entered)."""

    __slots__ = (
        "conditioned",
        "draws",
        "enumerated",
        "id",
        "latent",
        "messenger",
        "seen_any",
        "seen_at",
        "seen_sites",
        "staged",
        "treated",
    )

    def __init__(self, messenger: object, staged: bool) -> None:
        self.messenger = messenger
        self.draws: Draws | None = None
        self.seen_at = False
        self.seen_sites: set[str] = set()
        self.treated = 0
        self.conditioned: list[str] = []
        self.staged = staged
        self.seen_any = False
        self.id = next(_entry_ids)
        # sites this handler saw unobserved (to catch a condition outside it)
        self.latent: set[str] = set()
        self.enumerated: list[str] = []  # enumerated latents inside plates, seen so far


class MixingCore:
    """Site selection, plate choice, draws, targets and checks of ``probmix``
    (``kind="probmix"``) or ``mixup`` (``kind="mixup"``).

    :param kind: ``"probmix"`` or ``"mixup"``.
    :param options: the validated options.
    :param effects: the backend adapter's hooks into its effect system.
    """

    def __init__(self, kind: str, options: MixOptions, effects: Effects) -> None:
        if kind == "mixup" and options.at is None:
            raise ValueError(
                "mixup needs at='<name of a mixable tensor>' (the inputs for vanilla mixup, "
                "a hidden layer for manifold mixup)"
            )
        if options.pooling != "log-linear" and (kind != "probmix" or options.at is None):
            raise ValueError(
                f"pooling={options.pooling!r} fuses a pair's embedding densities: it is an option of "
                "probmix(at='<an embed layer>') (the likelihood is pooled log-linearly, as the paper does)"
            )
        self.kind = kind
        self.options = options
        self.effects = effects
        self.backend = effects.backend
        self.source = effects.random_source(options)
        self._entry: _Entry | None = None
        # the record of a guide latent this handler fused under an ELBO, until a model replays it
        self._fused_for_model: _DrawsRecord | None = None

    # --- entry and exit ---------------------------------------------------------
    def _current(self) -> _Entry:
        """The entry in progress (messages reach the core only while its messenger is entered)."""
        entry = self._entry
        assert entry is not None, f"a message reached the {self.kind} handler outside an entry"
        return entry

    def enter(self, messenger: object) -> None:
        if self._entry is not None:
            raise MixupUsageError(
                f"this {self.kind} handler is already active: a handler cannot be nested in itself "
                "(it would mix twice). Use one handler, or two separate ones on purpose."
            )
        self._check_guide_was_replayed()
        self.source.begin()
        self._entry = _Entry(messenger, self.effects.staging())

    def entered(self) -> None:
        """After the messenger is on the stack: a model about to replay a guide's fused
        ``at`` latent takes it over now, so that a step failing later (an error in the
        model) is not taken next time for a model that never fused it."""
        if self.options.at is not None:
            infer = self.effects.replayed_infer(self._current().messenger, self.options.at)
            record = None if infer is None else infer.get(DRAWS_KEY)
            if record is not None:
                record.replayed_by_model = True

    def exit(self, failed: bool, functional: bool) -> None:
        entry, self._entry = self._entry, None
        if failed or entry is None:
            # a guide run cut short (an error, or Pyro's sequential enumeration restarting
            # it) hands no draw to a model
            pending = self._fused_for_model
            if pending is not None and entry is not None and pending.entry == entry.id:
                self._fused_for_model = None
            return
        opts = self.options
        if not functional and not entry.seen_any:
            raise MixupUsageError(
                f"{self.kind}(...) was entered but saw no sample site: nothing inside ran a model. "
                "Typically a compiled step (JitTrace_ELBO, jax.jit(svi.update)) traced before the "
                "handler was entered and never runs the model again. Wrap the model instead: "
                f"SVI({self.kind}(model, ...), guide, ...)."
            )
        if opts.at is not None and not entry.seen_at:
            kinds = "embed or latent sample site" if self.kind == "probmix" else "mixable"
            raise ValueError(
                f"at={opts.at!r} named no site: the program ran no {kinds} named {opts.at!r}. "
                "Check the name, or drop at= for plain ProbMix at the likelihood."
            )
        if opts.sites is not None and entry.seen_sites and opts.sites - entry.seen_sites:
            raise ValueError(
                f"sites={sorted(opts.sites - entry.seen_sites)} named no sample site of the program "
                f"(its sample sites: {sorted(entry.seen_sites)})"
            )
        if entry.conditioned and not entry.treated:
            raise ValueError(
                f"{self.kind} found no observation to pair: {entry.conditioned} are conditioned "
                "(poutine.condition / handlers.condition inside the handler) and in no plate, so they "
                "are taken as fixed latents, not data. Observations must be in a plate over examples; "
                "name them with sites=[...] to force it."
            )

    # --- messages -----------------------------------------------------------------
    def _begin_message(self) -> _Entry:
        entry = self._entry  # _current(), inlined: this runs at every message
        assert entry is not None, f"a message reached the {self.kind} handler outside an entry"
        entry.seen_any = True
        # Checked at every message: Pyro's JitTrace_ELBO runs the step once eagerly
        # (to find its params) before it traces it.
        if not entry.staged and self.effects.staging():
            raise MixupUsageError(
                f"{self.kind}(...) was entered outside a compiled function (torch.jit / "
                "JitTrace_ELBO, jax.jit) that runs the model: the compiled step would keep this "
                "handler's effect for every later call, inside the `with` block or not. Wrap the "
                f"model instead, so the handler runs inside the compiled step: "
                f"SVI({self.kind}(model, ...), guide, optim, elbo)."
            )
        return entry

    def sample(self, msg: Message) -> None:
        entry = self._begin_message()
        name = msg["name"]
        entry.seen_sites.add(name)
        if msg["is_observed"]:
            frames = self.effects.frames(msg)
            if self._treats(entry, msg, frames):
                entry.treated += 1
                self._score(msg, frames, pool=self.kind == "probmix" and self.options.at is None)
            return
        entry.latent.add(name)
        if self.kind == "probmix" and name == self.options.at:
            if msg["infer"].get("enumerate"):
                raise ValueError(
                    f"at={name!r} names an enumerated discrete site; fuse at a continuous site"
                )
            entry.seen_at = True
            self._fuse_latent(entry, msg)

    def sample_done(self, msg: Message) -> None:
        """A sample site after every handler processed it (the adapter's postprocess):
        what handlers outside this one did to it."""
        entry = self._current()
        name = msg["name"]
        if name not in entry.latent or not self.effects.frames(msg):
            return
        if msg["is_observed"]:
            # Pyro's MCMC and Predictive observe latents this way themselves
            if self.effects.carries_likelihood(msg) and not self.effects.inference_conditions():
                # condition(...) around the wrapped model observes the site after this
                # handler passed it as a latent: training would quietly be plain ERM.
                raise MixupUsageError(
                    f"site {name!r} was observed by a handler outside {self.kind} (condition(...) around "
                    f"the wrapped model), so {self.kind} saw it as a latent and did not pair it: training "
                    f"would be plain ERM. Condition inside the handler, {self.kind}(condition(model, data), "
                    "...), or pass the data as obs= in the model."
                )
        elif self.effects.enumerated(msg):
            entry.enumerated.append(name)

    def embed(self, msg: Message) -> None:
        entry = self._begin_message()
        if self.kind != "probmix" or msg["name"] != self.options.at:
            return
        entry.seen_at = True
        dist = msg["args"][0]
        if self.options.pooling == "linear":
            msg["value"] = self._fuse_linear(msg, dist, msg["kwargs"].get("dim"))
            return
        msg["args"] = (self._fuse(msg, dist, msg["kwargs"].get("dim")),) + tuple(msg["args"][1:])

    def mixable(self, msg: Message) -> None:
        entry = self._begin_message()
        if self.kind != "mixup" or msg["name"] != self.options.at:
            return
        entry.seen_at = True
        tensor = msg["args"][0]
        shape = tuple(self.backend.shape(tensor))
        event_dim, dim = msg["kwargs"].get("event_dim"), msg["kwargs"].get("dim")
        if event_dim is None:
            event_dim = 1 if len(shape) >= 2 else 0
            # more batch dims than plates can explain: (n, C, H, W) would pair image rows
            if len(shape) - event_dim > max(1, self.effects.plate_depth(msg)):
                raise ValueError(
                    f"mixable {msg['name']!r} has shape {shape}: say how many rightmost dims are "
                    f"features with event_dim= (e.g. event_dim={len(shape) - 1} for one example per "
                    "leading index)"
                )
        frame = self._pair_frame(msg, explicit_dim=dim)
        batch_shape = shape[: len(shape) - event_dim]
        dim = pooling.normalise_dim(dim if frame is None else frame.dim, batch_shape)
        axis = dim - event_dim
        n = self._example_count(
            frame, batch_shape[dim], f"mixable {msg['name']!r} (shape {shape}) dim {axis}"
        )
        draws = self._draws()
        mixed = mix_values(self.backend, tensor, draws.lam(n, tensor), draws.partner(n), axis, 0.0)
        msg["args"] = (mixed,) + tuple(msg["args"][1:])

    def _refuse_pairing_under_enumeration(self, name: str) -> None:
        raise MixupUsageError(
            f"{self.kind} would pair site {name!r} under the enumerated local latent(s) "
            f"{self._current().enumerated} (config_enumerate with TraceEnum_ELBO, or NumPyro's MCMC enumerating "
            "discrete sites): enumeration gives an example and its partner the same value of that latent, "
            "so the pair would be scored as if they shared it, and the pool of two mixtures has no closed "
            "form. Sample the discrete latent in the guide instead of enumerating it (or enumerate only "
            "global latents), or mix the inputs with mixup(at=...)."
        )

    # --- which sites, which plate ---------------------------------------------------
    def _treats(self, entry: _Entry, msg: Message, frames: Sequence[Frame]) -> bool:
        opts = self.options
        if opts.sites is not None:
            return msg["name"] in opts.sites and self.effects.carries_likelihood(msg)
        if not self.effects.carries_likelihood(msg):
            return False
        # A latent conditioned inside the handler looks observed; in no plate it
        # cannot be data to pair (a fixed global), so it is left alone.
        if not frames and self.effects.conditioned_inside(entry.messenger, msg):
            entry.conditioned.append(msg["name"])
            return False
        return True

    def _pair_frame(
        self,
        msg: Message,
        explicit_dim: int | None = None,
        frames: Sequence[Frame] | None = None,
    ) -> Frame | None:
        """The plate frame whose examples are paired: the one named ``plate=``, or
        the only one the site is in; ``None`` for an explicit ``dim=`` outside
        plates. Raises when there is no way to tell."""
        if frames is None:
            frames = self.effects.frames(msg)
        plate, name = self.options.plate, msg["name"]
        if plate is not None:
            for f in frames:
                if f.name == plate:
                    return self._agree(msg, f, explicit_dim)
            if explicit_dim is not None and not frames:
                return None
            raise ValueError(
                f"site {name!r} is not inside plate {plate!r} (its plates: "
                f"{[f.name for f in frames] or 'none'}); pass the name of the plate over examples"
            )
        if len(frames) == 1:
            return self._agree(msg, frames[0], explicit_dim)
        if not frames:
            if explicit_dim is not None:
                return None
            raise ValueError(
                f"site {name!r} is in no plate, so there are no examples to pair: put it inside "
                f"`with {self.effects.plate_example}:` (or pass plate=, or dim= to embed/mixable; "
                "an observation that is not data, e.g. a soft constraint, is left alone when you name "
                "the likelihoods with sites=[...])"
            )
        raise ValueError(
            f"site {name!r} is in several plates ({[f.name for f in frames]}); "
            "pass plate='<name of the plate over examples>'"
        )

    @staticmethod
    def _agree(msg: Message, frame: Frame, explicit_dim: int | None) -> Frame:
        if explicit_dim is not None and explicit_dim < 0 and explicit_dim != frame.dim:
            raise ValueError(
                f"site {msg['name']!r}: dim={explicit_dim} but it is inside plate {frame.name!r} "
                f"(dim {frame.dim}); drop dim= or make them agree"
            )
        return frame

    def _example_count(self, frame: Frame | None, size: Any, what: str) -> int:
        size = self.effects.size(size)
        if frame is not None and size != self.effects.size(frame.size):
            raise ValueError(
                f"{what} has size {size} but plate {frame.name!r} has {frame.size} examples; the "
                "example dim must hold one entry per example of the plate"
            )
        return size

    # --- draws -----------------------------------------------------------------
    def _draws(self) -> Draws:
        entry = self._current()
        if entry.draws is None:
            entry.draws = self._guide_draws() or Draws(self.options, self.source, self._refuse_mcmc)
        return entry.draws

    def _guide_draws(self) -> Draws | None:
        """The draws of a separately wrapped guide whose fused ``at`` latent this
        model replays, so that model and guide pool with the same draw."""
        if self.options.at is None:
            return None
        infer = self.effects.replayed_infer(self._current().messenger, self.options.at)
        record = None if infer is None else infer.get(DRAWS_KEY)
        if record is None:
            return None
        if not self.options.same_draws(record.options):
            raise MixupUsageError(
                f"the guide fused at={self.options.at!r} with other options than this model's handler "
                "(alpha, lam, perm, pairing, per_example or beta differ): model and guide must pool with "
                "one draw. Wrap both with the same options, or the whole step: with probmix(...): svi.step()"
            )
        return record.draws

    def _refuse_mcmc(self) -> None:
        if self.effects.in_mcmc():
            raise MixupUsageError(
                f"{self.kind} draws lam and partners at random on every run of the model, and MCMC is "
                "running it: the potential energy would change at every evaluation (Pyro's chain "
                "sticks, NumPyro keeps one hidden draw for the whole chain). Fix the draws with lam= "
                "and perm= (MCMC then samples the posterior under that pooled likelihood), or run "
                "MCMC on the plain model: mixup is a regulariser for SVI / MAP."
            )

    # --- fusing (M-ProbMix) --------------------------------------------------------
    def _pairs_of(
        self, msg: Message, dist: Distribution, explicit_dim: int | None
    ) -> tuple[int, int, Draws]:
        """``(dim, n, draws)``: the batch dim of ``dist`` that holds the examples, their number, the draws."""
        frame = self._pair_frame(msg, explicit_dim)
        batch_shape = tuple(dist.batch_shape)
        if frame is None:
            assert explicit_dim is not None  # outside plates only an explicit dim= pairs
            dim = pooling.normalise_dim(explicit_dim, batch_shape)
        else:
            dim = pooling.normalise_dim(frame.dim, batch_shape)
        n = self._example_count(
            frame, batch_shape[dim], f"the batch dim {dim} of {msg['name']!r}'s distribution"
        )
        return dim, n, self._draws()

    def _fuse(self, msg: Message, dist: Distribution, explicit_dim: int | None) -> Distribution:
        backend = self.backend
        dim, n, draws = self._pairs_of(msg, dist, explicit_dim)
        like = backend.first_param(pooling.decompose(backend, dist))
        return pooling.pool_pairs(
            backend, dist, draws.lam(n, like), draws.partner(n), dim, validate=False
        )

    def _fuse_linear(self, msg: Message, dist: Distribution, explicit_dim: int | None) -> Array:
        """A draw from the ``lam``-mixture of each example's embedding density and
        its partner's: its own draw with probability ``lam``, else a draw from the
        partner's density (an independent second draw, taken at the partner's row)."""
        backend = self.backend
        dim, n, draws = self._pairs_of(msg, dist, explicit_dim)
        own, other = self.effects.rsample(msg, dist, 0), self.effects.rsample(msg, dist, 1)
        axis = dim - len(tuple(dist.event_shape))
        lam = draws.lam(n, own)
        keep = self.source.uniform(n, own) < lam
        return backend.ops.where(
            along(backend, keep, axis),
            own,
            pooling.take_partner(backend, other, draws.partner(n), axis),
        )

    def _fuse_latent(self, entry: _Entry, msg: Message) -> None:
        name = msg["name"]
        if self.options.pooling == "linear":
            raise ValueError(
                f"pooling='linear' draws an embed layer from a mixture; {name!r} is a sample site, whose "
                "ELBO would need the mixture's density: use pooling='log-linear' there, or an embed layer"
            )
        replayed = self.effects.replayed_infer(entry.messenger, name)
        if replayed is not None:
            record = replayed.get(DRAWS_KEY)
            if record is None:
                raise MixupUsageError(
                    f"at={name!r} is a latent whose value is replayed from the guide, but the guide's "
                    f"q({name}|x) was not fused, so the model would score an unfused draw. Wrap the "
                    f"guide too, SVI({self.kind}(model, at={name!r}), {self.kind}(guide, at={name!r}), ...), "
                    f"or the whole step: with {self.kind}(at={name!r}): svi.step(...)"
                )
            if record.draws is not self._draws():
                raise MixupUsageError(
                    f"at={name!r}: the model drew its own lam and partners before reaching the latent "
                    "the guide fused, so they differ from the guide's. Wrap the whole step instead: "
                    f"with {self.kind}(at={name!r}): svi.step(...)"
                )
            record.replayed_by_model = True
        elif self._fused_for_model is not None and self._fused_for_model.entry == entry.id:
            # `with probmix(at=...)` around the step: the model runs after the guide in this
            # entry (the replay is inside the handler, so it is not seen above)
            self._fused_for_model.replayed_by_model = True
        msg["fn"] = self._fuse_site(name, msg["fn"], msg)
        # Left in the trace node, so that a model replaying this value checks (and shares) the draw.
        record = _DrawsRecord(self._draws(), self.options, entry.id, name)
        msg["infer"] = {**msg["infer"], DRAWS_KEY: record}
        if replayed is None and self.effects.runs_as_guide(entry.messenger):
            self._fused_for_model = record

    def _fuse_site(self, name: str, fn: Distribution, msg: Message) -> Distribution:
        try:
            return self._fuse(msg, fn, None)
        except UnsupportedDistributionError as error:
            raise UnsupportedDistributionError(
                f"at={name!r}: {error}. If {name!r} is drawn by an autoguide (Pyro's AutoNormal and "
                "AutoDiagonalNormal draw each latent as a Delta of their own joint draw), it cannot be "
                f"fused: write q({name}|x) by hand as a pooled family (e.g. a Normal), or fuse at an embed layer."
            ) from None

    def _check_guide_was_replayed(self) -> None:
        """A guide whose latent was fused must be run by a model wrapped to fuse it too;
        an unwrapped model scores the fused draw under its own unfused prior, unmixed."""
        record, self._fused_for_model = self._fused_for_model, None
        if record is not None and not record.replayed_by_model:
            raise MixupUsageError(
                f"{self.kind} fused the guide's latent {record.name!r}, but the model that ran with it "
                f"did not fuse it (it is not wrapped by {self.kind}(..., at={record.name!r})), so the ELBO "
                f"compared a fused q({record.name}|x) with an unfused model and unmixed data. Wrap the "
                f"model too, SVI({self.kind}(model, at={record.name!r}), {self.kind}(guide, "
                f"at={record.name!r}), ...), or the whole step: with {self.kind}(at={record.name!r}): "
                "svi.step(...). To sample the trained guide, use it unwrapped."
            )

    # --- scoring observed sites ------------------------------------------------------
    def _target_for(self, name: str, fn: Distribution) -> tuple[Family | None, str]:
        """The family (None outside the registry) and the target of a site."""
        opts, backend = self.options, self.backend
        family = backend.lookup(fn)
        if family is not None:
            # a bare registry class: the answer depends on nothing else (memoised, not per-site state)
            key = (type(fn), family, opts.target, opts.beta > 0)
            target = _LEAF_TARGETS.get(key)
            if target is None:
                target = _LEAF_TARGETS[key] = self._resolve(name, family, fn)
            return family, target
        try:
            node = pooling.decompose(backend, fn)
            while node.child is not None:
                node = node.child
            family = node.family
        except UnsupportedDistributionError:
            family = None  # fine for mixup; probmix raises when it pools
        return family, self._resolve(name, family, fn)

    def _resolve(self, name: str, family: Family | None, fn: Distribution) -> str:
        support = fn.support
        real = self.effects.is_real_support(support)
        return resolve_target(
            name, family, support.is_discrete, real, self.options.target, self.options.beta
        )

    def _score(self, msg: Message, frames: Sequence[Frame], pool: bool) -> None:
        """Replace an observed site's likelihood by its mixup target (pooled first if asked)."""
        effects, backend = self.effects, self.backend
        frame = self._pair_frame(msg, frames=frames)
        assert frame is not None  # without an explicit dim, a plate or an error
        dim, n = frame.dim, effects.size(frame.size)
        fn, mask = effects.split_mask(msg)
        family, target = self._target_for(msg["name"], fn)
        if self._current().enumerated and (
            pool or target == "expected" or (family is not None and family.classification)
        ):
            self._refuse_pairing_under_enumeration(msg["name"])
        draws = self._draws()
        partner, lam = draws.partner(n), draws.lam(n, msg["value"])
        if pool:
            fn = pooling.pool_pairs(backend, fn, lam, partner, dim, validate=False)
        if target == "expected":
            msg["fn"] = effects.paired_target(fn, lam, partner, dim, mask)
        elif family is not None and family.label_kind is not None:  # family.classification
            msg["fn"] = effects.soft_label_target(
                fn, lam, partner, dim, self.options.beta, family.label_kind, mask
            )
        else:
            axis = dim - len(fn.event_shape)
            msg["value"] = mix_values(
                backend, msg["value"], lam, partner, axis, self.options.beta, draws.noise
            )
            if mask is not None:
                fn = effects.remask(
                    fn, backend.logical_and(mask, pooling.take_partner(backend, mask, partner, dim))
                )
            msg["fn"] = fn
