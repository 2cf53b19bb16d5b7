"""From a plain Pyro BNN to an ArviZ comparison of ERM vs ProbMix vs M-ProbMix.

Run:  .venv/bin/python examples/bnn_arviz.py [--data-dir ../shared/data/uci] [--dataset yacht]

1. a heteroscedastic Gaussian BNN (``PyroModule`` + ``PyroSample`` priors);
2. trained by SVI (``AutoNormal``) three times: plain (ERM), under
   ``probmix(model)`` and, for the embedding variant, under
   ``probmix(model, at="z")`` (M-ProbMix);
3. each turned into an ArviZ ``InferenceData`` on the test split with
   ``pyro_mixup.diagnostics.to_inference_data`` -- always from the plain model;
4. the test log predictive density (the held-out measure), ``az.loo`` / ``az.compare``
   (an approximation to leave-one-out on training data: see the README), the test NLL /
   coverage, plus a PPC figure.

Without the UCI folder it falls back to a synthetic heteroscedastic problem.
Takes about a minute on 2 CPU cores.
"""

import argparse
import os
import time
import warnings

import numpy as np
import pyro
import torch

from pyro_mixup.bnn.data import load_split, standardisation
from pyro_mixup.bnn.models_pyro import BNNRegressor, fit
from pyro_mixup.diagnostics import log_predictive_density, test_metrics, to_inference_data
from pyro_mixup.handlers import probmix

warnings.filterwarnings("ignore")  # ArviZ's FutureWarning banner and Pareto-k warnings
import arviz as az  # noqa: E402


def synthetic(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=(300, 1))
    y = np.sin(2 * x[:, 0]) * 3 + (0.2 + 0.3 * np.abs(x[:, 0])) * rng.standard_normal(300)
    return x[:270], y[:270], x[270:], y[270:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=os.environ.get("PYRO_MIXUP_UCI", "../shared/data/uci"))
    p.add_argument("--dataset", default="yacht")
    p.add_argument("--split", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3000)
    p.add_argument("--out", default="results/bnn_example")
    args = p.parse_args()

    if os.path.exists(os.path.join(args.data_dir, args.dataset, "data.txt")):
        s = load_split(args.data_dir, args.dataset, args.split)
        x_tr, y_tr, x_te, y_te, name = (
            s.x_train,
            s.y_train,
            s.x_test,
            s.y_test,
            f"{args.dataset} split {args.split}",
        )
    else:
        x_tr, y_tr, x_te, y_te = synthetic()
        name = "synthetic"
    x_loc, x_scale, y_loc, y_scale = standardisation(x_tr, y_tr)

    # 1. The plain model. Mixup needs nothing from it except a plate over the
    #    data; M-ProbMix needs an `embed` layer (BNNRegressor(embed=True)).
    def make(embed):
        return BNNRegressor(
            x_tr.shape[1],
            hidden=(50,),
            embed=embed,
            x_loc=x_loc,
            x_scale=x_scale,
            y_loc=y_loc,
            y_scale=y_scale,
        )

    runs = {
        "erm": (make(False), "erm"),
        "probmix": (make(False), "probmix"),
        "m-probmix": (make(True), "m-probmix"),
    }
    idatas = {}
    for label, (model, method) in runs.items():
        t0 = time.time()
        # 2. SVI with AutoNormal; `fit` wraps the model in the method's handler:
        #    erm -> model, probmix -> probmix(model, alpha), m-probmix -> probmix(model, alpha, at="z")
        # kl_weight=0.1: a tempered posterior (the plain ELBO underfits small UCI sets, see docs/bnn.md)
        guide = fit(
            model,
            x_tr,
            y_tr,
            method=method,
            alpha=0.5,
            epochs=args.epochs,
            lr=0.005,
            kl_weight=0.1,
            progress=False,
        )
        # 3. ArviZ data from the PLAIN model (a wrapped model would score pooled densities)
        idatas[label] = to_inference_data(model, guide, x_te, y_te, num_samples=500)
        m = test_metrics(idatas[label])
        print(
            f"{label:>9}: test NLL {m['nll']:.3f}  RMSE {m['rmse']:.3f}  90% coverage {m['coverage']:.2f}  "
            f"({time.time() - t0:.0f}s)"
        )

    # The guard: diagnostics refuse to run inside a handler.
    try:
        with probmix(alpha=0.5):
            to_inference_data(runs["erm"][0], guide, x_te, y_te, num_samples=5)
    except RuntimeError as e:
        print("guard:", type(e).__name__)

    # 4. The held-out measure: the test log predictive density (no importance sampling).
    print(f"\ntest log predictive density ({name}; higher is better):")
    for label, idata in idatas.items():
        print(f"{label:>9}: {log_predictive_density(idata).total:.2f}")
    # ArviZ: LOO on the test log-likelihood approximates leave-one-out on TRAINING data; with
    # high Pareto k it is unreliable, and the density above is the number to trust.
    print(f"\naz.compare on the test log-likelihood ({name}):")
    print(
        az.compare(idatas)[["rank", "elpd_loo", "p_loo", "elpd_diff", "weight"]]
        .round(2)
        .to_string()
    )
    loo = az.loo(idatas["probmix"], pointwise=True)
    print(
        f"\nProbMix Pareto k > 0.7: {int(np.sum(np.asarray(loo.pareto_k) > 0.7))} of {loo.n_data_points}"
    )

    os.makedirs(args.out, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for label, idata in idatas.items():
        az.plot_ppc(idata, num_pp_samples=50)
        plt.savefig(os.path.join(args.out, f"ppc_{label}.png"), dpi=80)
        plt.close("all")
        idata.to_netcdf(os.path.join(args.out, f"{label}.nc"))
    print(f"wrote {args.out}/ppc_*.png and {args.out}/*.nc")


if __name__ == "__main__":
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    main()
