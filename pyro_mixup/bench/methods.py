"""The benchmark's methods: command-line name -> how to train.

Every method trains the same network; what differs is the handler wrapped
around the model (see ``train_pyro`` / ``train_numpyro``):

==================  =========================================================  ============
name                handler                                                    partner
==================  =========================================================  ============
erm                 none (plain maximum likelihood)                            --
mix                 ``mixup(at="x")`` (vanilla mixup of the inputs)            random
m-mix               ``mixup(at="h")`` (manifold mixup, first hidden layer)     random
lock-mix            ``mixup(at="x", pairing=NearestNeighbourPairing(x, 5))``   5-NN in x
lock-m-mix          ``mixup(at="h", pairing=NearestNeighbourPairing(x, 5))``   5-NN in x
probmix             ``probmix()`` (pool the Gaussian likelihoods)              random
m-probmix           ``probmix(at="h")`` (pool the ``embed`` layer)             random
lock-probmix        ``probmix(pairing=NearestNeighbourPairing(x, 5))``         5-NN in x
lock-m-probmix      ``probmix(at="h", pairing=NearestNeighbourPairing(x, 5))`` 5-NN in x
cmixup-probmix      ``probmix(pairing=LabelKernelPairing(y, h))`` (ours)       kernel in y
==================  =========================================================  ============

The M-ProbMix methods use the network with a stochastic embedding layer
(``embed``) at the first hidden layer; every other method uses the plain
network (whose first hidden layer is a ``mixable`` named "h").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..pairing import LabelKernelPairing, NearestNeighbourPairing


@dataclass(frozen=True)
class Method:
    name: str
    handler: Optional[str]  # None (ERM), "mixup" or "probmix"
    at: Optional[str]  # "x", "h" or None (ProbMix at the likelihood)
    pairing: str  # "random", "knn" or "label"

    @property
    def embedding(self) -> bool:
        """Uses the network with a stochastic embedding layer (M-ProbMix)."""
        return self.handler == "probmix" and self.at == "h"

    @property
    def mixes(self) -> bool:
        return self.handler is not None


METHODS = {
    m.name: m
    for m in [
        Method("erm", None, None, "random"),
        Method("mix", "mixup", "x", "random"),
        Method("m-mix", "mixup", "h", "random"),
        Method("lock-mix", "mixup", "x", "knn"),
        Method("lock-m-mix", "mixup", "h", "knn"),
        Method("probmix", "probmix", None, "random"),
        Method("m-probmix", "probmix", "h", "random"),
        Method("lock-probmix", "probmix", None, "knn"),
        Method("lock-m-probmix", "probmix", "h", "knn"),
        Method("cmixup-probmix", "probmix", None, "label"),
    ]
}

METHOD_NAMES = list(METHODS)
PROBMIX_FAMILY = [n for n, m in METHODS.items() if m.handler == "probmix"]

#: LocK neighbourhood size (the paper's K) and the C-Mixup bandwidth (on standardised y).
LOCK_K = 5
CMIXUP_BANDWIDTH = 0.5


def parse_methods(spec: Optional[str]) -> List[str]:
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(METHOD_NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from: {', '.join(METHOD_NAMES)}")
    return list(dict.fromkeys(names))


def partner_table(method: Method, x: np.ndarray, y: np.ndarray):
    """The partner table of a method for training data ``(x, y)``, or None for random pairing."""
    if method.pairing == "knn":
        return NearestNeighbourPairing(x, k=min(LOCK_K, len(x) - 1))
    if method.pairing == "label":
        return LabelKernelPairing(y, bandwidth=CMIXUP_BANDWIDTH)
    return None
