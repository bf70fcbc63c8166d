"""FAISS indexes over L2-normalised vectors (inner product = cosine): build, tune, save, load."""

from __future__ import annotations

import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import faiss
import numpy as np

from ..errors import ParameterError, SearchError
from ..store.atomic import atomic_write
from .flat import flat_index, normalize
from .keys import join_keys, pack_keys

from . import KINDS
BLOCK_ROWS = 50000  # vectors normalised and added at a time when building
AUTO_EXACT_BELOW = 20000  # below this, exact search is fast enough and needs no training
TARGET_RECALL = 0.95
RERANK_QUERIES = 64  # queries re-ranked at a time: their candidates' vectors are gathered in one read

Exact = Callable[[np.ndarray], np.ndarray]  # positions (sorted) -> their vectors, normalised as the index's
FORMAT = "featx-index"
INDEX_MEMBER = "index.faiss"


@dataclass
class VectorIndex:
    """A FAISS index whose ids are positions in ``keys`` (catalog content hashes, held packed: see keys.py)."""

    index: object
    keys: np.ndarray
    kind: str
    params: dict = field(default_factory=dict)
    recall_at_10: float | None = None
    build_seconds: float = 0.0
    store_key: str = ""
    dataset: str = ""
    layer_widths: tuple[int, ...] | None = None  # layer widths of a multi-layer recipe, normalised one by one
    layers: tuple[str, ...] | None = None  # the recipe's layers it holds (None: all of them)
    # Compressed codes re-ranked exactly (params["rerank"] = r: the top max(k, 10)·r by codes re-scored from the store):
    # how to read the exact vectors; attached by open_index, never saved
    exact: Exact | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.keys = pack_keys(self.keys)

    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def nbytes(self) -> int:
        """Its memory: the FAISS index and the key table."""
        return index_nbytes(self.index) + self.keys.nbytes

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities D and positions I (into ``keys``) of the k nearest, for each query row."""
        check_collection_k(k, self.n)
        if Q.shape[1] != self.dim:
            raise SearchError(f"queries have {Q.shape[1]} dimensions, but the index expects {self.dim}.")
        Q = normalize(Q, layer_widths=self.layer_widths)
        rerank = self.params.get("rerank")
        if not rerank:
            return self.index.search(Q, k)
        if self.exact is None:
            raise SearchError("this index re-ranks its candidates from the store's vectors: open it with its store "
                              "(open_index), not on its own.")
        return reranked(self.index, Q, k, rerank, self.exact)


def check_collection_k(k: int, n: int) -> None:
    """Refuse a k an index of ``n`` vectors cannot answer."""
    if not 1 <= k <= n:
        raise SearchError(f"k must be between 1 and the collection size ({n}), not {k}.", params=("k",))


def reranked(index, Q: np.ndarray, k: int, rerank: int, exact: Exact) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest by exact inner product among the ``max(k, 10)·rerank`` nearest by ``index``'s codes.

    Compressed codes order the far candidates well and the near ones poorly; re-scoring a few of them
    from the exact vectors (a store's memory map: only those rows are read) restores the order
    (README "Similarity search": Fashion-MNIST under 32 MB, recall@10 0.882 for 8-bit codes alone, 0.960
    for 4-bit codes re-ranked).
    """
    # the depth tuned for recall@10 is the least for any k: a top 5 from 10·r candidates, not 5·r
    wide = min(index.ntotal, max(k, 10) * rerank)
    D = np.full((len(Q), k), -np.inf, dtype=np.float32)
    I = np.full((len(Q), k), -1, dtype=np.int64)
    for a in range(0, len(Q), RERANK_QUERIES):
        q = Q[a:a + RERANK_QUERIES]
        _, C = index.search(q, wide)
        rows = np.unique(C[C >= 0])
        if not len(rows):
            continue
        every = exact(rows) @ q.T  # each candidate against each query of the chunk: no (query, candidate, d) copy
        scores = every[np.searchsorted(rows, np.maximum(C, 0)), np.arange(len(q))[:, None]]
        scores[C < 0] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        D[a:a + len(q), :top.shape[1]] = np.take_along_axis(scores, top, 1)
        I[a:a + len(q), :top.shape[1]] = np.take_along_axis(C, top, 1)
    I[~np.isfinite(D)] = -1
    return D, I


