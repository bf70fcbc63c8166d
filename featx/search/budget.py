"""An index chosen to fit a memory budget: FAISS factory strings, sized, built from blocks and tuned with ParameterSpace."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Callable

import faiss
import numpy as np
from ..errors import ParameterError, SearchError
from .index import (AUTO_EXACT_BELOW, BLOCK_ROWS, SEARCH_EFFORTS, exact_neighbours, index_nbytes, least_effort,
                    recall_of, reranked)

TUNE_QUERIES = 250  # held-back queries the search settings are scanned on
RERANKS = (4, 8, 16, 32)  # candidates re-scored from the store, as multiples of k, least first
# Bits a RaBitQ index quantises each query to. FAISS's default, 4, ordered Fashion-MNIST's candidates too coarsely
# for re-ranking to mend (70,000 × 1,280, nprobe 16, top 40 re-ranked: recall@10 0.61); 8 reached 0.986.
RABITQ_QUERY_BITS = 8
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}

Reader = Callable[[np.ndarray], np.ndarray]  # positions -> their L2-normalised float32 vectors


def parse_bytes(text: str | int) -> int:
    """``256MB``, ``1.5GB``, ``300MiB`` or a number of bytes, as bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if unit not in _UNITS:
        raise ParameterError("max_memory", f"{text!r} is not a size; write it like 256MB, 1.5GB or 300MiB.")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ParameterError("max_memory", f"must be more than nothing, not {text!r}.")
    return value


def size_text(n_bytes: int) -> str:
    """Bytes for people: ``256.0 MB``, ``150 kB``."""
    return f"{n_bytes / 1e6:,.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:,.0f} kB"


@dataclass
class Candidate:
    """One index considered: its factory string, its size (estimated, then measured) and what it reached."""

    factory: str
    estimated_bytes: int
    rerank: int | None = None  # re-scores the top max(k, 10)·rerank of its codes from the store (None: codes alone)
    bytes: int | None = None
    recall_at_10: float | None = None
    search: str = ""  # ParameterSpace settings of that recall, e.g. "nprobe=32"
    queries_per_second: float | None = None  # 1,000 queries in one batch
    single_query_ms: float | None = None
    store_rows_per_query: float | None = None  # rows a single query re-ranks, read from the store's pages
    store_bytes_per_query: int | None = None  # what those rows hold (whole stored rows: the pages a query touches)
    build_seconds: float | None = None
    outcome: str = "not tried"

    def to_dict(self) -> dict:
        return asdict(self)


