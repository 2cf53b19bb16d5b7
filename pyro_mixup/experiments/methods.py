"""The methods of every experiment, once: name -> handler, ``at``, pairing, embedding.

Every network of the experiments marks its inputs ``mixable("x")``, its first
hidden layer ``mixable("h")`` and, in its embedding variant, makes that layer a
stochastic ``embed("z")``. A method is then a handler around the plain model:

==================  =========================================================  ============
name                handler                                                    partner
==================  =========================================================  ============
erm                 none (plain maximum likelihood / ELBO)                     --
mix                 ``mixup(at="x")`` (vanilla mixup of the inputs)            random
m-mix               ``mixup(at="h")`` (manifold mixup, first hidden layer)     random
lock-mix            ``mixup(at="x", pairing=NearestNeighbourPairing(x, 5))``   5-NN in x
lock-m-mix          ``mixup(at="h", pairing=NearestNeighbourPairing(x, 5))``   5-NN in x
probmix             ``probmix()`` (pool the Gaussian likelihoods)              random
m-probmix           ``probmix(at="z")`` (pool the ``embed`` layer)             random
lock-probmix        ``probmix(pairing=NearestNeighbourPairing(x, 5))``         5-NN in x
lock-m-probmix      ``probmix(at="z", pairing=NearestNeighbourPairing(x, 5))`` 5-NN in x
cmixup-probmix      ``probmix(pairing=LabelKernelPairing(y, 0.5))`` (ours)     kernel in y
==================  =========================================================  ============

Not in the default set (name them with ``--methods``):

- ``m-probmix-linear``, ``lock-m-probmix-linear``: M-ProbMix with
  ``pooling="linear"`` (``z`` drawn from the ``lam``-mixture of the pair's
  embedding densities, the paper's ablation);
- ``m-probmix-star``, ``lock-m-probmix-star``: the paper's M-ProbMix*, a 64-32
  network whose embedding std comes from a separate variance network with one
  hidden layer of width 64 (our reading of "an additional variance embedding of
  size 64", paper section 6.2), whatever ``--hidden`` says.

:func:`wrap` builds the wrapped model for either backend; the trainers, the toy
commands and the BNN all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.pairing import LabelKernelPairing, NearestNeighbourPairing

#: The site names every network of the experiments uses.
INPUT, HIDDEN, EMBEDDING = "x", "h", "z"
#: LocK neighbourhood size (the paper's K) and the C-Mixup bandwidth (on standardised y).
LOCK_K = 5
CMIXUP_BANDWIDTH = 0.5


@dataclass(frozen=True)
class Method:
    name: str
    handler: str | None  # None (ERM), "mixup" or "probmix"
    at: str | None  # INPUT, HIDDEN, EMBEDDING or None (ProbMix at the likelihood)
    pairing: str  # "random", "knn" or "label"
    pooling: str = "log-linear"  # of the embedding densities (probmix at EMBEDDING)
    hidden: tuple[int, ...] | None = None  # the method's own architecture (None: the protocol's)
    variance_width: int = 0  # > 0: the embedding's std from a separate network of this width
    in_default_set: bool = True  # run when no --methods are named

    @property
    def embedding(self) -> bool:
        """Trains the network's stochastic-embedding variant (M-ProbMix)."""
        return self.at == EMBEDDING

    @property
    def mixes(self) -> bool:
        return self.handler is not None

    @property
    def uses_table(self) -> bool:
        """Partners come from a :class:`~pyro_mixup.pairing.PartnerTable` built on the training data."""
        return self.pairing != "random"


