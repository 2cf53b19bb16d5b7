"""The Pyro handlers (:func:`probmix`, :func:`mixup`); they live in
:mod:`pyro_mixup.pyro.handlers`, this name stays for existing code."""

from .pyro.handlers import MixupMessenger, ProbMixMessenger, mixup, probmix

__all__ = ["MixupMessenger", "ProbMixMessenger", "mixup", "probmix"]
