"""Would two backbones in one recipe earn their place? Each backbone's grid vectors alone, and both concatenated.

Reads two stores of one dataset (``--store-a``, ``--store-b``: any featx stores holding it, e.g. lite0 and
lite2 with ``--layers grid``), lines their vectors up by content key, and trains featx's logistic head on
each alone and on both side by side, every layer block-normalised (a two-backbone recipe would be 12 layers
where each backbone has 6). Test accuracy on the dataset's test split; writes
``benchmarks/out/two-backbones-DATASET.json``.

    featx embed fashion-mnist --image-size 224 --layers grid --cache C
    featx embed fashion-mnist --backbone efficientnet_lite2 --image-size 224 --layers grid --cache C
    .venv/bin/python benchmarks/bench_two_backbones.py fashion-mnist --cache C \
        --store-a efficientnet_lite0 --store-b efficientnet_lite2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from featx.hardware import set_threads
from featx.heads import LogisticHead
from featx.config import StoreQuery
from featx.store import find_dataset

OUT = Path(__file__).parent / "out"


def load(dataset: str, cache: str, backbone: str, image_size: int, layers: str):
    with find_dataset(dataset, cache, StoreQuery(backbone=backbone, image_size=image_size, layers=layers)) as store:
        members = store.members(dataset)
        X = np.asarray(store.vectors([m.key for m in members]))
        widths = list(store.config.layer_dims or (store.config.dim,))
        return {m.key: i for i, m in enumerate(members)}, members, X, widths, store.config.describe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--store-a", default="efficientnet_lite0")
    parser.add_argument("--store-b", default="efficientnet_lite2")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--layers", default="grid")
    args = parser.parse_args()
    set_threads()
    pos_a, members, A, widths_a, what_a = load(args.dataset, args.cache, args.store_a, args.image_size, args.layers)
    pos_b, _, B, widths_b, what_b = load(args.dataset, args.cache, args.store_b, args.image_size, args.layers)
    order = [pos_b[m.key] for m in members]  # B's rows in A's order
    B = B[order]
    y = np.array([m.label for m in members], dtype=str)
    split = np.array([m.split for m in members])
    train, test = split == "train", split == "test"
    results = {"dataset": args.dataset, "a": what_a, "b": what_b, "rows": []}
    for name, X, widths in [(args.store_a, A, widths_a), (args.store_b, B, widths_b),
                            (f"{args.store_a} + {args.store_b}", np.hstack([A, B]), widths_a + widths_b)]:
        started = time.perf_counter()
        head = LogisticHead(layer_widths=tuple(widths), random_state=0).fit(X[train], y[train])
        row = {"recipe": name, "dim": int(X.shape[1]),
               "test_accuracy": round(float((head.predict(X[test]) == y[test]).mean()) * 100, 2),
               "fit_seconds": round(time.perf_counter() - started, 1)}
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"two-backbones-{args.dataset}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
