"""How featx's cost grows with the collection: every stage's seconds and peak memory at 10k, 100k and 1M vectors.

The vectors are real: Fashion-MNIST's 70,000 images embedded by efficientnet_lite0 at 224 px (whole image,
every stage: 1,792 dimensions; its `final` columns alone: 1,280), replicated until there are N of them.
Row i is source image i mod 70,000 plus seeded Gaussian noise of half of each feature's standard deviation
(seed i // 70,000): a copy then lies at cosine ~0.94 (1,280-d) / ~0.97 (1,792-d) from its original, about
as far as a real image from its nearest real neighbour (median 0.90 / 0.97), so copies are distinct and do
not form tight clusters that would flatter the indexes. Labels and splits follow the source image
(6/7 train, 1/7 test).

Each stage runs in a fresh process (peak memory = that process's maximum resident set, page cache of the
memory-mapped shards included) with a time limit:
  write       the store's real write path (embed_source → store_batch → FeatureStore.add in batches of 64,
              membership, compaction), fed by an engine without a model; the noise's making is not counted
  load        the train split (a memory map), every value read once
  train       `featx train`'s default logreg head (C chosen on held-out data, refit, test scored)
  index       `featx index` (auto: exact below 20,000 vectors, HNSW tuned to recall@10 >= 0.95 above), then
              1,000 queries in one batch and 200 one at a time at that recall
  grow        `featx index` after 10% more vectors joined the dataset: added to the saved index, against a
              rebuild (seconds, recall@10 of 1,000 vectors against exact search)
  duplicates  `featx duplicates` through that index
  audit       `featx audit`: out-of-fold probabilities (5 folds of logreg over every image), neighbours and
              outliers, leaks, the report
  budget      `featx index --max-memory 256MB --target-recall 0.9`: every candidate's recall, bytes, queries/s
  map         `featx map` (PCA and UMAP fitted on up to 100,000 points, the rest placed by transform)
Results accumulate in benchmarks/out/scale.json (a rerun skips what is there; --fresh starts over); the
table is printed and the log-log figure with each curve's slope drawn to docs/scale.png.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000,100000,1000000] [--dims 1280,1792]
        [--stages write,load,train,index,duplicates,audit,budget,map] [--limit 1800] [--work /tmp/featx-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STAGES = ("write", "load", "train", "index", "grow", "duplicates", "audit", "budget", "map")
SOURCE = {"backbone": "efficientnet_lite0", "image_size": 224, "crop": "full", "layers": "stages"}
NOISE = 0.5  # of each feature's standard deviation
DATASET = "scale"
STORE_DTYPE = "float32"  # --store-dtype: how the scale stores keep their vectors
OUT = Path(__file__).parent / "out" / "scale.json"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def source_vectors(cache: str, dim: int):
    """The 70,000 real vectors (all 1,792 columns, or the 1,280 final ones), labels and splits, in a seeded
    shuffled order (so any N rows mix both splits), and the layer widths."""
    from featx.config import StoreQuery
    from featx.store import find_dataset

    with find_dataset("fashion-mnist", cache, StoreQuery(**SOURCE)) as store:
        X, y, _, _ = store.load("fashion-mnist")
        splits = np.array([m.split for m in store.members("fashion-mnist")])
        start, stop = store.config.columns()["final"] if dim == 1280 else (0, store.config.dim)
        order = np.random.default_rng(0).permutation(len(X))
        return np.ascontiguousarray(X[order, start:stop]), y[order], splits[order], source_blocks(cache, dim)


def source_blocks(cache: str, dim: int):
    """The layer widths of the dim-dimensional vectors (None for the final layer alone)."""
    from featx.config import StoreQuery
    from featx.store import find_dataset

    with find_dataset("fashion-mnist", cache, StoreQuery(**SOURCE)) as store:
        return None if dim == 1280 else tuple(b - a for a, b in store.config.columns().values())


def scale_config(dim: int, blocks):
    from featx.config import BackboneConfig, PreprocessConfig

    layers = ("final",) if blocks is None else tuple(f"layer{i}" for i in range(len(blocks) - 1)) + ("final",)
    return BackboneConfig(name=f"scale-{dim}", weights_sha256="0" * 64, preprocess=PreprocessConfig(224), dim=dim,
                          layers=layers, layer_dims=blocks or (), store_dtype=STORE_DTYPE)


def scale_folder(work: Path, n: int, dim: int) -> Path:
    """Where the store of n × dim vectors lives (a float16 one beside the float32 one, not in its place)."""
    return work / (f"{n}-{dim}" + ("" if STORE_DTYPE == "float32" else f"-{STORE_DTYPE}"))


def open_scale_store(work: Path, n: int, dim: int, cache: str):
    from featx.store import open_store

    return open_store(scale_config(dim, source_blocks(cache, dim)), scale_folder(work, n, dim))


# --- the stages, each run in its own process ---------------------------------------------------------


def stage_write(n: int, dim: int, work: Path, cache: str) -> dict:
    import shutil

    from featx.data import ArraySource, Item
    from featx.embed import embed_source
    from featx.embed.engines import Engine
    from featx.embed.writer import store_batch
    from featx.runtimes.base import Runtime
    from featx.store import open_store

    base, y, splits, blocks = source_vectors(cache, dim)
    std = base.std(axis=0) * NOISE
    making = [0.0]

    class Replicas(Engine):
        def run(self, source, store, indices, keys, batch_size, progress):
            embedded, failed = set(), {}
            for start in range(0, len(indices), batch_size):
                t = time.perf_counter()
                idx = np.asarray(indices[start:start + batch_size])
                X = base[idx % len(base)].copy()
                for copy in np.unique(idx // len(base)):
                    rows = idx // len(base) == copy
                    rng = np.random.default_rng([int(copy), int(idx[rows][0])])
                    X[rows] += std * rng.standard_normal((int(rows.sum()), dim), dtype=np.float32)
                making[0] += time.perf_counter() - t
                embedded.update(store_batch(store, keys, list(idx), [keys[i] for i in idx], X, failed))
            return embedded, failed

    folder = scale_folder(work, n, dim)
    shutil.rmtree(folder, ignore_errors=True)
    config = scale_config(dim, blocks)
    keys = [f"{i:064x}" for i in range(n)]
    items = [Item(f"scale:{i}", str(y[i % len(base)]), str(splits[i % len(base)])) for i in range(n)]
    source = ArraySource(DATASET, "replicated Fashion-MNIST vectors", np.zeros((1, 1, 1), np.uint8), items)
    backbone = Runtime(config)  # never called: the engine makes the vectors (a Runtime, so no torch is loaded)
    del y, splits
    with open_store(config, folder) as store:
        started = time.perf_counter()
        result = embed_source(source, backbone, store, batch_size=64, engine=Replicas(), hashes=(keys, {}))
        seconds = time.perf_counter() - started - making[0]
        assert result.n_embedded == n
        size = store.size_bytes()
    return {"seconds": seconds, "vectors_per_second": n / seconds, "store_bytes": size}


def stage_load(n: int, dim: int, work: Path, cache: str) -> dict:
    with open_scale_store(work, n, dim, cache) as store:
        started = time.perf_counter()
        X, y, _, _ = store.load(DATASET, "train")
        total = float(np.asarray(X).sum(dtype=np.float64))
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(X), "memory_map": isinstance(X, np.memmap), "checksum": total}


def stage_train(n: int, dim: int, work: Path, cache: str) -> dict:
    from featx.heads import train_head

    with open_scale_store(work, n, dim, cache) as store:
        result = train_head(store, DATASET, "logreg")
    return {"seconds": result.train_seconds, "accuracy": result.accuracy, "C": result.params.get("C_")}


def stage_index(n: int, dim: int, work: Path, cache: str) -> dict:
    from featx.search.dataset_index import index_dataset, index_path, open_index
    from featx.search.keys import unpack_keys

    with open_scale_store(work, n, dim, cache) as store:
        index_path(store, DATASET).unlink(missing_ok=True)  # not the budget stage's index of an earlier run
        report = index_dataset(store, DATASET, "auto")
        vi, _ = open_index(store, DATASET)
        rng = np.random.default_rng(1)
        Q = store.vectors(unpack_keys(vi.keys[rng.choice(vi.n, 1000, replace=False)]).tolist())
        started = time.perf_counter()
        vi.search(Q, 10)
        batched = time.perf_counter() - started
        started = time.perf_counter()
        for q in Q[:200]:
            vi.search(q[None], 10)
        single = (time.perf_counter() - started) / 200
    return {"seconds": report.build_seconds, "kind": report.kind, "recall_at_10": report.recall_at_10,
            "index_bytes": report.bytes, "params": report.params, "batched_queries_per_second": 1000 / batched,
            "single_query_ms": 1000 * single}


GROWN = "grow"  # the dataset the grow stage indexes at 90% of the collection, then at all of it


def stage_grow(n: int, dim: int, work: Path, cache: str) -> dict:
    """`featx index` after `featx embed` added 10% more vectors: adding them to the saved index against building it
    anew, each with its recall@10 for 1,000 vectors of the collection against exact search."""
    from featx.search.dataset_index import dataset_keys, index_dataset, index_path, open_index
    from featx.search.index import exact_neighbours, recall_of
    from featx.search.keys import positions_in, pack_keys
    from featx.store.view import VectorView

    def recall(store) -> float:
        vi, _ = open_index(store, GROWN)
        view = VectorView(store, GROWN)
        keys = dataset_keys(store, GROWN)
        queries = view.normalised(keys[np.random.default_rng(2).choice(len(keys), 1000, replace=False)])
        truth = exact_neighbours(queries, view.normalised_blocks(keys))  # positions in keys
        found = positions_in(vi.keys[np.maximum(vi.search(queries, 10)[1], 0)].ravel(), pack_keys(keys))
        return recall_of(found.reshape(-1, 10), truth)

    with open_scale_store(work, n, dim, cache) as store:
        members = store.members(DATASET)
        kept = [m for i, m in enumerate(members) if i % 10]  # 90%: every tenth image is embedded "later"
        with store.writing():
            store.record_dataset(GROWN, "the scale collection, 90% of it", kept)
        index_path(store, GROWN).unlink(missing_ok=True)
        first = index_dataset(store, GROWN)
        with store.writing():
            store.record_dataset(GROWN, "the scale collection, all of it", members)
        started = time.perf_counter()
        added = index_dataset(store, GROWN)
        add_seconds = time.perf_counter() - started
        added_recall = recall(store)
        started = time.perf_counter()
        rebuilt = index_dataset(store, GROWN, rebuild=True)
        rebuild_seconds = time.perf_counter() - started
        rebuilt_recall = recall(store)
    return {"seconds": add_seconds, "kind": first.kind, "first_build_seconds": first.build_seconds,
            "added": added.action, "added_note": added.note, "add_recall_at_10": added_recall,
            "rebuild_seconds": rebuild_seconds, "rebuild_build_seconds": rebuilt.build_seconds,
            "rebuild_recall_at_10": rebuilt_recall, "n_added": n - len(kept),
            "add_params": added.params, "rebuild_params": rebuilt.params}  # the search effort each tuning chose


def stage_duplicates(n: int, dim: int, work: Path, cache: str) -> dict:
    from featx.search.duplicates import find_duplicates

    with open_scale_store(work, n, dim, cache) as store:
        started = time.perf_counter()
        groups = find_duplicates(store, DATASET)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "groups": len(groups)}


def stage_audit(n: int, dim: int, work: Path, cache: str) -> dict:
    import tempfile

    from featx.audit import audit_dataset

    with open_scale_store(work, n, dim, cache) as store:
        store_cache = store.path.parent
    with tempfile.TemporaryDirectory() as out:  # the report (its contact sheet finds no images: none are files)
        started = time.perf_counter()
        report = audit_dataset(DATASET, cache=store_cache, out=out)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "folds": report["settings"]["folds"], "stages": report["seconds"],
            "summary": report["summary"], "store_dtype": STORE_DTYPE}


def stage_budget(n: int, dim: int, work: Path, cache: str) -> dict:
    from featx.search.dataset_index import index_dataset

    with open_scale_store(work, n, dim, cache) as store:
        report = index_dataset(store, DATASET, max_memory="256MB", target_recall=0.9)
    return {"seconds": report.build_seconds, "kind": report.kind, "recall_at_10": report.recall_at_10,
            "index_bytes": report.bytes, "choices": report.choices, "note": report.note}


def stage_map(n: int, dim: int, work: Path, cache: str) -> dict:
    from featx.maps import dataset_map
    from featx.maps.layout import import_umap

    import_umap().UMAP(n_components=2).fit_transform(np.random.default_rng(0).random((200, 8)))  # compiled first
    with open_scale_store(work, n, dim, cache) as store:
        started = time.perf_counter()
        layout, _ = dataset_map(store, DATASET)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "method": layout.method, "points": len(layout.keys)}


def run_stage(stage: str, n: int, dim: int, work: Path, cache: str) -> dict:
    import faiss  # noqa: F401  the libraries every stage has loaded: their memory is the baseline
    import sklearn.linear_model  # noqa: F401
    import torch  # noqa: F401

    import featx.heads  # noqa: F401

    baseline = rss_mb()
    row = globals()[f"stage_{stage}"](n, dim, work, cache)
    row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["baseline_mb"] = baseline
    return row


# --- the driver --------------------------------------------------------------------------------------


def measure(stage: str, n: int, dim: int, args) -> dict:
    cmd = [sys.executable, __file__, "--run-stage", stage, "--n", str(n), "--dim", str(dim), "--work", args.work,
           "--cache", args.cache, "--store-dtype", args.store_dtype]
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.limit)
    except subprocess.TimeoutExpired:
        return {"status": f"over the {args.limit} s limit", "seconds": None}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        killed = done.returncode in (-9, 137)
        return {"status": "killed (out of memory?)" if killed else f"failed: {' | '.join(tail)}", "seconds": None,
                "wall": time.perf_counter() - started}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["status"] = "ok"
    return row


def result_key(stage: str, n: int, dim: int) -> str:
    return f"{stage}/{n}/{dim}" + ("" if STORE_DTYPE == "float32" else f"/{STORE_DTYPE}")


def slope(points: list[tuple[int, float]]) -> float | None:
    points = [(n, v) for n, v in points if v]
    if len(points) < 2:
        return None
    x, y = np.log10([p[0] for p in points]), np.log10([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def table(results: dict, sizes, dims) -> str:
    lines = ["| stage | dim | " + " | ".join(f"{n:,}: s / peak GiB" for n in sizes) + " | slope (time) |",
             "|---|---|" + "---|" * len(sizes) + "---|"]
    for stage in STAGES:
        for dim in dims:
            cells, points = [], []
            for n in sizes:
                row = results.get(result_key(stage, n, dim))
                if row is None:
                    cells.append("not run")
                elif row["status"] != "ok":
                    cells.append(row["status"])
                else:
                    cells.append(f"{row['seconds']:,.1f} / {row['peak_mb'] / 1024:.2f}")
                    points.append((n, row["seconds"]))
            s = slope(points)
            if any(c != "not run" for c in cells):
                lines.append(f"| {stage} | {dim} | " + " | ".join(cells) + f" | {s:.2f} |" if s is not None else
                             f"| {stage} | {dim} | " + " | ".join(cells) + " | - |")
    return "\n".join(lines)


def figure(results: dict, sizes, dims, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from featx.reporting import save_figure

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
    colours = dict(zip(STAGES, plt.cm.tab10.colors))
    for stage in STAGES:
        for dim, style in zip(dims, ("-", "--")):
            rows = [(n, results.get(result_key(stage, n, dim))) for n in sizes]
            ok = [(n, r) for n, r in rows if r and r["status"] == "ok"]
            if not ok:
                continue
            t = [(n, r["seconds"]) for n, r in ok]
            m = [(n, r["peak_mb"] / 1024) for n, r in ok]
            s = slope(t)
            label = f"{stage} {dim}" + (f" (slope {s:.2f})" if s is not None else "")
            ax_t.plot(*zip(*t), style, marker="o", color=colours[stage], label=label)
            ax_m.plot(*zip(*m), style, marker="o", color=colours[stage], label=f"{stage} {dim}")
    for ax, what in ((ax_t, "seconds"), (ax_m, "peak memory (GiB, resident)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vectors")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.axhline(24, color="k", lw=0.8)
    ax_m.text(sizes[0], 24 * 1.05, "this machine's 24 GiB", fontsize=8)
    ax_t.legend(fontsize=7, ncol=2)
    ax_t.set_title("time per stage (solid 1,280-d, dashed 1,792-d)")
    ax_m.set_title("peak memory per stage")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dims", default="1280,1792")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--limit", type=int, default=1800, help="seconds a stage may take [default: 1800]")
    parser.add_argument("--work", default="/tmp/featx-scale", help="where the scale stores are written")
    parser.add_argument("--cache", default="cache", help="the cache holding Fashion-MNIST's source vectors")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--store-dtype", default="float32", choices=("float32", "float16"),
                        help="how the stores keep the vectors; float16 results are kept under keys ending /float16")
    parser.add_argument("--figure", default="docs/scale.png")
    parser.add_argument("--run-stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global STORE_DTYPE
    STORE_DTYPE = args.store_dtype
    if args.run_stage:
        print(json.dumps(run_stage(args.run_stage, args.n, args.dim, Path(args.work), args.cache), default=str))
        return
    sizes, dims = [int(s) for s in args.sizes.split(",")], [int(d) for d in args.dims.split(",")]
    results = {} if args.fresh or not OUT.is_file() else json.loads(OUT.read_text())
    os.makedirs(args.work, exist_ok=True)
    for dim in dims:
        for n in sizes:
            for stage in args.stages.split(","):
                key = result_key(stage, n, dim)
                if key in results and results[key]["status"] == "ok" and not (stage == "write" and args.fresh):
                    continue
                print(f"{key} …", file=sys.stderr, flush=True)
                results[key] = measure(stage, n, dim, args)
                print(json.dumps({key: results[key]}, default=str), flush=True)
                OUT.parent.mkdir(exist_ok=True)
                OUT.write_text(json.dumps(results, indent=1, default=str))
    print(table(results, sizes, dims))
    # A curve needs two sizes that ran: a run of one size, or of failed stages, must not overwrite the README's figure
    curves = [(stage, dim) for stage in STAGES for dim in dims
              if sum(results.get(result_key(stage, n, dim), {}).get("status") == "ok" for n in sizes) >= 2]
    if curves:
        figure(results, sizes, dims, Path(args.figure))
        print(f"figure: {args.figure}")
    else:
        print(f"figure not drawn: no stage ran at two sizes; {args.figure} left as it was")


if __name__ == "__main__":
    main()
