"""The MLP head against logistic regression on a stored dataset's vectors: test accuracy and fit seconds.

Reads the train and test splits of DATASET from the store under --cache that holds it (the default recipe's
store when several do, as every command chooses), fits featx's LogisticHead and MLPHead (one seed per
--seeds), and prints a row each. Run it alone: the fit seconds are the figure.

    .venv/bin/featx embed fashion-mnist --crop full --cache C      # 224 px, every stage
    .venv/bin/python benchmarks/bench_mlp.py fashion-mnist --cache C --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--layers", default=None, help="the store's recipe to read (final, stages) when several")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    from featx.hardware import set_threads
    from featx.heads import LogisticHead, MLPHead
    from featx.config import StoreQuery
    from featx.store import find_dataset
    from featx.store.columns import select_layers

    set_threads()
    with find_dataset(args.dataset, args.cache, StoreQuery(layers=args.layers, image_size=args.image_size)) as store:
        members = store.members(args.dataset)
        split = {s: [m for m in members if m.split == s] for s in ("train", "test")}
        X, y = ({s: store.vectors([m.key for m in split[s]]) for s in split},
                {s: np.array([m.label for m in split[s]]) for s in split})
        selection, describe = select_layers(store.config, None), store.config.describe()
    print(f"{args.dataset}: {describe}, {X['train'].shape[0]:,} train × {X['train'].shape[1]:,}, "
          f"{X['test'].shape[0]:,} test")
    heads = [("logreg", 0, LogisticHead(layer_widths=selection.layer_widths))]
    heads += [("mlp", seed, MLPHead(layer_widths=selection.layer_widths, random_state=seed)) for seed in args.seeds]
    for name, seed, head in heads:
        started = time.perf_counter()
        head.fit(X["train"], y["train"])
        seconds = time.perf_counter() - started
        accuracy = float(np.mean(head.predict(X["test"]) == y["test"]))
        print(json.dumps({"head": name, "seed": seed, "test_accuracy": round(accuracy, 4),
                          "fit_seconds": round(seconds, 1),
                          **({"epochs": head.n_epochs_, "best_epoch": head.best_epoch_} if name == "mlp" else {})}),
              flush=True)


if __name__ == "__main__":
    main()
