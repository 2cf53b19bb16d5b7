"""Pyro handlers on real Pyro inference: traces checked against hand
computations, SVI with the usual ELBOs and guides, Predictive, errors."""

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoDelta, AutoDiagonalNormal, AutoNormal
from pyro.nn import PyroModule, PyroSample

from pyro_mixup import UnsupportedDistributionError, embed, log_linear_pool, mixable
from pyro_mixup.handlers import mixup, probmix
from pyro_mixup.pairing import LabelKernelPairing, NearestNeighbourPairing

LAM = 0.3
PERM = torch.tensor([2, 0, 3, 1])


@pytest.fixture(autouse=True)
def _fresh():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


def site_log_prob(model, *args, **handler):
    tr = poutine.trace(probmix(model, **handler)).get_trace(*args)
    tr.compute_log_prob()
    return tr


# --- ProbMix at the likelihood, checked by hand --------------------------------

X = torch.tensor([0.5, -1.0, 2.0, 0.1])


def normal_model(x, y=None):
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(2 * x, 0.5 + x.abs()), obs=y)


def poisson_model(x, y=None):
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Poisson((0.3 * x).exp()), obs=y)


def categorical_model(x, y=None):
    logits = torch.stack([x, -x, x**2], -1)
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Categorical(logits=logits), obs=y)


def _hand_pool(d):
    """Each example pooled with its partner, one slice at a time (no pool_pairs)."""
    return [log_linear_pool([d[i], d[int(PERM[i])]], [LAM, 1 - LAM]) for i in range(len(X))]


def _slice(d, i):
    if isinstance(d, dist.Normal):
        return dist.Normal(d.loc[i], d.scale[i])
    if isinstance(d, dist.Poisson):
        return dist.Poisson(d.rate[i])
    return dist.Categorical(logits=d.logits[i])


CASES = {
    "normal": (normal_model, dist.Normal(2 * X, 0.5 + X.abs()), torch.tensor([1.0, -2.5, 3.0, 0.0])),
    "poisson": (poisson_model, dist.Poisson((0.3 * X).exp()), torch.tensor([0.0, 3.0, 1.0, 2.0])),
    "categorical": (categorical_model, dist.Categorical(logits=torch.stack([X, -X, X**2], -1)), torch.tensor([0, 2, 1, 1])),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", ["mixed", "expected"])
def test_probmix_trace_equals_hand_pool(case, target):
    model, d, y = CASES[case]
    if target == "mixed" and case != "normal":
        with pytest.raises(ValueError, match="target='expected'|beta > 0"):
            site_log_prob(model, X, y, lam=LAM, perm=PERM, target=target)
        return
    tr = site_log_prob(model, X, y, lam=LAM, perm=PERM, target=target)
    pools = [log_linear_pool([_slice(d, i), _slice(d, int(PERM[i]))], [LAM, 1 - LAM]) for i in range(len(X))]
    if target == "mixed":
        y_mix = LAM * y + (1 - LAM) * y[PERM]
        expected = torch.stack([pools[i].log_prob(y_mix[i]) for i in range(len(X))])
    else:
        expected = torch.stack(
            [LAM * pools[i].log_prob(y[i]) + (1 - LAM) * pools[i].log_prob(y[PERM[i]]) for i in range(len(X))]
        )
    assert torch.allclose(tr.nodes["y"]["log_prob"], expected, atol=1e-5)


def test_default_targets_per_family():
    # continuous -> mixed (value replaced); counts and classes -> expected (value kept)
    tr = site_log_prob(normal_model, X, CASES["normal"][2], lam=LAM, perm=PERM)
    assert not torch.equal(tr.nodes["y"]["value"], CASES["normal"][2])
    for case in ("poisson", "categorical"):
        model, _, y = CASES[case]
        tr = site_log_prob(model, X, y, lam=LAM, perm=PERM)
        assert torch.equal(tr.nodes["y"]["value"], y)


def test_classification_label_smoothing_target():
    model, d, y = CASES["categorical"]
    beta = 0.01
    tr = site_log_prob(model, X, y, lam=LAM, perm=PERM, target="mixed", beta=beta)
    one_hot = F.one_hot(y, 3).double()
    log_s = torch.log(one_hot + beta)
    soft = torch.softmax(LAM * log_s + (1 - LAM) * log_s[PERM], -1)
    pooled_logits = torch.log_softmax(LAM * d.logits + (1 - LAM) * d.logits[PERM], -1)
    expected = (soft * pooled_logits).sum(-1)
    assert torch.allclose(tr.nodes["y"]["log_prob"].double(), expected, atol=1e-5)
    # with beta = 0.01 and lam = 0.3 the smoothed pool leans to the partner's class, as in the paper
    differ = y != y[PERM]
    assert differ.any() and (soft.argmax(-1)[differ] == y[PERM][differ]).all()


def test_label_smoothing_target_under_to_event():
    # two labels per example (.to_event(1)): the leaf is scored, its event dim summed
    logits = torch.randn(4, 2, 3)
    y = torch.tensor([[0, 1], [2, 2], [1, 0], [0, 0]])

    def model(y=None):
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Categorical(logits=logits).to_event(1), obs=y)

    beta = 0.05
    tr = poutine.trace(probmix(model, lam=LAM, perm=PERM, target="mixed", beta=beta)).get_trace(y)
    tr.compute_log_prob()
    log_s = torch.log(F.one_hot(y, 3).float() + beta)
    soft = torch.softmax(LAM * log_s + (1 - LAM) * log_s[PERM], -1)
    pooled = torch.log_softmax(LAM * logits + (1 - LAM) * logits[PERM], -1)
    assert torch.allclose(tr.nodes["y"]["log_prob"], (soft * pooled).sum((-1, -2)), atol=1e-5)


