"""Search speed: the index `featx index --kind auto` picks versus exact NumPy search, same script.

Collection: Fashion-MNIST's 60,000 training images embedded by efficientnet_lite0 (embedded first
if the store lacks them, ~10 minutes on 2 cores); queries: its 10,000 test images, which are not
in the collection. Prints queries per second for single queries and for batches of 1,000, for the
index and for NumPy (one matrix product per query batch, then top-k), and the index's recall@10
against the exact answer.

    .venv/bin/python benchmarks/bench_search.py [--cache DIR] [--single 300]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from featx.backbones import create_backbone
from featx.embed import embed_source
from featx.search.flat import normalize
from featx.search.index import build_index
from featx.search.keys import unpack_keys
from featx.data.builtins import load_fashion_mnist_source
from featx.store import open_store


def numpy_topk(X: np.ndarray, Q: np.ndarray, k: int) -> np.ndarray:
    S = Q @ X.T
    part = np.argpartition(-S, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(S, part, 1), axis=1)
    return np.take_along_axis(part, order, 1)


def rate(fn, batches) -> float:
    start = time.perf_counter()
    n = 0
    for Q in batches:
        fn(Q)
        n += len(Q)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--single", type=int, default=300, help="single queries timed")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    backbone = create_backbone("efficientnet_lite0")
    store = open_store(backbone.config, args.cache)
    if "fashion-mnist" not in {d.name for d in store.datasets()}:
        print("embedding Fashion-MNIST (70,000 images) into", store.path, flush=True)
        embed_source(load_fashion_mnist_source(), backbone, store)
    X, _, keys, _ = store.load("fashion-mnist", "train")
    Qall, *_ = store.load("fashion-mnist", "test")
    X, Q = normalize(X), normalize(Qall)
    k = 10
    print(f"collection {X.shape}, queries {Q.shape}, k={k}")

    start = time.perf_counter()
    vi = build_index(X, keys, "auto")
    build_s = time.perf_counter() - start
    print(f"auto picked {vi.kind} {vi.params}, built and tuned in {build_s:.1f} s, "
          f"recall@10 on 1,000 held-back vectors {vi.recall_at_10:.3f}")

    truth = numpy_topk(X, Q, k)
    _, found = vi.search(Q, k)
    row_of_key = {key: i for i, key in enumerate(keys.tolist())}
    found = np.vectorize(row_of_key.__getitem__)(unpack_keys(vi.keys[found]))  # index ids follow the order of adding
    recall = np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found)])

    singles = [Q[i : i + 1] for i in range(args.single)]
    batches = [Q[i : i + 1000] for i in range(0, len(Q), 1000)]
    np_single = rate(lambda q: numpy_topk(X, q, k), singles)
    ix_single = rate(lambda q: vi.search(q, k), singles)
    np_batch = rate(lambda q: numpy_topk(X, q, k), batches)
    ix_batch = rate(lambda q: vi.search(q, k), batches)
    print(f"recall@10 of the index on the 10,000 test queries: {recall:.4f}")
    print(f"single queries: NumPy {np_single:8.1f} q/s | featx {vi.kind} {ix_single:8.1f} q/s | "
          f"{ix_single / np_single:.1f}x")
    print(f"batches of 1,000: NumPy {np_batch:8.1f} q/s | featx {vi.kind} {ix_batch:8.1f} q/s | "
          f"{ix_batch / np_batch:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({
            "kind": vi.kind, "params": vi.params, "build_seconds": build_s, "recall_at_10": recall,
            "numpy_single_qps": np_single, "index_single_qps": ix_single, "numpy_batch_qps": np_batch,
            "index_batch_qps": ix_batch}, indent=2))


if __name__ == "__main__":
    main()
