"""How many embedding draws the marginal predictive needs: the test NLL's spread over
independent sets of draws, as the number of draws S grows.

Trains M-ProbMix and LocK M-ProbMix by the paper's toy protocol (NumPyro
trainer, ``--runs`` runs, one alpha), then scores the ID and OOD test rows with
:func:`pyro_mixup.numpyro.marginal_predictive` ``--repeats`` times for each S,
each time with fresh draws. Reported per S: the largest deviation of a
member's NLL (standardised units, the toy's) from its mean over the repeats
at the largest S, and the largest standard deviation over repeats.

    python benchmarks/predictive_draws.py                      # S in 10, 100, 1000, 10000
    python benchmarks/predictive_draws.py --draws 100,1000 --runs 3
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from pyro_mixup.experiments import train_numpyro as T
from pyro_mixup.experiments.toy_paper import HIDDEN, toy_splits


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--draws", default="10,100,1000,10000")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    T.use_compile_cache()
    data = toy_splits(args.runs, 0)
    splits = [s for s, _ in data]
    cfg = T.TrainConfig(epochs=args.epochs, lr=0.01, batch_size=0, val_draws=100)
    net, members, res = T.train_members(
        splits, ["m-probmix", "lock-m-probmix"], [args.alpha], cfg, 0, HIDDEN
    )
    run_of = [i for _, _, i in members]
    parts = {
        "id": (
            np.stack([splits[i].x_test for i in run_of]),
            np.stack([splits[i].y_test for i in run_of]),
        ),
        "ood": (
            np.stack([data[i][1][0] for i in run_of]),
            np.stack([data[i][1][1] for i in run_of]),
        ),
    }
    draws = [int(s) for s in args.draws.split(",")]
    nll = {}  # (part, S) -> [repeats, members]
    for S in draws:
        score = T._scorer(net, S, "sample")
        for part, (x, y) in parts.items():
            rows = []
            for r in range(args.repeats):
                keys = jax.vmap(lambda k: jax.random.fold_in(k, 1000 + r))(res["keys"])  # noqa: B023
                ld = score(res["params"], keys, jnp.asarray(x), jnp.asarray(y))[0]
                rows.append(-np.asarray(ld).mean(-1))
            nll[(part, S)] = np.stack(rows)
    print(
        f"toy, paper protocol, alpha {args.alpha}, {len(members)} members (M-ProbMix and LocK M-ProbMix x "
        f"{args.runs} runs), {args.repeats} independent draw sets per S; NLL in standardised units\n"
    )
    print(
        f"| part | S | max deviation from the mean at S = {draws[-1]} | max std over draw sets |\n"
        "|---|---|---|---|"
    )
    out = []
    for part in parts:
        ref = nll[(part, draws[-1])].mean(0)
        for S in draws:
            v = nll[(part, S)]
            dev, sd = float(np.abs(v - ref).max()), float(v.std(0).max())
            out.append(dict(part=part, draws=S, max_deviation=dev, max_std=sd))
            print(f"| {part} | {S} | {dev:.4f} | {sd:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(settings=vars(args), rows=out), f, indent=1)


if __name__ == "__main__":
    main()