def test_beta_jitter_refused_on_bounded_support():
    def model(y):
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Gamma(torch.full((4,), 2.0), 3.0), obs=y)

    with pytest.raises(ValueError, match="bounded support of Gamma"):
        probmix(model, beta=0.1)(torch.full((4,), 0.01))
    assert torch.isfinite(poutine.trace(probmix(model, beta=0.0)).get_trace(torch.full((4,), 0.01)).log_prob_sum())


def test_beta_jitter_is_gaussian_with_variance_beta():
    y = torch.zeros(4000)
    x = torch.zeros(4000)
    tr = poutine.trace(probmix(normal_model, lam=0.5, beta=0.04)).get_trace(x, y)
    jitter = tr.nodes["y"]["value"]
    assert abs(jitter.mean().item()) < 0.02
    assert jitter.var().item() == pytest.approx(0.04, rel=0.1)


def test_alpha_zero_is_erm():
    y = CASES["normal"][2]
    plain = poutine.trace(normal_model).get_trace(X, y).log_prob_sum()
    for _ in range(5):
        wrapped = poutine.trace(probmix(normal_model, alpha=0.0)).get_trace(X, y).log_prob_sum()
        assert torch.allclose(plain, wrapped)


def test_per_example_lam_and_sites_selection():
    def two_sites(x, y=None, z=None):
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(x, 1.0), obs=y)
            pyro.sample("z", dist.Normal(-x, 1.0), obs=z)

    lam = torch.tensor([0.1, 0.2, 0.7, 1.0])
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    tr = poutine.trace(probmix(two_sites, lam=lam, perm=PERM, sites=["y"])).get_trace(X, y, y)
    assert torch.allclose(tr.nodes["y"]["fn"].loc, lam * X + (1 - lam) * X[PERM])
    assert torch.allclose(tr.nodes["y"]["value"], lam * y + (1 - lam) * y[PERM])
    assert torch.equal(tr.nodes["z"]["value"], y)  # not selected: untouched
    assert type(tr.nodes["z"]["fn"]) is dist.Normal


def test_random_draws_are_beta_and_permutations():
    from pyro_mixup.handlers import PairingDraws

    draws = PairingDraws(0.5, None, None, "permutation", False)
    lams, perms = [], []
    for _ in range(2000):
        draws.reset()
        lams.append(float(draws.lam(8, torch.zeros(()))))
        perms.append(draws.perm(8, torch.device("cpu")))
    lams = np.array(lams)
    # Beta(0.5, 0.5): mean 1/2, variance 1/8
    assert abs(lams.mean() - 0.5) < 0.03 and abs(lams.var() - 0.125) < 0.015
    assert all(sorted(p.tolist()) == list(range(8)) for p in perms)
    # partner of 0 is uniform over the batch
    counts = np.bincount([int(p[0]) for p in perms], minlength=8)
    assert counts.min() > 2000 / 8 * 0.7


