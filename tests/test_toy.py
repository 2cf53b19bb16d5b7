"""The toy commands (``demo``, ``bench toy-classification``) and the Pyro trainer they
run on: every method trains, the batch size is honoured, gradients are clipped by
their global norm, and the UCI protocol's record of one split.

Real Pyro SVI (no mocks); tiny networks and few epochs keep this fast.
"""

import json
import os

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from pyro_mixup.cli import main
from pyro_mixup.experiments import train_pyro as T
from pyro_mixup.experiments.data import Split
from pyro_mixup.experiments.methods import METHODS
from pyro_mixup.experiments.metrics import gaussian_nll, unknown_metric_names
from pyro_mixup.experiments.nets_pyro import MLP, model_of


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one torch thread is several times faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_demo_tiny(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert (
        main(
            [
                "demo",
                "--runs",
                "2",
                "--epochs",
                "5",
                "--methods",
                "erm,m-probmix",
                "--out",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "OOD NLL" in text and "| m-probmix |" in text
    res = json.load(open(os.path.join(out, "toy_regression.json")))
    assert not [k for r in res["records"] for k in unknown_metric_names(r)]  # one vocabulary
    assert len(res["records"]) == 4
    assert all(np.isfinite(r["ood_nll"]) and r["ood_mse"] > 0 for r in res["records"])
    assert [r["alpha"] for r in res["records"]] == [0.0, 0.0, 0.5, 0.5]  # ERM records no alpha
    # M-ProbMix predicts with the marginal over its embedding, the deterministic network with one draw
    assert [r["predictive_draws"] for r in res["records"]] == [1, 1, 1000, 1000]
    assert res["settings"]["predictive"] == "marginal"
    assert os.path.getsize(os.path.join(out, "toy_regression.png")) > 1000


def test_paper_protocol_tiny(tmp_path, capsys):
    out = str(tmp_path / "paper")
    argv = [
        "bench",
        "toy-regression",
        "--protocol",
        "paper",
        "--runs",
        "2",
        "--epochs",
        "8",
        "--alphas",
        "0,0.5",
        "--betas",
        "0,0.01",
        "--methods",
        "erm,probmix,m-probmix",
        "--test-draws",
        "20",
        "--val-draws",
        "5",
        "--out",
        out,
        "--quiet",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert (
        "Chosen on validation NLL" in text and "The paper's Table 5" in text and "| 0.5 |" in text
    )
    res = json.load(open(os.path.join(out, "toy_paper.json")))
    assert not [k for r in res["records"] for k in unknown_metric_names(r)]  # one vocabulary
    recs = res["records"]
    # ERM once (beta does nothing without mixing); the mixing methods at every alpha and beta, 2 runs each
    assert len(recs) == 2 + 2 * 2 * 2 * 2
    assert {(r["alpha"], r["beta"]) for r in recs if r["method"] == "erm"} == {(0.0, 0.0)}
    for r in recs:
        assert all(
            np.isfinite(r[k])
            for k in (
                "val_nll",
                "id_nll_standardised",
                "ood_nll_standardised",
                "ood_nll",
                "ood_mse",
            )
        )
        assert 1 <= r["best_epoch"] <= 8
        assert r["ood_nll"] - r["ood_nll_standardised"] == pytest.approx(
            r["id_nll"] - r["id_nll_standardised"]
        )  # log std(y)
        if r["method"] == "m-probmix":
            assert (r["predictive"], r["predictive_draws"]) == ("marginal", 20)
            assert len(r["embed_scale"]) >= 2 and r["embed_scale"][0] == pytest.approx(
                0.05, abs=0.01
            )
            assert "ood_nll_mean_embedding" in r
        else:
            assert (r["predictive"], r["predictive_draws"]) == (
                "mean",
                1,
            ) and "embed_scale" not in r
    assert set(res["chosen"]) == {"erm", "probmix", "m-probmix"}
    assert res["settings"]["runs"] == 2 and res["settings"]["batch_size"] == "full"
    assert os.path.getsize(os.path.join(out, "toy_paper.png")) > 1000
    assert main(argv[:-3] + ["--alphas=-1", "--out", out, "--quiet"]) == 2


def test_toy_classification_tiny(tmp_path, capsys):
    out = str(tmp_path / "rings")
    assert (
        main(
            [
                "bench",
                "toy-classification",
                "--runs",
                "1",
                "--epochs",
                "5",
                "--methods",
                "erm,probmix,mix,m-probmix",
                "--out",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    res = json.load(open(os.path.join(out, "toy_classification.json")))
    assert not [k for r in res["records"] for k in unknown_metric_names(r)]  # one vocabulary
    assert [r["method"] for r in res["records"]] == ["erm", "probmix", "mix", "m-probmix"]
    assert all(0 <= r["test_accuracy"] <= 1 and r["test_nll"] > 0 for r in res["records"])
    assert (
        res["settings"]["predictive"] == "marginal"
    )  # M-ProbMix: class probabilities mixed over embedding draws
    assert os.path.getsize(os.path.join(out, "toy_classification.png")) > 1000
    # C-Mixup pairs by a kernel on a continuous label: refused for classes, with the reason
    assert (
        main(
            [
                "bench",
                "toy-classification",
                "--runs",
                "1",
                "--epochs",
                "1",
                "--methods",
                "cmixup-probmix",
                "--out",
                out,
                "--quiet",
            ]
        )
        == 2
    )
    assert "continuous label" in capsys.readouterr().err


def test_marginal_class_probabilities_sum_to_one_and_need_the_draws():
    from pyro_mixup.experiments.data import rings_data

    d = rings_data(0)
    net, _ = T.fit_net(
        "m-probmix", *d["train"], classification=True, n_classes=3, hidden=(16, 8), epochs=20
    )
    x = d["test"][0][:6]
    marginal, mean = T.predict_proba(net, x, draws=300), T.predict_proba(net, x, predictive="mean")
    np.testing.assert_allclose(marginal.sum(1), 1.0, atol=1e-5)
    assert marginal.shape == mean.shape == (6, 3) and not np.array_equal(marginal, mean)


def _toy(n=64, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.normal(size=n)
    return x, (y - y.mean()) / y.std()


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_lowers_its_training_loss_pyro(method):
    x, y = _toy()
    _, losses = T.fit_net(method, x, y, hidden=(32, 16), epochs=150, lr=0.01, alpha=0.5, seed=0)
    assert np.all(np.isfinite(losses))
    assert losses[-20:].mean() < losses[:5].mean() - 0.2


class _Counts:
    """Records the batch size of every model call and counts the optimiser's steps
    on one parameter (a global torch optimiser hook; pyro.optim keeps an optimiser per parameter)."""

    def __init__(self, net):
        self.model, self.sizes, self.steps = model_of(net), [], 0
        watched = net.layers[0].weight

        def hook(optimizer, args, kwargs):
            self.steps += any(p is watched for g in optimizer.param_groups for p in g["params"])

        self.handle = register_optimizer_step_post_hook(hook)

    def __call__(self, x, y=None):
        self.sizes.append(len(x))
        return self.model(x, y)


@pytest.mark.parametrize(
    "method, batch_size, per_epoch, size",
    [
        ("erm", None, 1, 70),  # full batch: one step
        ("probmix", 16, 70 // 16, 16),  # shuffled minibatches, the ragged last one dropped
        ("m-mix", 100, 1, 70),  # a batch larger than the data is the full batch
        (
            "lock-probmix",
            16,
            70 // 16,
            16,
        ),  # a partner table: 8 anchors + their 8 partners per batch
    ],
)
def test_the_trainer_honours_the_batch_size(method, batch_size, per_epoch, size):
    x, y = _toy(70)
    net = MLP(2, (8,), 2, embedding=False)
    counts = _Counts(net)
    try:
        losses = T.fit(
            counts, None, x, y, method=method, epochs=3, lr=0.01, batch_size=batch_size, seed=0
        )
    finally:
        counts.handle.remove()
    assert counts.sizes == [size] * (3 * per_epoch)
    assert counts.steps == 3 * per_epoch and losses.shape == (3,)


def test_a_partner_table_needs_an_even_batch():
    x, y = _toy(40)
    with pytest.raises(ValueError, match="even"):
        T.fit(
            model_of(MLP(2, (4,), 2)), None, x, y, method="cmixup-probmix", epochs=1, batch_size=15
        )
    with pytest.raises(ValueError, match="batch_size"):
        T.fit(model_of(MLP(2, (4,), 2)), None, x, y, method="erm", epochs=1, batch_size=-1)


def test_the_loss_is_per_example_at_every_batch_size():
    """With lr = 0 (nothing moves) the epoch loss is the mean NLL per example of the whole
    data, full batch or in equal minibatches that cover it."""
    x, y = _toy(70)
    net = MLP(2, (8,), 2)
    mu, sigma = T.predict_regression(net, x)
    nll = float(gaussian_nll(mu, sigma, y))
    for batch_size in (None, 10, 35):
        losses = T.fit(
            model_of(net), None, x, y, method="erm", epochs=2, lr=0.0, batch_size=batch_size
        )
        np.testing.assert_allclose(losses, nll, rtol=1e-5)


def test_gradients_are_clipped_by_their_global_norm():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([300.0, 0.0]), torch.tensor([0.0, 400.0])
    opt = T.GlobalNormClip(torch.optim.SGD, {"lr": 1.0}, max_norm=100.0)
    opt([a, b])
    # the whole gradient is scaled by 100 / 500 (an elementwise clamp, as ClippedAdam's, would give 100 and 100)
    assert a.tolist() == pytest.approx([-60.0, 0.0]) and b.tolist() == pytest.approx([0.0, -80.0])
    assert opt.last_norm == pytest.approx(500.0)
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    opt([a, b])  # below the norm: untouched
    assert a.tolist() == pytest.approx([-63.0, 0.0]) and b.tolist() == pytest.approx([0.0, -84.0])
    adam = T.adam(0.01)
    assert isinstance(adam, T.GlobalNormClip) and adam.max_norm == T.CLIP_NORM == 100.0
    assert adam.pt_optim_constructor is torch.optim.Adam


def test_every_step_of_the_trainer_goes_through_the_clip():
    """Clipped to norm 0 every gradient vanishes and no parameter moves; at the default norm they do."""
    x, y = _toy(32)
    for clip, moves in ((0.0, False), (T.CLIP_NORM, True)):
        net = MLP(2, (8,), 2, embedding=True)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        T.fit(
            model_of(net), None, x, y, method="m-probmix", epochs=3, batch_size=16, clip_norm=clip
        )
        changed = [not torch.equal(before[k], v) for k, v in net.state_dict().items()]
        assert all(changed) if moves else not any(changed)


def _split(n_fit=96, n_val=32, n_test=32):
    (x, y), (xv, yv), (xt, yt) = (
        _toy(n, seed) for n, seed in ((n_fit, 1), (n_val, 2), (n_test, 3))
    )
    f = np.float32
    return Split(
        "toy",
        0,
        x.astype(f),
        y.astype(f),
        xv.astype(f),
        yv.astype(f),
        xt.astype(f),
        yt.astype(f),
        np.zeros(2),
        np.ones(2),
        10.0,
        2.0,
    )


def test_run_split_scores_the_best_validation_epoch():
    split = _split()
    r = T.run_split(split, "cmixup-probmix", 0.5, 0.0, 60, 0.01, (16,), 0, batch_size=32)
    assert r["prng"] == "torch" and r["learned"] and 1 <= r["best_epoch"] <= 60
    assert r["train_loss_last"] < r["train_loss_first"]
    for key in ("test_nll", "test_rmse", "coverage_90", "pit_mean", "val_nll"):
        assert np.isfinite(r[key])
    assert 0 <= r["coverage_90"] <= 1 and 0 < r["pit_mean"] < 1
    # a network that learnt nothing (lr = 0: its initial weights) is flagged
    assert not T.run_split(split, "erm", 0.0, 0.0, 3, 0.0, (16,), 0, batch_size=32)["learned"]
