"""The paper's toy regression with the Pyro handlers, in a few lines.

    .venv/bin/python examples/toy_regression.py

y = x^3 + N(0, 9), 100 training points on U(-4, 4), out-of-distribution test
points on U(4, 6). A heteroscedastic MLP with a stochastic embedding layer
(``pyro_mixup.embed``) is trained by maximum likelihood under
``probmix(at="h")`` (M-ProbMix) and, for comparison, without a handler (ERM).
``pyro-mixup demo`` runs the same experiment for all ten methods.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from pyro_mixup import embed
from pyro_mixup.handlers import probmix

torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.out = nn.Linear(1, 128), nn.Linear(128, 64), nn.Linear(64, 2)
        self.a = nn.Parameter(torch.zeros(128))  # embedding variance head, shares layer l1
        self.c = nn.Parameter(torch.full((128,), -3.0))

    def forward(self, x, stochastic=True):
        h = F.relu(self.l1(x))
        if stochastic:  # z ~ N(h, s^2); pooled with the partner's under probmix(at="h")
            h = embed(
                "h", dist.Normal(h, F.softplus(self.a * h + self.c) + 1e-3).to_event(1), dim=-1
            )
        out = self.out(F.relu(self.l2(h)))
        return out[:, 0], F.softplus(out[:, 1]) + 1e-4


def model(net, x, y=None):
    mu, sigma = net(x)
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def train(wrapped, x, y, epochs=500, lr=0.01, seed=0):
    torch.manual_seed(seed)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        loss = -poutine.trace(wrapped).get_trace(net, x, y).log_prob_sum() / len(x)
        loss.backward()
        opt.step()
    return net


def nll(net, x, y, scale):
    with torch.no_grad():
        mu, sigma = net(x / 4, stochastic=False)
    return float(-dist.Normal(mu * scale, sigma * scale).log_prob(y).mean())


if __name__ == "__main__":
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100, 1, generator=g) * 8 - 4
    y = x[:, 0] ** 3 + 3 * torch.randn(100, generator=g)
    x_ood = torch.rand(500, 1, generator=g) * 2 + 4
    y_ood = x_ood[:, 0] ** 3 + 3 * torch.randn(500, generator=g)
    scale = float(y.std())
    for name, wrapped in [("ERM", model), ("M-ProbMix", probmix(model, at="h", alpha=0.5))]:
        net = train(wrapped, x / 4, y / scale)
        print(
            f"{name:10s} train NLL {nll(net, x, y, scale):7.2f}   OOD NLL {nll(net, x_ood, y_ood, scale):9.2f}"
            f"   (per point, original units)"
        )
    print(f"(noise floor: NLL of the true model = {0.5 * math.log(2 * math.pi * 9) + 0.5:.2f})")
