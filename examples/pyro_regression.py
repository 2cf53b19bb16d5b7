"""An unchanged, plain Pyro regression model trained five ways: ERM, ProbMix,
M-ProbMix (via ``embed``), Mix and M-Mix (via ``mixable``).

The model is an ordinary heteroscedastic Gaussian MLP written for Pyro. The
only additions are two markers, ``embed`` and ``mixable``, which do nothing
unless a handler names them, so the ERM run below trains exactly the model
as written.

    python examples/pyro_regression.py [--steps 500]
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO

from pyro_mixup import embed, mixable
from pyro_mixup.handlers import mixup, probmix


class Net(torch.nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.inp = torch.nn.Linear(1, hidden)
        self.inp_scale = torch.nn.Linear(1, hidden)  # variance head of the embedding layer
        self.out = torch.nn.Sequential(
            torch.nn.ReLU(), torch.nn.Linear(hidden, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)
        )

    def forward(self, x, y=None):
        pyro.module("net", self)
        with pyro.plate("data", x.shape[0]):  # the examples: handlers pair along this plate
            x = mixable("x", x)  # vanilla mixup mixes here
            h = self.inp(x)
            # a stochastic embedding layer: M-ProbMix pools these densities in pairs
            h = embed("h", dist.Normal(h, F.softplus(self.inp_scale(x)) + 1e-3).to_event(1))
            h = mixable("h", h)  # manifold mixup mixes here
            loc, raw_scale = self.out(h).unbind(-1)
            return pyro.sample("y", dist.Normal(loc, F.softplus(raw_scale) + 1e-3), obs=y)


def toy_data(n, lo, hi, seed):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, 1, generator=g)
    y = x[:, 0] ** 3 + 3.0 * torch.randn(n, generator=g)  # the paper's toy: y = x^3 + N(0, 9)
    return x, y


def main(steps=500):
    x, y = toy_data(100, -4, 4, seed=0)
    x_test, y_test = toy_data(200, -4, 4, seed=1)
    scale = y.std()
    methods = {
        "erm": lambda m: m,
        "probmix": lambda m: probmix(m, alpha=0.5),
        "m-probmix": lambda m: probmix(m, alpha=0.5, at="h"),
        "mix": lambda m: mixup(m, alpha=0.5, at="x"),
        "m-mix": lambda m: mixup(m, alpha=0.5, at="h"),
    }
    results = {}
    for name, wrap in methods.items():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        net = Net()
        svi = SVI(wrap(net), lambda *a, **k: None, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        for _ in range(steps):
            svi.step(x, y / scale)
        # evaluate the plain (unwrapped) model: mixup is a training-time regulariser
        with torch.no_grad():
            lp = pyro.poutine.trace(net).get_trace(x_test, y_test / scale).nodes["y"]
            nll = -(lp["fn"].log_prob(y_test / scale) - scale.log()).mean().item()
        results[name] = nll
        print(f"{name:10s} test NLL per point: {nll:8.3f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    main(parser.parse_args().steps)
