"""Site bookkeeping shared by the Pyro and NumPyro messengers: which plate
pairs a site, which sites are treated, what target a site is scored on, and
the end-of-entry checks. Backend-neutral; each messenger supplies
``_frames(msg)`` (its plates), ``_backend`` (the pooling backend),
``_is_real_support`` and ``_size(n)`` (a Python int from a possibly traced size)."""

from __future__ import annotations

from . import _engine
from ._options import resolve_target
from .errors import UnsupportedDistributionError


class SiteRules:
    _plate_example = "plate('data', n)"

    def _reset_sites(self):
        self._seen_at = False
        self._seen_sites = set()

    def _check_exit(self):
        if self.at is not None and not self._seen_at:
            raise ValueError(
                f"at={self.at!r} named no site: the program ran no {self._at_kinds} named "
                f"{self.at!r}. Check the name, or drop at= for plain ProbMix at the likelihood."
            )
        if self.sites is not None and self._seen_sites and self.sites - self._seen_sites:
            raise ValueError(
                f"sites={sorted(self.sites - self._seen_sites)} named no sample site of the program "
                f"(its sample sites: {sorted(self._seen_sites)})"
            )

    # --- ProbMix's dispatch (the messengers supply _score and _fuse) ----------------
    def _probmix_sample(self, msg):
        self._seen_sites.add(msg["name"])
        if msg["is_observed"]:
            if self._selected(msg):
                self._score(msg, pool=self.at is None)
        elif self.at is not None and msg["name"] == self.at:
            if msg["infer"].get("enumerate"):
                raise ValueError(f"at={self.at!r} names an enumerated discrete site; fuse at a continuous site")
            self._seen_at = True
            msg["fn"] = self._fuse(msg, msg["fn"], fallback=None)

    def _probmix_embed(self, msg):
        if self.at is not None and msg["name"] == self.at:
            self._seen_at = True
            fallback = msg["kwargs"].get("dim")
            msg["args"] = (self._fuse(msg, msg["args"][0], -1 if fallback is None else fallback),)

    def _pair_frame(self, msg, fallback=None):
        """The plate frame whose examples are paired: the one named ``plate=``, or
        the only one the site is in. ``None`` when the site is in no plate and a
        ``fallback`` dim exists (embed/mixable outside plates); raises otherwise."""
        frames = self._frames(msg)
        if self.plate is not None:
            for f in frames:
                if f.name == self.plate:
                    return f
            if fallback is not None and not frames:
                return None
            raise ValueError(
                f"site {msg['name']!r} is not inside plate {self.plate!r} (its plates: "
                f"{[f.name for f in frames] or 'none'}); pass the name of the plate over examples"
            )
        if len(frames) == 1:
            return frames[0]
        if not frames:
            if fallback is not None:
                return None
            raise ValueError(
                f"site {msg['name']!r} is in no plate, so there are no examples to pair: put the "
                f"observations in `with {self._plate_example}:` (or pass plate=)"
            )
        raise ValueError(
            f"site {msg['name']!r} is in several plates ({[f.name for f in frames]}); "
            "pass plate='<name of the plate over examples>'"
        )

    def _example_count(self, frame, size, what, dim):
        """The number of examples at an embed/mixable site, which must match its plate."""
        size = self._size(size)
        if frame is not None and size != self._size(frame.size):
            raise ValueError(
                f"the {what} {dim} has size {size} but plate {frame.name!r} has {frame.size} "
                "examples; the example dim must hold one entry per example of the plate"
            )
        return size

    def _target_for(self, name, fn):
        """The family (None outside the registry) and the target of a site, cached per site."""
        key = (name, type(fn))
        hit = self._targets.get(key)
        if hit is None:
            try:
                node = _engine.decompose(self._backend, fn)
                while node.child is not None:
                    node = node.child
                family = node.family
            except UnsupportedDistributionError:
                family = None  # fine for mixup; probmix raises when it pools
            support = fn.support
            hit = (
                family,
                resolve_target(
                    name, family, support.is_discrete, self._is_real_support(support), self.target, self.beta
                ),
            )
            self._targets[key] = hit
        return hit