METHODS = {
    m.name: m
    for m in [
        Method("erm", None, None, "random"),
        Method("mix", "mixup", INPUT, "random"),
        Method("m-mix", "mixup", HIDDEN, "random"),
        Method("lock-mix", "mixup", INPUT, "knn"),
        Method("lock-m-mix", "mixup", HIDDEN, "knn"),
        Method("probmix", "probmix", None, "random"),
        Method("m-probmix", "probmix", EMBEDDING, "random"),
        Method("lock-probmix", "probmix", None, "knn"),
        Method("lock-m-probmix", "probmix", EMBEDDING, "knn"),
        Method("cmixup-probmix", "probmix", None, "label"),
        Method("m-probmix-linear", "probmix", EMBEDDING, "random", "linear", in_default_set=False),
        Method(
            "lock-m-probmix-linear", "probmix", EMBEDDING, "knn", "linear", in_default_set=False
        ),
        Method(
            "m-probmix-star",
            "probmix",
            EMBEDDING,
            "random",
            hidden=(64, 32),
            variance_width=64,
            in_default_set=False,
        ),
        Method(
            "lock-m-probmix-star",
            "probmix",
            EMBEDDING,
            "knn",
            hidden=(64, 32),
            variance_width=64,
            in_default_set=False,
        ),
    ]
}

#: The default set of every command: the paper's methods and C-Mixup ProbMix.
METHOD_NAMES = [n for n, m in METHODS.items() if m.in_default_set]
#: The ProbMix family of the goal tables ("best ProbMix family"): log-linear pools, M-ProbMix* included.
PROBMIX_FAMILY = [
    n for n, m in METHODS.items() if m.handler == "probmix" and m.pooling == "log-linear"
]


def parse_methods(spec: str | None, allowed: list[str] | None = None) -> list[str]:
    """``None``/"all" -> every method of the default set (or ``allowed``); else a
    comma list, checked against ``allowed`` (default: every registered method)."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(allowed or METHOD_NAMES)
    allowed = list(allowed or METHODS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from: {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def partner_table(method: Method, x: np.ndarray, y: np.ndarray | None = None):
    """The partner table of ``method`` for training rows ``(x, y)``; None for random pairing."""
    if method.pairing == "knn":
        return NearestNeighbourPairing(
            np.asarray(x, np.float64).reshape(len(x), -1), k=min(LOCK_K, len(x) - 1)
        )
    if method.pairing == "label":
        if y is None or not np.issubdtype(np.asarray(y).dtype, np.floating):
            raise ValueError(
                f"{method.name} pairs by a kernel on a continuous label; these labels are {np.asarray(y).dtype}"
            )
        return LabelKernelPairing(np.asarray(y, np.float64), bandwidth=CMIXUP_BANDWIDTH)
    return None


def wrap(model, method, *, backend: str, classification: bool = False, **options):
    """``model`` as ``method`` trains it (ERM: the model itself).

    :param method: a :class:`Method` or its name.
    :param str backend: ``"pyro"`` or ``"numpyro"`` (whose handlers to use).
    :param classification: class labels: ProbMix scores the pool of
        ``beta``-smoothed labels (the paper's target; ``beta`` defaults to 0.01
        there) and mixup takes no target jitter.
    :param options: the handler's options (``alpha``, ``lam``, ``perm``, ``beta``,
        ``pairing``, ...).
    """
    method = METHODS[method] if isinstance(method, str) else method
    if method.embedding and not getattr(model, "embedding", True):
        raise ValueError(f"{method.name} needs the network's embedding variant (embedding=True)")
    if not method.mixes:
        return model
    if backend == "pyro":
        from .. import handlers
    elif backend == "numpyro":
        from ..numpyro import handlers
    else:
        raise ValueError(f"backend must be 'pyro' or 'numpyro'; got {backend!r}")
    if classification:
        if method.handler == "mixup":
            options["beta"] = 0.0
        else:
            options.setdefault("target", "mixed")
            options["beta"] = options.get("beta") or 0.01
    if method.pooling != "log-linear":
        options["pooling"] = method.pooling
    handler = handlers.mixup if method.handler == "mixup" else handlers.probmix
    return handler(model, at=method.at, **options)
