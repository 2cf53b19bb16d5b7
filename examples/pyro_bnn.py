"""A Bayesian neural network (``PyroModule`` with ``PyroSample`` priors),
trained by SVI with an AutoNormal guide, with and without ProbMix.

Wrapping the model is the only change: the guide, the optimiser and
``Predictive`` are as in any Pyro BNN. Predictions use the *plain* model,
since ProbMix is a training-time regulariser.

    python examples/pyro_bnn.py [--steps 1500]
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample

from pyro_mixup.handlers import probmix


class BNN(PyroModule):
    def __init__(self, d_in=1, hidden=32):
        super().__init__()
        self.fc1 = PyroModule[torch.nn.Linear](d_in, hidden)
        self.fc1.weight = PyroSample(dist.Normal(0.0, 1.0).expand([hidden, d_in]).to_event(2))
        self.fc1.bias = PyroSample(dist.Normal(0.0, 1.0).expand([hidden]).to_event(1))
        self.fc2 = PyroModule[torch.nn.Linear](hidden, 2)
        self.fc2.weight = PyroSample(
            dist.Normal(0.0, 1.0 / hidden**0.5).expand([2, hidden]).to_event(2)
        )
        self.fc2.bias = PyroSample(dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    def forward(self, x, y=None):
        loc, raw_scale = self.fc2(torch.tanh(self.fc1(x))).unbind(-1)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("y", dist.Normal(loc, F.softplus(raw_scale) + 1e-3), obs=y)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = 4 * torch.rand(n, 1, generator=g) - 2
    y = torch.sin(2 * x[:, 0]) + (0.1 + 0.2 * x[:, 0].abs()) * torch.randn(n, generator=g)
    return x, y


def main(steps=1500):
    x, y = data(128, 0)
    x_test, y_test = data(500, 1)
    for name, wrap in {"erm": lambda m: m, "probmix": lambda m: probmix(m, alpha=0.4)}.items():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = BNN()
        guide = AutoNormal(model)
        svi = SVI(wrap(model), guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        for _ in range(steps):
            svi.step(x, y)
        # Posterior predictive of the plain model: Predictive for draws of y, and the
        # per-draw likelihood for the test NLL (log-mean-exp over posterior draws).
        with torch.no_grad():
            samples = Predictive(model, guide=guide, num_samples=200)(x_test)["y"]  # (200, 500)
            lp = []
            for _ in range(200):
                posterior_draw = pyro.poutine.trace(guide).get_trace(x_test)
                tr = pyro.poutine.trace(pyro.poutine.replay(model, trace=posterior_draw)).get_trace(
                    x_test, y_test
                )
                lp.append(tr.nodes["y"]["fn"].log_prob(y_test))
            lp = torch.stack(lp)
            nll = -(torch.logsumexp(lp, 0) - torch.log(torch.tensor(200.0))).mean().item()
        inside = (
            ((samples.quantile(0.05, 0) <= y_test) & (y_test <= samples.quantile(0.95, 0)))
            .float()
            .mean()
            .item()
        )
        print(f"{name:8s} test NLL {nll:6.3f}   90% interval coverage {inside:5.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1500)
    main(parser.parse_args().steps)
