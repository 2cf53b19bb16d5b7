"""Checks and rules shared by the Pyro and NumPyro handlers, so that both
backends accept the same options and give the same errors."""

from __future__ import annotations

import math

from .families import Family

TARGETS = ("mixed", "expected")
PAIRINGS = ("permutation", "shift")
#: Plates Pyro/NumPyro add for vectorised ELBO particles; never a pairing plate.
PARTICLE_PLATES = ("num_particles_vectorized", "_num_particles_vectorized")


def check_common(*, alpha, beta, target, sites, per_example, pairing, perm_given):
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(
            f"alpha must be a finite number >= 0 (lam ~ Beta(alpha, alpha)); got {alpha!r}"
        )
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0; got {beta!r}")
    if target is not None and target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS} or None (per-family default); got {target!r}")
    if sites is not None and (isinstance(sites, str) or not all(isinstance(s, str) for s in sites)):
        raise ValueError(f"sites must be a list of site names; got {sites!r}")
    if not isinstance(per_example, bool):
        raise ValueError(f"per_example must be True or False; got {per_example!r}")
    if isinstance(pairing, str) and pairing not in PAIRINGS:
        raise ValueError(
            f"pairing must be one of {PAIRINGS} or a pyro_mixup.pairing.PartnerTable; got {pairing!r}"
        )
    if perm_given and not isinstance(pairing, str):
        raise ValueError("give either perm= or a pairing table, not both")


def resolve_target(site: str, family: Family | None, is_discrete: bool, real_support: bool, target, beta) -> str:
    """The target an observed site is scored on.

    Default: "mixed" (score at lam*y_i + (1-lam)*y_j) for continuous families
    whose support is convex; "expected" (lam*log p(y_i) + (1-lam)*log p(y_j))
    for counts, classes and angles, where the mixed value leaves the support.
    For classification families "mixed" means the paper's log-linear pool of
    beta-smoothed labels, which needs beta > 0. For other families beta is the
    variance of Gaussian jitter on the mixed value, which only an unbounded
    support (``real_support``) can take.
    """
    classification = family is not None and family.classification
    if family is not None:
        convex = family.convex_support
    else:
        convex = not is_discrete
    chosen = target or ("expected" if classification or not convex else "mixed")
    name = family.name if family is not None else "this distribution"
    if chosen == "mixed":
        if classification and not beta > 0:
            raise ValueError(
                f"site {site!r}: target='mixed' for class labels pools beta-smoothed labels "
                "(paper section 3.2); give beta > 0 (the paper uses 0.01) or target='expected'"
            )
        if not classification and not convex:
            raise ValueError(
                f"site {site!r}: target='mixed' would score {name} at lam*y_i + (1-lam)*y_j, "
                "which is outside its support; use target='expected' "
                "(lam*log p(y_i) + (1-lam)*log p(y_j))"
            )
        if not classification and beta > 0 and not real_support:
            raise ValueError(
                f"site {site!r}: beta={beta} adds N(0, beta) jitter to the mixed target, which can "
                f"leave the bounded support of {name}; use beta=0 (or target='expected')"
            )
    return chosen