def test_tiny_alpha_gives_finite_lam_in_float32():
    from pyro_mixup.handlers import PairingDraws

    draws = PairingDraws(1e-3, None, None, "permutation", True)
    for _ in range(50):
        draws.reset()
        lam = draws.lam(64, torch.zeros((), dtype=torch.float32))
        assert lam.shape == (64,) and torch.isfinite(lam).all() and ((lam >= 0) & (lam <= 1)).all()
    scalar = PairingDraws(1e-3, None, None, "permutation", False)
    values = []
    for _ in range(200):
        scalar.reset()
        values.append(scalar.lam(64, torch.zeros(())))
    assert all(0.0 <= v <= 1.0 for v in values) and np.mean(np.minimum(values, 1 - np.array(values)) < 1e-3) > 0.9


# --- masks and subsampling --------------------------------------------------------


def test_masked_pairs_contribute_only_what_is_observed():
    mask = torch.tensor([True, False, True, True])
    y = torch.tensor([1.0, 99.0, 3.0, 0.0])

    def model(x, y=None):
        with pyro.plate("data", len(x)), poutine.mask(mask=mask):
            pyro.sample("y", dist.Normal(2 * x, 1.0), obs=y)

    tr = poutine.trace(probmix(model, lam=LAM, perm=PERM, target="expected")).get_trace(X, y)
    tr.compute_log_prob()
    d = dist.Normal(2 * X, 1.0)
    pooled = dist.Normal(LAM * d.loc + (1 - LAM) * d.loc[PERM], 1.0)
    expected = LAM * mask * pooled.log_prob(y) + (1 - LAM) * mask[PERM] * pooled.log_prob(y[PERM])
    assert torch.allclose(tr.nodes["y"]["log_prob"], expected, atol=1e-6)
    # the mixed target needs both members: pairs with a masked member drop out
    tr = poutine.trace(probmix(model, lam=LAM, perm=PERM, target="mixed")).get_trace(X, y)
    tr.compute_log_prob()
    both = mask & mask[PERM]
    assert (tr.nodes["y"]["log_prob"][~both] == 0).all() and (tr.nodes["y"]["log_prob"][both] != 0).all()


