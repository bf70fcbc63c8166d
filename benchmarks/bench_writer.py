"""How fast can the one writer take vectors? The store's real write path, fed by an engine without a model.

With `--engine ray`, embedding workers run the model in parallel but only the driver writes the store.
This script replaces the model with a synthetic engine that hands `embed_source` ready-made vectors
(seeded noise, batch by batch, through the same `store_batch` → `FeatureStore.add` path a real engine
uses), so what is timed is the writer alone: shard files written and fsynced, catalog commits, then the
dataset's membership and the compaction that merges small shards. Printed: vectors/s and MB/s, per
batch size and dimension, and how many embedding workers of a given speed the writer keeps up with.

    .venv/bin/python benchmarks/bench_writer.py [--n 100000] [--dims 1280,1792] [--batches 64,512]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from featx.config import BackboneConfig, PreprocessConfig
from featx.data import ArraySource, Item
from featx.embed import embed_source
from featx.embed.engines import Engine
from featx.embed.writer import store_batch
from featx.store import open_store


class SyntheticEngine(Engine):
    """Vectors without a model: what the writer sees from infinitely fast workers."""

    def __init__(self, dim: int):
        self.dim = dim
        self.rng = np.random.default_rng(0)

    def run(self, source, store, indices, keys, batch_size, progress):
        embedded = set()
        failed: dict[str, str] = {}
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            X = self.rng.standard_normal((len(idx), self.dim), dtype=np.float32)
            embedded.update(store_batch(store, keys, idx, [keys[i] for i in idx], X, failed))
        return embedded, failed


def measure(n: int, dim: int, batch_size: int) -> dict:
    config = BackboneConfig(name="synthetic", weights_sha256="0" * 64, preprocess=PreprocessConfig(224), dim=dim)
    keys = [f"{i:064x}" for i in range(n)]
    source = ArraySource("synthetic", "synthetic vectors", np.zeros((1, 1, 1), np.uint8),
                         [Item(f"synthetic:{i}", None, "train") for i in range(n)])
    fake_backbone = SimpleNamespace(config=config, name="synthetic", dim=dim)
    with tempfile.TemporaryDirectory(prefix="featx-bench-writer-") as cache, open_store(config, cache) as store:
        started = time.perf_counter()
        result = embed_source(source, fake_backbone, store, batch_size=batch_size, engine=SyntheticEngine(dim),
                              hashes=(keys, {}))
        seconds = time.perf_counter() - started
    assert result.n_embedded == n
    return {"n": n, "dim": dim, "batch": batch_size, "seconds": round(seconds, 2),
            "vectors_per_second": round(n / seconds), "mb_per_second": round(n * dim * 4 / 2**20 / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--dims", default="1280,1792")
    parser.add_argument("--batches", default="64,512")
    parser.add_argument("--worker-rate", type=float, default=125.0,
                        help="images/s of one embedding worker, for the keeps-up-with column [default: this "
                             "machine's CPU rate at 224 px]")
    args = parser.parse_args()
    for dim in map(int, args.dims.split(",")):
        for batch in map(int, args.batches.split(",")):
            row = measure(args.n, dim, batch)
            row["workers_it_keeps_up_with"] = int(row["vectors_per_second"] // args.worker_rate)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
