"""Head training speed: featx's heads versus scikit-learn's, same data, same grid, same script.

On Fashion-MNIST embedded by efficientnet_lite0 (60,000 train / 10,000 test vectors of 1,280
dimensions; embedded first if the store lacks them, which takes ~10 minutes on 2 cores), each
featx head is trained as `featx train` does (regularisation chosen on 20% held out, refit on all)
and compared with its scikit-learn counterpart run through the same procedure: fitted over the
same grid on the same held-out split, refitted at its best value. Prints wall times, the ratio and
both test accuracies.

    .venv/bin/python benchmarks/bench_heads.py [--heads logreg,ridge,linear-svm] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from featx.backbones import create_backbone
from featx.embed import embed_source
from featx.heads import HEADS
from featx.heads.solvers import holdout_indices
from featx.data.builtins import load_fashion_mnist_source
from featx.store import open_store

BASELINES = {
    "logreg": ("C", lambda v: LogisticRegression(C=v, max_iter=1000)),
    "ridge": ("alpha", lambda v: RidgeClassifier(alpha=v)),
    "linear-svm": ("C", lambda v: LinearSVC(C=v, max_iter=1000)),
}


def load_vectors(cache):
    backbone = create_backbone("efficientnet_lite0")
    store = open_store(backbone.config, cache)
    if "fashion-mnist" not in {d.name for d in store.datasets()}:
        print("embedding Fashion-MNIST (70,000 images) into", store.path, flush=True)
        embed_source(load_fashion_mnist_source(), backbone, store)
    X, y, _, _ = store.load("fashion-mnist", "train")
    Xt, yt, _, _ = store.load("fashion-mnist", "test")
    return np.asarray(X), y, np.asarray(Xt), yt, backbone.config.precision


def sklearn_search(name, X, y, grid, budget, val_fraction=0.2, random_state=0):
    """The same procedure featx runs, with scikit-learn's estimator: search on held-out data, refit.

    Stops searching once ``budget`` seconds have gone (the time is then a lower bound) and refits
    at the best value tried.
    """
    param, make = BASELINES[name]
    start = time.perf_counter()
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    _, t = np.unique(y, return_inverse=True)
    fit_idx, val_idx = holdout_indices(t, val_fraction, random_state)
    scores = {}
    for v in sorted(grid) if param == "C" else sorted(grid, reverse=True):
        scores[v] = make(v).fit(Z[fit_idx], y[fit_idx]).score(Z[val_idx], y[val_idx])
        print(f"  scikit-learn {name} {param}={v:g}: held-out {scores[v]:.4f} "
              f"({time.perf_counter() - start:.0f} s so far)", flush=True)
        if time.perf_counter() - start > budget:
            break
    strong_first = sorted(scores) if param == "C" else sorted(scores, reverse=True)
    best = max(strong_first, key=lambda v: scores[v])
    model = make(best).fit(Z, y)
    return model, scaler, best, len(scores) < len(grid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", default="logreg,ridge,linear-svm")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--budget", type=float, default=900.0,
                    help="seconds after which a scikit-learn grid search stops (its time is then a lower bound)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()

    X, y, Xt, yt, precision = load_vectors(args.cache)
    print(f"Fashion-MNIST vectors: train {X.shape}, test {Xt.shape} (efficientnet_lite0, {precision})")
    rows = []
    for name in args.heads.split(","):
        head = HEADS[name](scaling="standard")  # the objective scikit-learn's side solves, StandardScaler and all
        grid = getattr(head, "Cs", None) or getattr(head, "alphas")
        start = time.perf_counter()
        head.fit(X, y)
        featx_s = time.perf_counter() - start
        featx_acc = 100 * head.score(Xt, yt)
        chosen = getattr(head, "C_", None) or getattr(head, "alpha_")

        start = time.perf_counter()
        model, scaler, best, cut = sklearn_search(name, X, y, grid, args.budget)
        sk_s = time.perf_counter() - start
        sk_acc = 100 * model.score(scaler.transform(Xt), yt)
        row = {"head": name, "grid": list(grid), "featx_seconds": featx_s, "featx_accuracy": featx_acc,
               "featx_choice": chosen, "sklearn_seconds": sk_s, "sklearn_accuracy": sk_acc, "sklearn_choice": best,
               "speedup": sk_s / featx_s, "sklearn_search_cut_short": cut}
        rows.append(row)
        at_least = ">= " if cut else ""
        print(f"{name:<10} featx {featx_s:7.2f} s, test {featx_acc:.2f}% (chose {chosen:g}) | scikit-learn "
              f"{at_least}{sk_s:7.2f} s, test {sk_acc:.2f}% (chose {best:g}"
              f"{', grid cut short by the budget' if cut else ''}) | {at_least}{sk_s / featx_s:.1f}x faster, "
              f"accuracy difference {featx_acc - sk_acc:+.2f} points", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