def test_obs_mask_and_deterministic_sites():
    # obs_mask= splits a site into observed / unobserved parts plus a masked-out
    # Delta; pyro.deterministic records an observed Delta. Only the likelihood is mixed.
    mask = torch.tensor([True, False, True, True])
    y = torch.tensor([1.0, 99.0, 3.0, 0.0])

    def model(x, y):
        with pyro.plate("data", len(x)):
            pyro.deterministic("double", 2 * x)
            pyro.factor("penalty", -(x**2))
            pyro.sample("y", dist.Normal(2 * x, 1.0), obs=y, obs_mask=mask)

    def guide(x, y):
        with pyro.plate("data", len(x)):
            pyro.sample("y_unobserved", dist.Normal(2 * x, 1.0))

    tr = poutine.trace(probmix(model, lam=LAM, perm=PERM, target="expected")).get_trace(X, y)
    tr.compute_log_prob()
    pooled = dist.Normal(LAM * 2 * X + (1 - LAM) * 2 * X[PERM], 1.0)
    expected = LAM * mask * pooled.log_prob(y) + (1 - LAM) * mask[PERM] * pooled.log_prob(y[PERM])
    assert torch.allclose(tr.nodes["y_observed"]["log_prob"], expected, atol=1e-6)
    assert torch.equal(tr.nodes["double"]["value"], 2 * X)
    svi = SVI(probmix(model, alpha=0.5), guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    assert np.isfinite(svi.step(X, y))


def test_subsampling_keeps_the_plate_scale():
    x = torch.randn(100)
    y = 2 * x

    def model(x, y):
        with pyro.plate("data", 100, subsample_size=10) as idx:
            pyro.sample("y", dist.Normal(2 * x[idx], 1.0), obs=y[idx])

    tr = poutine.trace(probmix(model, alpha=0.5)).get_trace(x, y)
    assert tr.nodes["y"]["scale"] == pytest.approx(10.0)
    assert tr.nodes["y"]["fn"].batch_shape == (10,)


# --- SVI with Pyro's ELBOs and guides ---------------------------------------------


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(n, generator=g)
    return x, y


class Net(PyroModule):
    def __init__(self, bayesian=False):
        super().__init__()
        self.hidden = PyroModule[torch.nn.Linear](3, 16)
        self.out = PyroModule[torch.nn.Linear](16, 2)
        if bayesian:
            self.out.weight = PyroSample(dist.Normal(0.0, 1.0).expand([2, 16]).to_event(2))
            self.out.bias = PyroSample(dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    def forward(self, x, y=None, embedded=False, mix_at=None):
        if mix_at == "x":
            x = mixable("x", x)
        h = self.hidden(x)
        if embedded:
            h = embed("h", dist.Normal(h, 0.1 + F.softplus(h)).to_event(1))
        if mix_at == "h":
            h = mixable("h", h)
        # explicit matmul so that vectorised particles (batched weights) broadcast
        out = torch.tanh(h) @ self.out.weight.transpose(-1, -2) + self.out.bias.unsqueeze(-2)
        loc, scale = out[..., 0], F.softplus(out[..., 1]) + 1e-3
        with pyro.plate("data", x.shape[-2]):
            return pyro.sample("y", dist.Normal(loc, scale), obs=y)


def _train(model, guide, steps=150, elbo=None, lr=0.02, **kw):
    x, y = _data()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo or Trace_ELBO())
    losses = [svi.step(x, y, **kw) for _ in range(steps)]
    return np.mean(losses[:10]), np.mean(losses[-10:])


HANDLERS = {
    "probmix": (lambda m: probmix(m, alpha=0.4), {}),
    "probmix-expected": (lambda m: probmix(m, alpha=0.4, target="expected"), {}),
    "m-probmix": (lambda m: probmix(m, alpha=0.4, at="h"), {"embedded": True}),
    "mix": (lambda m: mixup(m, alpha=0.4, at="x"), {"mix_at": "x"}),
    "m-mix": (lambda m: mixup(m, alpha=0.4, at="h"), {"mix_at": "h"}),
}


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_svi_loss_decreases(name):
    wrap, kw = HANDLERS[name]
    net = Net()
    first, last = _train(wrap(net), lambda *a, **k: None, **kw)
    assert last < first - 10


@pytest.mark.parametrize("guide_cls", [AutoNormal, AutoDelta, AutoDiagonalNormal])
@pytest.mark.parametrize("elbo", [Trace_ELBO(), TraceMeanField_ELBO(), Trace_ELBO(num_particles=2),
                                  Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)],
                         ids=["trace", "meanfield", "particles", "vectorized"])
def test_bnn_with_autoguides_and_elbos(guide_cls, elbo):
    net = Net(bayesian=True)
    model = probmix(net, alpha=0.4)
    guide = guide_cls(net)
    first, last = _train(model, guide, steps=120, elbo=elbo, lr=0.03)
    assert np.isfinite(last) and last < first


