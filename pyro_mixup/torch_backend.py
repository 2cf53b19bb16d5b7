"""The torch pooling backend; it lives in :mod:`pyro_mixup.pyro.backend`,
this name stays for existing code."""

from .pyro.backend import BACKEND, TorchBackend, log_linear_pool, pool_pairs, register

__all__ = ["BACKEND", "TorchBackend", "log_linear_pool", "pool_pairs", "register"]
