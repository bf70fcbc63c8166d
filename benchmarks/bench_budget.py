"""An index under a memory budget, at any recall target, on the million-vector stores bench_scale.py wrote.

bench_scale.py's `budget` stage asks for recall@10 0.9; this asks for any target and budget on the same
stores (its `write` stage must have run), each dimension in turn, and prints what was chosen: the FAISS
index, its bytes (the key table included), how many candidates it re-ranks from the store, recall@10, and
seconds per single query while tuning; with --served, also the index as `featx search` opens it in a fresh
process: seconds to open, and a single query's milliseconds.

    .venv/bin/python benchmarks/bench_scale.py --sizes 1000000 --stages write --cache CACHE
    .venv/bin/python benchmarks/bench_budget.py --target-recall 0.95 --cache CACHE [--served]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_scale import DATASET, open_scale_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000000)
    parser.add_argument("--dims", default="1280,1792")
    parser.add_argument("--max-memory", default="256MB")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--work", default="/tmp/featx-scale", help="where bench_scale.py wrote its stores")
    parser.add_argument("--cache", default="cache", help="the cache holding Fashion-MNIST's source vectors")
    parser.add_argument("--served", action="store_true",
                        help="also open the index as featx search does, in a fresh process, and time single queries")
    args = parser.parse_args()

    from featx.search.dataset_index import index_dataset

    for dim in map(int, args.dims.split(",")):
        with open_scale_store(Path(args.work), args.n, dim, args.cache) as store:
            started = time.perf_counter()
            report = index_dataset(store, DATASET, max_memory=args.max_memory, target_recall=args.target_recall)
            seconds = time.perf_counter() - started
        served = served_queries(Path(args.work), args.n, dim, args.cache) if args.served else {}
        chosen = next(c for c in report.choices if c["outcome"].startswith("chosen"))
        print(json.dumps({"n": args.n, "dim": dim, "seconds": round(seconds, 1), **served,
                          "index": chosen["factory"], "bytes": report.bytes, "rerank": chosen["rerank"],
                          "search": chosen["search"], "recall_at_10": report.recall_at_10,
                          "queries_per_second": chosen["queries_per_second"],
                          "single_query_ms": chosen["single_query_ms"],
                          "store_bytes_per_query": chosen.get("store_bytes_per_query"), "note": report.note}), flush=True)


def served_queries(work: Path, n: int, dim: int, cache: str, singles: int = 300) -> dict:
    """The index as `featx search` and the service open it, in a fresh process: seconds to open it, and single
    queries of stored vectors (the first 50 warm the pages they read and are not counted)."""
    import subprocess
    import sys

    script = f"""
import json, sys, time
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from bench_scale import DATASET, open_scale_store
from featx.search.dataset_index import open_index
from featx.search.keys import unpack_keys
with open_scale_store(Path({str(work)!r}), {n}, {dim}, {cache!r}) as store:
    started = time.perf_counter()
    vi, _ = open_index(store, DATASET)
    opened = time.perf_counter() - started
    picked = np.random.default_rng(1).choice(vi.n, {singles}, replace=False)
    Q = store.vectors(unpack_keys(vi.keys[picked]).tolist())
    for q in Q[:50]:
        vi.search(q[None], 10)
    started = time.perf_counter()
    for q in Q[50:]:
        vi.search(q[None], 10)
    each = (time.perf_counter() - started) / (len(Q) - 50)
print(json.dumps({{"open_seconds": round(opened, 2), "served_single_query_ms": round(1000 * each, 3)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