def test_wrapped_model_with_vectorized_particles_and_expected_target():
    # the particle plate sits outside probmix(model): the scored site gets expanded
    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Poisson((w * x).exp()), obs=y)

    def guide(x, y=None):
        pyro.sample("w", dist.Normal(pyro.param("m", torch.tensor(0.1)), 0.5))

    y = torch.tensor([1.0, 0.0, 4.0, 1.0])
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(probmix(model, lam=0.5, perm=PERM), guide, X, y)
    assert np.isfinite(loss)
    svi = SVI(probmix(model, alpha=0.5), guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    assert all(np.isfinite(svi.step(X, y)) for _ in range(3))


def test_vectorized_particles_pair_along_the_data_plate():
    net = Net(bayesian=True)
    guide = AutoNormal(net)
    x, y = _data(8)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    with probmix(lam=0.5, perm=torch.roll(torch.arange(8), 1)):
        loss = elbo.loss(net, guide, x, y)
    assert np.isfinite(loss)


def test_jit_trace_elbo_draws_fresh_each_step():
    net = Net()
    x, y = _data()
    svi = SVI(probmix(net, alpha=1.0), lambda *a: None, pyro.optim.Adam({"lr": 0.0}), JitTrace_ELBO())
    losses = [svi.step(x, y) for _ in range(6)]
    assert len(set(np.round(losses, 6))) > 3  # lr = 0: only the draws change the loss
    svi_erm = SVI(net, lambda *a: None, pyro.optim.Adam({"lr": 0.0}), JitTrace_ELBO())
    assert len(set(np.round([svi_erm.step(x, y) for _ in range(3)], 6))) == 1


def _recover_pairing(pooled, base):
    """All (lam, perm) for which pool_pairs(base, lam, perm) == pooled (brute force, n = 4)."""
    import itertools

    from pyro_mixup import pool_pairs

    tau, tau_p = base.scale**-2, pooled.scale.detach() ** -2
    found = []
    for perm in itertools.permutations(range(len(tau))):
        perm = torch.tensor(perm)
        moved = [i for i in range(len(perm)) if perm[i] != i]
        if not moved:
            continue
        i = moved[0]
        lam = ((tau_p[i] - tau[perm[i]]) / (tau[i] - tau[perm[i]])).item()
        if not 0 <= lam <= 1:
            continue
        ref = pool_pairs(base, lam, perm)
        if torch.allclose(ref.loc, pooled.loc.detach(), atol=1e-4) and torch.allclose(ref.scale, pooled.scale.detach(), atol=1e-4):
            found.append((round(lam, 4), tuple(perm.tolist())))
    return set(found)


def test_model_and_guide_share_one_draw_per_step():
    # M-ProbMix at a latent site of an amortised guide: inside one `with probmix()`
    # step the guide's q(z|x) and the model's p(z|x) are pooled with the same draw.
    seen = {}

    class Spy(poutine.messenger.Messenger):
        def _pyro_post_sample(self, msg):
            if msg["name"] == "z":
                seen.setdefault("fn", []).append(msg["fn"])

    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    prior = dist.Normal(-x, 1.0 + x)
    posterior = dist.Normal(x, 0.3 + 0.5 * x)

    def model(x, y):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(-x, 1.0 + x))
            pyro.sample("y", dist.Normal(z, 0.1), obs=y)

    def guide(x, y):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x, 0.3 + 0.5 * x))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    draws = set()
    for step in range(4):
        seen.clear()
        with Spy(), probmix(alpha=1.0, at="z"):
            svi.step(x, x)
        guide_fn, model_fn = seen["fn"]
        from_guide = _recover_pairing(guide_fn, posterior)
        from_model = _recover_pairing(model_fn, prior)
        assert from_guide & from_model, (from_guide, from_model)
        draws |= from_guide & from_model
    assert len(draws) > 1  # and a fresh draw per step


# --- M-ProbMix and mixup checked by hand ----------------------------------------------


def test_embed_fusion_draws_from_the_hand_pooled_embedding():
    m = torch.tensor([[0.0, 1.0], [2.0, -1.0], [1.0, 1.0], [-3.0, 0.5]])
    s = torch.tensor([[0.5, 1.0], [1.0, 2.0], [0.2, 0.4], [1.5, 0.3]])
    seen = {}

    def model(y=None):
        z = embed("h", dist.Normal(m, s).to_event(1))
        seen["z"] = z
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=y)

    # z is a reparameterised draw from the pooled embedding: fix the noise and compare
    torch.manual_seed(3)
    probmix(model, lam=LAM, perm=PERM, at="h")(torch.zeros(4))
    tau = s**-2
    tau_p = LAM * tau + (1 - LAM) * tau[PERM]
    loc_p = (LAM * tau * m + (1 - LAM) * tau[PERM] * m[PERM]) / tau_p
    torch.manual_seed(3)
    expected = dist.Normal(loc_p, tau_p.rsqrt()).rsample()
    assert torch.allclose(seen["z"], expected, atol=1e-5)


def test_embed_adds_no_site_and_at_site_targets_without_pooling():
    def model(x, y=None):
        z = embed("h", dist.Normal(x.unsqueeze(-1), 0.1).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(z.squeeze(-1), 1.0), obs=y)

    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    tr = poutine.trace(probmix(model, lam=LAM, perm=PERM, at="h")).get_trace(X, y)
    assert [n for n in tr.stochastic_nodes if n != "data"] == [] and tr.observation_nodes == ["y"]
    assert type(tr.nodes["y"]["fn"]) is dist.Normal  # the likelihood itself is not pooled again
    assert torch.allclose(tr.nodes["y"]["value"], LAM * y + (1 - LAM) * y[PERM])


