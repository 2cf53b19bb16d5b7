"""Exceptions shared by the torch and JAX backends."""


class UnsupportedDistributionError(TypeError):
    """A distribution that log-linear pooling cannot keep in closed form.

    Raised for families outside the exponential-family registry (StudentT,
    Laplace, mixtures, Delta, ...). The message names the class and lists the
    supported ones; :func:`pyro_mixup.register` adds a subclass of your own.
    """
