"""The exceptions pyro_mixup raises, shared by the Pyro and NumPyro adapters."""


class UnsupportedDistributionError(TypeError):
    """A distribution that log-linear pooling cannot keep in closed form.

    Raised for families outside the exponential-family registry (StudentT,
    Laplace, mixtures, Delta, ...). The message names the class and lists the
    supported ones; :func:`pyro_mixup.register` adds a subclass of your own.
    """


class MixupUsageError(ValueError):
    """A handler used in a way whose result would be silently wrong.

    Raised, with what to do instead, for idioms that run but would not compute
    the mixup objective the user asked for: MCMC on a randomly pooled model, a
    handler entered outside a compiled step that runs the model, a latent
    fused at ``at=`` in the model but drawn unfused by the guide, a handler
    nested in itself. A subclass of :class:`ValueError`.
    """