def test_latent_site_fusion_in_model():
    def model(x):
        with pyro.plate("data", len(x)):
            return pyro.sample("z", dist.Normal(x, 1.0 + x.abs()))

    tr = poutine.trace(probmix(model, lam=LAM, perm=PERM, at="z")).get_trace(X)
    expected = pyro_pool = __import__("pyro_mixup").pool_pairs(dist.Normal(X, 1.0 + X.abs()), LAM, PERM)
    assert torch.allclose(tr.nodes["z"]["fn"].loc, expected.loc)
    assert torch.allclose(tr.nodes["z"]["fn"].scale, pyro_pool.scale)


@pytest.mark.parametrize("where", ["x", "h"])
def test_mixup_replaces_the_mixable_tensor(where):
    x = torch.randn(4, 3)
    seen = {}

    def model(x, y=None):
        x = mixable("x", x)
        h = mixable("h", torch.tanh(x @ torch.ones(3, 2)))
        seen["x"], seen["h"] = x, h
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(h.sum(-1), 1.0), obs=y)

    y = torch.arange(4.0)
    tr = poutine.trace(mixup(model, at=where, lam=LAM, perm=PERM)).get_trace(x, y)
    if where == "x":
        assert torch.allclose(seen["x"], LAM * x + (1 - LAM) * x[PERM])
    else:
        h = torch.tanh(x @ torch.ones(3, 2))
        assert torch.equal(seen["x"], x)
        assert torch.allclose(seen["h"], LAM * h + (1 - LAM) * h[PERM])
    assert torch.allclose(tr.nodes["y"]["value"], LAM * y + (1 - LAM) * y[PERM])


def test_mixup_classification_is_the_usual_mixup_cross_entropy():
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])

    def model(x, y=None):
        x = mixable("x", x)
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Categorical(logits=x), obs=y)

    tr = poutine.trace(mixup(model, at="x", lam=LAM, perm=PERM)).get_trace(x, y)
    tr.compute_log_prob()
    logp = torch.log_softmax(LAM * x + (1 - LAM) * x[PERM], -1)
    expected = LAM * logp[torch.arange(4), y] + (1 - LAM) * logp[torch.arange(4), y[PERM]]
    assert torch.allclose(tr.nodes["y"]["log_prob"], expected, atol=1e-6)


# --- pairing tables ----------------------------------------------------------------------


