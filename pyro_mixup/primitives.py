"""The Pyro primitives (:func:`embed`, :func:`mixable`); they live in
:mod:`pyro_mixup.pyro.primitives`, this name stays for existing code."""

from .pyro.primitives import embed, mixable

__all__ = ["embed", "mixable"]