def coarse_lists(n: int) -> int:
    """IVF lists: a power of two near √n (≥ 39 training vectors each, FAISS's minimum), 16 to 1,024."""
    lists = 2 ** int(round(np.log2(max(np.sqrt(n), 1))))
    return int(max(16, min(1024, lists, 2 ** int(np.log2(max(n // 39, 16))))))


def candidates(n: int, d: int, key_bytes: int = 0) -> list[Candidate]:
    """Indexes worth trying for n vectors of d dimensions, most faithful first, with estimated sizes (the key
    table's ``key_bytes`` included)."""
    lists = coarse_lists(n)
    factories = ["Flat"] if n < AUTO_EXACT_BELOW else []
    factories += ["HNSW32,Flat", f"IVF{lists},Flat", f"IVF{lists},SQ8"]
    out = [Candidate(f, estimate_bytes(f, n, d)) for f in factories]
    # 4-bit codes (FAISS's fast scan: 16 centroids per part, trained in seconds) whose top candidates are
    # re-scored from the store's vectors: Fashion-MNIST's 70,000 × 1,280 under 32 MB reached recall@10 0.96
    # (target 0.95) built in 4 s, where 8-bit PQ320 alone reached 0.88 in 66 s (320 k-means of 256 centroids)
    fast_scan = [f"IVF{lists},PQ{m}x4fs" for m in dict.fromkeys((d // 2, d // 4, d // 8))
                 if m >= 4 and m % 2 == 0 and d % m == 0]
    # RaBitQ (Gao & Long 2024): one bit a dimension, d/8 bytes and two factors a vector, re-ranked from the store
    # like the 4-bit codes; between PQ(d/2) and PQ(d/4) in bytes, and on Fashion-MNIST's 70,000 × 1,280 as
    # faithful as PQ(d/2)x4fs at half its bytes (recall@10 0.986 with the top 40 re-ranked, nprobe 16)
    rabitq = [f"IVF{lists},RaBitQ"] if d % 8 == 0 else []
    # RaBitQ on fewer dimensions (principal components, randomly rotated so that every bit carries as much):
    # at 1M × 1,792 the full width's 247 MB and the key table's 32 MB do not fit in 256 MB together
    rabitq += [f"PCAR{r},IVF{lists},RaBitQ" for r in dict.fromkeys((d * 3 // 4 // 32 * 32, d // 2 // 32 * 32))
               if r >= 64]
    out += [Candidate(f, estimate_bytes(f, n, d), rerank=RERANKS[0]) for f in fast_scan[:1] + rabitq + fast_scan[1:]]
    # "np": no polysemous training, which the factory otherwise adds and which costs minutes per index.
    out += [Candidate(f, estimate_bytes(f, n, d)) for f in dict.fromkeys(
        f"IVF{lists},PQ{m}np" for m in (d // 4, d // 8, d // 16, d // 32) if m >= 4 and d % m == 0)]
    for c in out:
        c.estimated_bytes += key_bytes
    return out


def estimate_bytes(factory: str, n: int, d: int) -> int:
    """What ``factory`` takes in memory for n vectors: codes, ids, graph links, centroids, codebooks."""
    if factory == "Flat":
        return 4 * n * d
    if factory.startswith("HNSW32"):
        return n * (4 * d + 2 * 32 * 4 + 40)  # vectors, level-0 links (2M), upper levels and offsets
    if factory.startswith("PCAR"):  # the projection (d × r, the mean), then codes of r dimensions
        transform, factory = factory.split(",", 1)
        r = int(transform[4:])
        return 4 * (d * r + d) + estimate_bytes(factory, n, r)
    lists, code = factory.split(",")
    centroids = 4 * d * int(lists[3:])
    if code == "Flat":
        return n * (4 * d + 8) + centroids
    if code == "SQ8":
        return n * (d + 8) + centroids + 8 * d
    if code == "RaBitQ":  # a bit a dimension and two float factors a vector, its id; the centre of each list
        return n * (d // 8 + 8 + 8) + centroids
    if code.endswith("x4fs"):  # m half-bytes a vector, in blocks of 32 per list; 16 centroids per part
        m = int(code[2:].removesuffix("x4fs"))
        return n * (m // 2 + 8) + int(lists[3:]) * 32 * (m // 2) + centroids + 4 * 16 * d
    m = int(code[2:].removesuffix("np"))
    return n * (m + 8) + centroids + 4 * 256 * d  # PQm: m bytes a vector, 256 centroids per part


def choose_index(read: Reader, n: int, d: int, max_bytes: int, *, target_recall: float = 0.95,
                 n_queries: int = 1000, seed: int = 0, key_bytes: int = 0, row_bytes: int = 0,
                 progress: Callable[[str], None] | None = None):
    """The most faithful candidate that fits ``max_bytes`` and reaches ``target_recall`` (recall@10 of
    held-back vectors against exact search), else the fitting one of best recall. ``key_bytes``: what the
    index's key table takes, counted in every candidate's size; ``row_bytes``: one stored row's bytes, for what
a re-ranked candidate reads from the store per query.

    Vectors are read in blocks through ``read`` (positions → normalised rows), never all at once.
    Returns ``(index, order, chosen, tried)``: the FAISS index with its search settings applied,
    the positions in id order, the chosen Candidate and every Candidate considered.
    """
    say = progress or (lambda message: None)
    tried = candidates(n, d, key_bytes)
    if not any(c.estimated_bytes <= max_bytes for c in tried):
        smallest = min(tried, key=lambda c: c.estimated_bytes)
        raise SearchError(f"no index of {n:,} vectors of {d} dimensions fits in {size_text(max_bytes)}: the "
                          f"smallest, {smallest.factory}, needs about {size_text(smallest.estimated_bytes)}. "
                          "Raise max_memory=.", params=("max_memory",))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    # At most a tenth of the collection is held back: the index it is tuned on is nearly the one searched (with
    # 40% held back and added after tuning, a re-ranked 2,500-vector index measured 0.97 and answered 0.78)
    n_held = max(1, min(n_queries, n // 10))
    held, base = np.sort(perm[:n_held]), np.sort(perm[n_held:])
    queries = read(held)
    say("exact neighbours of the held-back queries")
    truth = exact_neighbours(queries, (read(base[a:a + BLOCK_ROWS]) for a in range(0, len(base), BLOCK_ROWS)))
    lists = coarse_lists(n)
    train = read(np.sort(rng.choice(base, min(len(base), max(64 * lists, 64 * 256)), replace=False)))
    centroids = None
    best = None  # (candidate, index) of the best recall so far, when none reached the target
    for c in tried:
        if c.estimated_bytes > max_bytes:
            c.outcome = "over budget (estimated)"
            continue
        if ",IVF" in f",{c.factory}" and centroids is None:  # a projected candidate projects them
            say(f"clustering {len(train):,} vectors into {lists} lists")
            centroids = _coarse_centroids(train, lists, seed)
        say(f"building {c.factory}")
        start = time.perf_counter()
        index, empty = _build(c.factory, d, train, centroids, read, base)
        # Its size once the held-back vectors join too: sizes grow linearly in vectors, plus 1% to spare.
        held_bytes = (index_nbytes(index) - empty) * len(held) / max(len(base), 1)
        c.bytes = int(1.01 * (index_nbytes(index) + held_bytes)) + key_bytes
        c.build_seconds = round(time.perf_counter() - start, 2)
        if c.bytes > max_bytes:
            c.outcome = "over budget"
            continue
        _tune(index, c, queries, truth, target_recall, exact=lambda ids: read(base[ids]), row_bytes=row_bytes)
        if c.recall_at_10 >= target_recall:
            c.outcome = "chosen"
            if best is not None:
                best[0].outcome = "below target"
            return _finish(index, c, queries, held, base, tried, key_bytes)
        c.outcome = "below target"
        if best is None or c.recall_at_10 > best[0].recall_at_10:
            best = (c, index)
        if "PQ" in c.factory:  # fewer bytes per vector only lose more: stop at the first codes that miss
            break
    if best is None:
        raise SearchError(f"no candidate index fits in {size_text(max_bytes)} once built; raise max_memory=.",
                          params=("max_memory",))
    c, index = best
    c.outcome = "chosen (best the budget allows)"  # _tune left its best setting on it
    return _finish(index, c, queries, held, base, tried, key_bytes)


def _coarse_centroids(train: np.ndarray, lists: int, seed: int) -> np.ndarray:
    km = faiss.Kmeans(train.shape[1], lists, niter=20, spherical=True, seed=seed + 1234,
                      min_points_per_centroid=1, max_points_per_centroid=256)
    km.train(train)
    return km.centroids


def _build(factory: str, d: int, train: np.ndarray, centroids, read: Reader, base: np.ndarray):
    index = _trained(factory, d, train, centroids)
    empty = index_nbytes(index)
    for a in range(0, len(base), BLOCK_ROWS):  # the build never holds all the vectors
        index.add(read(base[a:a + BLOCK_ROWS]))
    return index, empty


def _trained(factory: str, d: int, train: np.ndarray, centroids):
    """The empty index ``factory`` names, trained on ``train``; an IVF one takes the shared ``centroids``."""
    if factory.startswith("PCAR"):
        transform, inner = factory.split(",", 1)
        projection = inner_product_projection(train, int(transform[4:]))
        A = faiss.vector_to_array(projection.A).reshape(projection.d_out, d)
        index = faiss.IndexPreTransform(projection, _trained(inner, projection.d_out, train @ A.T, centroids @ A.T))
        index.is_trained = True
        return index
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if factory.startswith("IVF"):
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer.add(centroids)  # trained once for every IVF candidate; train() now trains the codes only
        if "PQ" in factory:
            faiss.downcast_index(ivf).pq.cp.min_points_per_centroid = 1  # small collections: no warning per part
    if factory.startswith("HNSW"):
        index.hnsw.efConstruction = 80
    index.train(train)
    if factory.endswith("RaBitQ"):
        faiss.downcast_index(faiss.extract_index_ivf(index)).qb = RABITQ_QUERY_BITS  # kept when the index is saved
    return index


def inner_product_projection(train: np.ndarray, r: int, seed: int = 0):
    """A linear map to r dimensions that keeps inner products as well as r can: the top r eigenvectors of the
    vectors' second moment (not their covariance: FAISS's PCAMatrix subtracts the mean, which shifts each inner
    product by a term of its own and would re-order the neighbours), then a random rotation, so that each of
    RaBitQ's bits carries a like share of the variance."""
    d = train.shape[1]
    moment = (train.T.astype(np.float64) @ train) / len(train)
    _, vectors = np.linalg.eigh(moment)  # eigenvalues ascending
    top = vectors[:, ::-1][:, :r].T
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((r, r)))
    A = np.ascontiguousarray(rotation @ top, dtype=np.float32)
    projection = faiss.LinearTransform(d, r, False)
    faiss.copy_array_to_vector(A.ravel(), projection.A)
    projection.is_trained = True
    return projection


def _tune(index, c: Candidate, queries: np.ndarray, truth: np.ndarray, target_recall: float,
          exact=None, row_bytes: int = 0) -> None:
    """The least effort reaching the target (or the best recall of any setting), set on the index (and, for a
    re-ranked candidate, ``c.rerank``). ``exact``: ids → their exact vectors, for re-ranking."""
    knob = "nprobe" if ",IVF" in f",{c.factory}" else "efSearch" if c.factory.startswith("HNSW") else None
    space = faiss.ParameterSpace()
    if knob is None:
        values = [""]
    else:
        most = faiss.extract_index_ivf(index).nlist if knob == "nprobe" else max(SEARCH_EFFORTS[knob])
        values = [f"{knob}={v}" for v in SEARCH_EFFORTS[knob] if v <= most]
    # (search settings, rerank): a re-ranked candidate tries each effort of its codes at each depth in turn
    settings = [(v, r) for r in (RERANKS if c.rerank else [None]) for v in values]
    k = truth.shape[1]
    # The settings are scanned on a quarter of the held-back queries (the scan searched them all up to 9
    # times over: 20 s of a 70,000-vector build); the chosen one's recall is then measured on all of them.
    # If all of them then fall short of the target, the next settings are measured on all of them too.

    rows_read = [0]  # rows re-ranking read from the store

    def read_exact(ids: np.ndarray) -> np.ndarray:
        rows_read[0] += len(ids)
        return exact(ids)

    def search(i: int, Q: np.ndarray, n_neighbours: int):
        value, rerank = settings[i]
        if value:
            space.set_index_parameters(index, value)
        return reranked(index, Q, n_neighbours, rerank, read_exact) if rerank else index.search(Q, n_neighbours)

    def recall_at(i: int, m: int) -> float:
        return recall_of(search(i, queries[:m], k)[1], truth[:m])

    i, recall = least_effort(recall_at, len(settings), len(queries), target_recall, scan=TUNE_QUERIES)
    c.recall_at_10, (c.search, c.rerank) = round(recall, 4), settings[i]
    start = time.perf_counter()
    search(i, queries, 10)
    c.queries_per_second = round(len(queries) / (time.perf_counter() - start), 1)
    singles = queries[: min(200, len(queries))]
    rows_read[0] = 0
    start = time.perf_counter()
    for q in singles:
        search(i, q[None], 10)
    c.single_query_ms = round(1000 * (time.perf_counter() - start) / len(singles), 3)
    if c.rerank:
        c.store_rows_per_query = round(rows_read[0] / len(singles), 1)
        c.store_bytes_per_query = int(c.store_rows_per_query * row_bytes)


def _finish(index, c: Candidate, queries, held, base, tried, key_bytes: int):
    index.add(queries)  # the held-back vectors are part of the collection too
    c.bytes = index_nbytes(index) + key_bytes
    return index, np.concatenate([base, held]), c, tried