def test_nearest_neighbour_pairing_partners_are_neighbours():
    x = torch.tensor([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    table = NearestNeighbourPairing(x.numpy(), k=2)
    seen = set()
    msngr = probmix(alpha=1.0, pairing=table)
    for _ in range(50):
        with msngr:
            perm = msngr.draws.perm(6, torch.device("cpu"))
        assert all(abs(int(p) - i) <= 2 and int(p) != i and (int(p) < 3) == (i < 3) for i, p in enumerate(perm))
        seen.add(tuple(perm.tolist()))
    assert len(seen) > 1
    with pytest.raises(ValueError, match="covers 6 examples"):
        with msngr:
            msngr.draws.perm(4, torch.device("cpu"))


def test_label_kernel_pairing_prefers_close_labels():
    y = np.array([0.0, 0.05, 5.0, 5.05, 10.0, 10.05])
    table = LabelKernelPairing(y, bandwidth=0.5)
    rng = np.random.default_rng(0)
    partners = np.stack([table.sample(rng) for _ in range(200)])
    assert (np.abs(y[partners] - y[None, :]) < 1).mean() > 0.99
    assert (partners != np.arange(6)).all()


def test_partner_batches_bring_partners_into_the_batch():
    x = np.random.default_rng(0).normal(size=(40, 2))
    table = NearestNeighbourPairing(x, k=3)
    covered = []
    for idx, perm in table.batches(10, seed=1):
        assert len(idx) == 2 * (len(idx) // 2) and sorted(perm.tolist()) == list(range(len(idx)))
        half = len(idx) // 2
        for a in range(half):
            assert idx[perm[a]] in table.candidates[idx[a]]
        covered.extend(idx[:half])
    assert sorted(covered) == list(range(40))  # every example is an anchor once per epoch


# --- Predictive, enumeration: untouched ------------------------------------------------------


def test_predictive_samples_as_the_plain_model():
    net = Net(bayesian=True)
    guide = AutoNormal(net)
    x, y = _data(16)
    svi = SVI(probmix(net, alpha=0.4), guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(5):
        svi.step(x, y)
    torch.manual_seed(7)
    plain = Predictive(net, guide=guide, num_samples=5)(x)["y"]
    torch.manual_seed(7)
    wrapped = Predictive(probmix(net, alpha=0.4), guide=guide, num_samples=5)(x)["y"]
    assert torch.equal(plain, wrapped)


def test_enumerated_sites_are_left_alone():
    probs = torch.tensor([0.3, 0.7])

    @pyro.infer.config_enumerate
    def model(y):
        with pyro.plate("data", len(y)):
            c = pyro.sample("c", dist.Categorical(probs))
            pyro.sample("y", dist.Normal(torch.tensor([-2.0, 2.0])[c], 1.0), obs=y)

    def guide(y):
        pass

    y = torch.tensor([-2.0, 2.1, 1.9, -1.5])
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    plain = elbo.loss(model, guide, y)
    assert np.isfinite(elbo.loss(probmix(model, alpha=0.0), guide, y))
    assert elbo.loss(probmix(model, alpha=0.0), guide, y) == pytest.approx(plain, rel=1e-5)
    # with mixing, the enumerated site stays enumerated and the loss is finite
    loss = elbo.loss(probmix(model, lam=0.5, perm=[1, 0, 3, 2]), guide, y)
    assert np.isfinite(loss) and loss != pytest.approx(plain)


# --- errors ---------------------------------------------------------------------------


def test_error_non_exponential_family_likelihood():
    def model(x, y):
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.StudentT(3.0, x, 1.0), obs=y)

    with pytest.raises(UnsupportedDistributionError, match="StudentT"):
        probmix(model, alpha=1.0)(X, X)


def test_error_at_names_no_site():
    with pytest.raises(ValueError, match="at='nope' named no site"):
        probmix(normal_model, at="nope")(X, X)
    with pytest.raises(ValueError, match="at='nope' named no site"):
        mixup(normal_model, at="nope")(X, X)


def test_error_sites_naming_no_site():
    with pytest.raises(ValueError, match=r"sites=\['yy'\] named no sample site"):
        probmix(normal_model, sites=["yy"])(X, X)
    # Predictive leaves y unobserved: the name still exists, so no error
    Predictive(probmix(normal_model, sites=["y"]), num_samples=2)(X)


def test_error_batch_of_one():
    with pytest.raises(ValueError, match="batch of size 1"):
        probmix(normal_model)(X[:1], X[:1])


@pytest.mark.parametrize("lam", [1.5, -0.2, float("nan")])
def test_error_lam_outside_unit_interval(lam):
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\]"):
        probmix(normal_model, lam=lam)


def test_error_bad_perm():
    with pytest.raises(ValueError, match="permutation"):
        probmix(normal_model, perm=[0, 0, 1, 2])
    with pytest.raises(ValueError, match="perm has length 3 but the batch has 4"):
        probmix(normal_model, perm=[1, 2, 0])(X, X)


def test_error_no_plate_or_ambiguous_plate():
    def no_plate(x, y):
        pyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)

    with pytest.raises(ValueError, match="in no plate"):
        probmix(no_plate)(X, X)

    def two_plates(x, y):
        with pyro.plate("a", 2, dim=-2), pyro.plate("b", len(x), dim=-1):
            pyro.sample("y", dist.Normal(x, 1.0), obs=y)

    with pytest.raises(ValueError, match="several plates"):
        probmix(two_plates)(X, X.expand(2, 4))
    tr = poutine.trace(probmix(two_plates, plate="b", lam=LAM, perm=PERM)).get_trace(X, X.expand(2, 4))
    assert torch.allclose(tr.nodes["y"]["value"], (LAM * X + (1 - LAM) * X[PERM]).expand(2, 4))
    with pytest.raises(ValueError, match="not inside plate 'c'"):
        probmix(two_plates, plate="c")(X, X.expand(2, 4))


def test_error_example_dim_not_matching_plate():
    def embed_model():
        with pyro.plate("d", 3):
            return embed("h", dist.Normal(torch.zeros(1, 2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="has size 1 but plate 'd' has 3"):
        probmix(embed_model, at="h", lam=0.5, perm=[1, 2, 0])()

    def mix_model():
        with pyro.plate("d", 3):
            return mixable("x", torch.ones(1, 2))

    with pytest.raises(ValueError, match="has size 1 but plate 'd' has 3"):
        mixup(mix_model, at="x", lam=0.5, perm=[1, 2, 0])()


def test_error_bad_options():
    with pytest.raises(ValueError, match="alpha"):
        probmix(normal_model, alpha=-1.0)
    with pytest.raises(ValueError, match="target"):
        probmix(normal_model, target="mean")
    with pytest.raises(ValueError, match="pairing"):
        probmix(normal_model, pairing="random")
    with pytest.raises(ValueError, match="mixable"):
        mixup(normal_model, at=None)
    with pytest.raises(ValueError, match="sites"):
        probmix(normal_model, sites="y")


def test_mixup_accepts_likelihoods_outside_the_registry():
    # vanilla mixup mixes inputs and targets; it never pools, so StudentT is fine
    def model(x, y=None):
        x = mixable("x", x)
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.StudentT(4.0, x.sum(-1), 1.0), obs=y)

    x, y = torch.randn(4, 2), torch.arange(4.0)
    tr = poutine.trace(mixup(model, at="x", lam=LAM, perm=PERM)).get_trace(x, y)
    assert torch.allclose(tr.nodes["y"]["value"], LAM * y + (1 - LAM) * y[PERM])
    with pytest.raises(UnsupportedDistributionError):
        probmix(model)(x, y)


# --- the paper's section 4 reductions, as properties of the handlers ----------------------

from hypothesis import given, settings, strategies as st


def _loss(model, handler, *args):
    tr = poutine.trace(handler(model)).get_trace(*args)
    return tr.log_prob_sum()


@given(lam=st.floats(0, 1), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_linear_homoscedastic_probmix_is_vanilla_mixup(lam, seed):
    # Thm 4.4 + linearity: pooling N(w x_i + b, s) and N(w x_j + b, s) gives N(w x~ + b, s)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 3, generator=g), torch.randn(6, generator=g)
    w, b = torch.randn(3, generator=g), 0.7
    perm = torch.randperm(6, generator=g)

    def model(x, y=None):
        x = mixable("x", x)
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(x @ w + b, 0.8), obs=y)

    a = _loss(model, lambda m: probmix(m, lam=lam, perm=perm), x, y)
    c = _loss(model, lambda m: mixup(m, at="x", lam=lam, perm=perm), x, y)
    assert torch.allclose(a, c, atol=1e-4)


@given(lam=st.floats(0, 1), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_linear_logits_probmix_is_vanilla_mixup_for_classes(lam, seed):
    # Thm 4.3: the categorical pool mixes the logits; with linear logits that is mixup
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 3, generator=g), torch.randint(0, 4, (6,), generator=g)
    w = torch.randn(3, 4, generator=g)
    perm = torch.randperm(6, generator=g)

    def model(x, y=None):
        x = mixable("x", x)
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Categorical(logits=x @ w), obs=y)

    a = _loss(model, lambda m: probmix(m, lam=lam, perm=perm), x, y)
    c = _loss(model, lambda m: mixup(m, at="x", lam=lam, perm=perm), x, y)
    assert torch.allclose(a, c, atol=1e-4)


@given(lam=st.floats(0, 1), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_homoscedastic_m_probmix_is_manifold_mixup(lam, seed):
    # section 4: M-ProbMix with homoscedastic embeddings pools the means like manifold mixup
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 3, generator=g), torch.randn(6, generator=g)
    w1, w2 = torch.randn(3, 5, generator=g), torch.randn(5, generator=g)
    perm = torch.randperm(6, generator=g)

    def model(x, y=None):
        m = mixable("m", torch.tanh(x @ w1))
        z = embed("h", dist.Normal(m, 0.3).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(z @ w2, 1.0), obs=y)

    torch.manual_seed(seed)
    a = _loss(model, lambda m: probmix(m, at="h", lam=lam, perm=perm), x, y)
    torch.manual_seed(seed)
    c = _loss(model, lambda m: mixup(m, at="m", lam=lam, perm=perm), x, y)
    assert torch.allclose(a, c, atol=1e-4)