def build_index(X: np.ndarray, keys, kind: str = "auto", *, target_recall: float = TARGET_RECALL,
                n_queries: int = 1000, seed: int = 0, layer_widths: tuple[int, ...] | None = None) -> VectorIndex:
    """Build an index of ``kind`` over rows of X (normalised here); approximate kinds are tuned.

    ``auto`` picks exact search below AUTO_EXACT_BELOW vectors and HNSW above: its graph adds
    2·M·4 = 256 bytes per vector (5% of a 1,280-d float32 vector) and answers single queries
    about 2.6x faster than IVF at the same recall (benchmarks/bench_search.py).

    Approximate kinds are tuned on real outside queries: ``n_queries`` sampled vectors are held
    back, the rest indexed, nprobe / efSearch raised until recall@10 of the held-back vectors
    against exact search reaches ``target_recall``, and only then are they added. ``layer_widths``: the
    layer widths of a multi-layer recipe, each normalised on its own (see ``normalize``).
    """
    check_kind(kind)
    keys = pack_keys(keys)
    n, d = X.shape
    if n == 0:
        raise SearchError("cannot index an empty collection.")
    start = time.perf_counter()
    if kind == "auto":
        kind = "flat" if n < AUTO_EXACT_BELOW else "hnsw"
    params: dict = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = int(max(1, min(4 * np.sqrt(n), n // 39)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = X if n <= 64 * nlist else X[rng.choice(n, 64 * nlist, replace=False)]
        index.train(normalize(sample, layer_widths=layer_widths))
        params = {"nlist": nlist}
    else:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        params = {"M": 32, "efConstruction": 80}
    vi = VectorIndex(index=index, keys=keys, kind=kind, params=params, layer_widths=layer_widths)
    # X is read and normalised a block at a time (it may be a store's memory map): never a second copy of it.
    if kind == "flat":
        for part in normalised_blocks(X, np.arange(n), layer_widths):
            index.add(part)
        vi.recall_at_10 = 1.0
    else:
        held = np.random.default_rng(seed).permutation(n)
        held, base = np.sort(held[: min(n_queries, n // 2)]), np.sort(held[min(n_queries, n // 2):])
        for part in normalised_blocks(X, base, layer_widths):
            index.add(part)
        queries = normalize(X[held], layer_widths=layer_widths)
        tune_index(vi, queries, exact_neighbours(queries, normalised_blocks(X, base, layer_widths)),
                   target_recall=target_recall)
        index.add(queries)
        vi.keys = join_keys(keys[base], keys[held])  # ids follow the order of adding
    vi.build_seconds = time.perf_counter() - start
    return vi


def normalised_blocks(X: np.ndarray, rows: np.ndarray, layer_widths: tuple[int, ...] | None = None,
                      size: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
    """X's ``rows``, normalised, ``size`` rows at a time: the only copies of X an index build makes."""
    for a in range(0, len(rows), size):
        yield normalize(X[rows[a:a + size]], layer_widths=layer_widths)


def exact_neighbours(queries: np.ndarray, base_blocks: Iterable[np.ndarray], k: int = 10) -> np.ndarray:
    """Ids of each query's exact top-k inner products among the rows ``base_blocks`` yields, in turn
    (FAISS's blockwise ground truth: the rows are never all in memory at once)."""
    from faiss.contrib.exhaustive_search import knn_ground_truth

    return knn_ground_truth(queries, base_blocks, k, metric_type=faiss.METRIC_INNER_PRODUCT)[1]


def recall_of(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact ids ``truth`` (one row per query) that ``found`` holds."""
    return sum(len(set(t) & set(f)) for t, f in zip(truth.tolist(), found.tolist())) / truth.size


def recall_at_k(vi: VectorIndex, base: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Share of the exact top-k that the index returns for ``queries`` (normalised rows).

    ``base`` holds the normalised vectors the index contains, in id order: the exact answer is a
    brute-force search over it.
    """
    k = min(k, len(base))
    _, truth = flat_index(base).search(queries, k)
    return recall_of(vi.index.search(queries, k)[1], truth)


SEARCH_EFFORTS = {"nprobe": (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256),  # least first
                  "efSearch": (16, 24, 32, 48, 64, 96, 128, 192, 256, 512)}


def least_effort(recall_at: Callable[[int, int], float], n_settings: int, n_queries: int, target: float,
                 scan: int | None = None) -> tuple[int, float]:
    """The first of ``n_settings`` search settings (least effort first) whose recall@10 reaches ``target``,
    else the best one; and its recall on every query. The one tuner of `featx index` and of budgets.

    ``recall_at(i, m)`` is setting i's recall on the first m queries. The settings are scanned on ``scan``
    of them (all when None); the chosen one's recall is then measured on all, and when it falls short
    there, the next settings are measured on all too.
    """
    scan = n_queries if scan is None else max(1, min(n_queries, scan))
    best = (-1.0, 0)
    for i in range(n_settings):
        recall = recall_at(i, scan)
        if recall > best[0] + 1e-9:
            best = (recall, i)
        if recall >= target:
            break
    i = best[1]
    recall = best[0] if scan == n_queries else recall_at(i, n_queries)
    while recall < target and i + 1 < n_settings and best[0] >= target:
        i += 1
        recall = recall_at(i, n_queries)
    return i, recall


def tune_index(vi: VectorIndex, queries: np.ndarray, truth: np.ndarray, *,
               target_recall: float = TARGET_RECALL) -> None:
    """Set the smallest search effort whose recall@10 for ``queries`` (not in the index) reaches
    ``target_recall``; record the recall in ``vi``. ``truth``: the queries' exact neighbours among
    the indexed vectors (``exact_neighbours``), ids in the index's order.
    """
    if vi.kind == "flat":
        vi.recall_at_10 = 1.0
        return
    knob, holder = ("nprobe", vi.index) if vi.kind == "ivf" else ("efSearch", vi.index.hnsw)
    values = [v for v in SEARCH_EFFORTS[knob] if knob != "nprobe" or v <= vi.index.nlist] or [vi.index.nlist]

    def recall_at(i: int, m: int) -> float:
        setattr(holder, knob, values[i])
        return recall_of(vi.index.search(queries[:m], truth.shape[1])[1], truth[:m])

    i, recall = least_effort(recall_at, len(values), len(queries), target_recall)
    setattr(holder, knob, values[i])
    vi.params[knob] = values[i]
    vi.recall_at_10 = round(recall, 4)


def index_nbytes(index) -> int:
    """The FAISS index's serialised size (about its size in memory), counted as it streams: no copy of it."""
    total = [0]

    def count(chunk) -> None:
        total[0] += len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total[0]


def save_index(vi: VectorIndex, path: str | os.PathLike) -> Path:
    """The index, its keys and metadata in one zip (``.npz``: keys.npy, meta.npy and index.faiss), via a
    temp file and a rename. The index streams into the file: a 5 GB index is never copied in memory."""
    meta = {"format": FORMAT, "kind": vi.kind, "params": vi.params, "recall_at_10": vi.recall_at_10,
            "build_seconds": vi.build_seconds, "store_key": vi.store_key, "dataset": vi.dataset,
            "layer_widths": list(vi.layer_widths) if vi.layer_widths else None, "layers": list(vi.layers) if vi.layers else None}
    arrays = {"keys": np.asarray(vi.keys), "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open(INDEX_MEMBER, "w", force_zip64=True) as out:
            faiss.write_index(vi.index, faiss.PyCallbackIOWriter(out.write))
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, array, allow_pickle=False)
    return Path(path)


def _widths(meta: dict) -> tuple[int, ...] | None:
    """The layer widths an index was saved with ("blocks" in indexes saved before 2026-12-06)."""
    widths = meta.get("layer_widths", meta.get("blocks"))
    return tuple(widths) if widths else None


def load_index(path: str | os.PathLike, *, read_index: bool = True) -> VectorIndex:
    """A saved index; with ``read_index=False`` its keys and metadata only (``index`` is None)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(bytes(_read_array(zf, "meta.npy")).decode())
            keys = _read_array(zf, "keys.npy")
            if not read_index:
                index = None
            elif INDEX_MEMBER in zf.namelist():
                with zf.open(INDEX_MEMBER) as src:
                    index = faiss.read_index(faiss.PyCallbackIOReader(src.read))
            else:  # saved before indexes were streamed: the serialised bytes as an array
                index = faiss.deserialize_index(_read_array(zf, "index.npy"))
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise SearchError(f"{str(path)!r} is not a readable featx index ({e}); rebuild it (index the dataset again).") from None
    if meta.get("format") != FORMAT:
        raise SearchError(f"{str(path)!r} is not a featx index; rebuild it (index the dataset again).")
    vi = VectorIndex(index=index, keys=keys, kind=meta["kind"], params=meta.get("params", {}),
                     recall_at_10=meta.get("recall_at_10"), build_seconds=meta.get("build_seconds", 0.0),
                     store_key=meta.get("store_key", ""), dataset=meta.get("dataset", ""),
                     layer_widths=_widths(meta),
                     layers=tuple(meta["layers"]) if meta.get("layers") else None)
    if index is None:
        return vi
    if "nprobe" in vi.params:
        index.nprobe = vi.params["nprobe"]
    if "efSearch" in vi.params:
        index.hnsw.efSearch = vi.params["efSearch"]
    if vi.params.get("search"):  # an index chosen under a memory budget: FAISS's own settings string
        faiss.ParameterSpace().set_index_parameters(index, vi.params["search"])
    return vi


def _read_array(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(name) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ParameterError("kind", f"must be one of {', '.join(KINDS)}, not {kind!r}.")
