"""An index under a memory budget, at any recall target, on the million-vector stores bench_scale.py wrote.

bench_scale.py's `budget` stage asks for recall@10 0.9; this asks for any target and budget on the same
stores (its `write` stage must have run), each dimension in turn, and prints what was chosen: the FAISS
index, its bytes, how many candidates it re-ranks from the store, recall@10, and seconds per single query.

    .venv/bin/python benchmarks/bench_scale.py --sizes 1000000 --stages write --cache CACHE
    .venv/bin/python benchmarks/bench_budget.py --target-recall 0.95 --cache CACHE
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
    args = parser.parse_args()

    from featx.search.dataset_index import index_dataset

    for dim in map(int, args.dims.split(",")):
        with open_scale_store(Path(args.work), args.n, dim, args.cache) as store:
            started = time.perf_counter()
            report = index_dataset(store, DATASET, max_memory=args.max_memory, target_recall=args.target_recall)
        chosen = next(c for c in report.choices if c["outcome"].startswith("chosen"))
        print(json.dumps({"n": args.n, "dim": dim, "seconds": round(time.perf_counter() - started, 1),
                          "index": chosen["factory"], "bytes": report.bytes, "rerank": chosen["rerank"],
                          "search": chosen["search"], "recall_at_10": report.recall_at_10,
                          "queries_per_second": chosen["queries_per_second"],
                          "single_query_ms": chosen["single_query_ms"], "note": report.note}), flush=True)


if __name__ == "__main__":
    main()
