"""The experiments: the paper's protocols run on the library like any user would.

- :mod:`~pyro_mixup.experiments.methods`: the one registry, method name -> handler;
- :mod:`~pyro_mixup.experiments.data`: the UCI split layout, one ``Split``, the toy data;
- :mod:`~pyro_mixup.experiments.metrics`: Gaussian NLL, RMSE, coverage, PIT;
- :mod:`~pyro_mixup.experiments.results`: resumable JSON records, atomic writes;
- :mod:`~pyro_mixup.experiments.nets_pyro` / :mod:`~pyro_mixup.experiments.nets_numpyro`: the networks;
- :mod:`~pyro_mixup.experiments.train_pyro` / :mod:`~pyro_mixup.experiments.train_numpyro`: one trainer per backend;
- :mod:`~pyro_mixup.experiments.uci`, :mod:`~pyro_mixup.experiments.toy`, :mod:`~pyro_mixup.experiments.bnn`: the protocols;
- :mod:`~pyro_mixup.experiments.cli`: the ``pyro-mixup demo`` / ``bench`` commands (argument parsing only).

The library (``pyro_mixup.core``, the backends) never imports this package.
"""
