"""Does a float16 store cost accuracy? Fashion-MNIST's vectors kept as float32 and as float16, same head, side by side.

The vectors of efficientnet_lite0 at 224 px (whole image, every stage: 1,792 dimensions; and its final
1,280 columns alone) are written through the store's real write path twice, into a float32 store and a
float16 store (`--store-dtype float16`: FeatureStore.add rounds them), then `featx train`'s default
logreg head is trained on each store's 60,000 training vectors and scored on its 10,000 test vectors.
Printed: test accuracy of each, the difference in points, the shards' bytes, and the largest rounding
error. Rounding in the store is exactly what `featx embed --store-dtype float16` does to the vectors
the backbone computes (tests/test_store_dtype.py checks that), so no re-embedding is needed.

    .venv/bin/python benchmarks/bench_store_dtype.py [--cache cache]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

import numpy as np

from featx.heads import train_head
from featx.config import StoreQuery
from featx.store import find_dataset, open_store

SOURCE = {"backbone": "efficientnet_lite0", "image_size": 224, "crop": "full", "layers": "stages"}


def copy_into(config, members, X, cache) -> dict:
    with open_store(config, cache) as store:
        with store.writing():
            for a in range(0, len(X), 4096):
                store.add([m.key for m in members[a:a + 4096]], X[a:a + 4096])
            store.record_dataset("fashion-mnist", "fashion-mnist", members)
            store.compact([m.key for m in members])
        result = train_head(store, "fashion-mnist", "logreg")
        shards = sum((store.path / "shards" / f).stat().st_size for f in store.shard_files())
        stored = store.load("fashion-mnist")[0]
    return {"accuracy": result.accuracy, "C": result.params.get("C_"), "seconds": result.train_seconds,
            "shard_bytes": shards, "max_rounding_error": float(np.abs(stored - X).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="cache")
    args = parser.parse_args()
    with find_dataset("fashion-mnist", args.cache, StoreQuery(**SOURCE)) as store:
        X, *_ = store.load("fashion-mnist")
        X = np.asarray(X)
        members = store.members("fashion-mnist")
        full = store.config
    unique = list({m.key: m for m in members}.values())
    assert len(unique) == len(members), "the copy assumes one vector per member"
    recipes = {"stages (1,792-d)": (full, X), "final (1,280-d)": (full.final_only(), X[:, slice(*full.columns()["final"])])}
    for name, (config, vectors) in recipes.items():
        vectors = np.ascontiguousarray(vectors)
        with tempfile.TemporaryDirectory(prefix="featx-bench-dtype-") as cache:
            row = {"recipe": name}
            for dtype in ("float32", "float16"):
                row[dtype] = copy_into(dataclasses.replace(config, store_dtype=dtype), members, vectors, cache)
            row["difference_points"] = round(100 * (row["float16"]["accuracy"] - row["float32"]["accuracy"]), 3)
            row["bytes_ratio"] = round(row["float16"]["shard_bytes"] / row["float32"]["shard_bytes"], 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
