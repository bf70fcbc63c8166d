"""Outliers: images far from everything else, by the similarity of their k-th nearest neighbour."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..hardware import on_cores
from ..search.flat import flat_search


def find_outliers(vectors: np.ndarray, k: int = 5, neighbours=None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of L2-normalised ``vectors`` (one per distinct image): the distance 1 − cos to its k-th
    nearest other row, and a robust z-score of it (median and MAD over all rows). Far images are often
    corrupt, off-topic or mislabelled. ``neighbours``: ``nearest_neighbours(vectors, k + 1 or more)`` when
    the caller has it already."""
    n = len(vectors)
    if k < 1:
        raise ParameterError("k", f"must be at least 1, not {k}.")
    if n < 2:
        return np.zeros(n), np.zeros(n)
    k = min(k, n - 1)
    D, I = neighbours if neighbours is not None else nearest_neighbours(vectors, k + 1)
    distance = np.empty(n)
    for r in range(n):
        others = D[r][I[r] != r]  # the row itself (usually first) is not its own neighbour
        distance[r] = 1.0 - float(others[k - 1]) if len(others) >= k else 1.0
    median = np.median(distance)
    mad = np.median(np.abs(distance - median)) * 1.4826
    z = (distance - median) / mad if mad > 0 else np.zeros(n)
    return distance, z


EXACT_BELOW = 20000  # rows up to which every row is compared with every other
REDUCED_DIMS = 128  # the candidates' search space above that
CANDIDATES = 32  # candidates per row, re-ranked by their exact cosine
PROBES = 48  # inverted lists searched per row (of 4·sqrt(n))


def nearest_neighbours(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows (the row itself included) by cosine: D (similarities, descending), I.
    See nearest_among."""
    everything = np.arange(len(vectors))
    return nearest_among(vectors, everything, everything, k, seed)


RERANK_BYTES = 128 << 20  # the candidates' vectors read at a time, by each core, to re-rank them
GATHER_QUERIES = 64  # queries whose candidates are gathered from memory at a time for their products


def nearest_among(vectors: np.ndarray, among: np.ndarray, queries: np.ndarray, k: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each row at ``queries``, its k nearest rows at ``among`` by cosine (L2-normalised ``vectors``):
    D (similarities, descending) and I (positions in ``among``).

    Up to EXACT_BELOW rows among: exact search. Above: all-against-all in full dimension is O(n²·d) (96 s at
    70,000 × 1,280; at a million, the test images against the training ones would take hours), so candidates
    come from an inverted file over the rows' leading principal components (REDUCED_DIMS, fitted on a
    sample), and the CANDIDATES nearest there are re-ranked by their exact cosine. An outlier's far neighbours
    are still found: distances shrink under projection, so the true neighbours rank near the top of the
    candidates.

    Re-ranking reads every query's candidates from ``vectors`` (a store's memory maps at scale: StoredRows), and
    that reading is most of the work: 32 million rows at a million images. So the queries go in the order of
    their inverted list, and a piece of them reads the candidates they share once (neighbouring queries have
    neighbouring candidates); the pieces are shared out among the cores.
    """
    among, queries = np.asarray(among), np.asarray(queries)
    n, d = len(among), vectors.shape[1]
    if n <= EXACT_BELOW or d <= REDUCED_DIMS:
        return flat_search(vectors[among], vectors[queries], k)
    import faiss

    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(among, min(n, 10000), replace=False))].astype(np.float32)
    mean = sample.mean(axis=0)
    centred = sample - mean
    _, V = np.linalg.eigh(centred.T @ centred)
    basis = np.ascontiguousarray(V[:, ::-1][:, :REDUCED_DIMS], dtype=np.float32)

    def reduced(X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((X - mean) @ basis, dtype=np.float32)

    # an inverted file over the reduced rows: a full scan's top-k selection would cost n² heap steps
    lists = int(4 * np.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(REDUCED_DIMS), REDUCED_DIMS, lists)
    index.train(reduced(vectors[np.sort(rng.choice(among, min(n, 40 * lists), replace=False))]))
    every_row = queries is among  # all against all (nearest_neighbours): the lists are known once the rows are added
    assigned = []
    for a in range(0, n, 50000):
        R = reduced(vectors[among[a:a + 50000]])
        index.add(R)
        if every_row:
            assigned.append(index.quantizer.assign(R, 1).ravel())
    if not every_row:
        for a in range(0, len(queries), 50000):
            assigned.append(index.quantizer.assign(reduced(vectors[queries[a:a + 50000]]), 1).ravel())
    order = np.argsort(np.concatenate(assigned), kind="stable") if len(queries) else np.arange(0)
    index.nprobe = PROBES
    m = min(n, max(k, CANDIDATES))
    D = np.empty((len(queries), k), np.float32)
    I = np.empty((len(queries), k), np.int64)
    piece = max(16, RERANK_BYTES // (4 * m * d))  # queries whose candidates one core reads together
    for a in range(0, len(queries), 8 * piece):  # searched a block at a time; its pieces re-ranked on the cores
        at = order[a:a + 8 * piece]
        Q = vectors[queries[at]]
        _, C = index.search(reduced(Q), m)
        spans = [(s, min(len(at), s + piece)) for s in range(0, len(at), piece)]
        for (s, e), (Dp, Ip) in zip(spans, on_cores(spans, lambda span: _rerank(vectors, among, Q[span[0]:span[1]],
                                                                                  C[span[0]:span[1]], k))):
            D[at[s:e]], I[at[s:e]] = Dp, Ip
    return D, I


def _rerank(vectors, among: np.ndarray, Q: np.ndarray, C: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k of each query's candidates C (positions in ``among``; -1 where none) nearest by exact cosine: D, I.
    The candidates the queries share are read from ``vectors`` once."""
    found = C >= 0
    ids, inverse = np.unique(np.where(found, C, 0), return_inverse=True)
    U = vectors[among[ids]]
    inverse = inverse.reshape(C.shape)
    exact = np.empty(C.shape, np.float32)
    for a in range(0, len(C), GATHER_QUERIES):
        exact[a:a + GATHER_QUERIES] = np.einsum("qd,qcd->qc", Q[a:a + GATHER_QUERIES], U[inverse[a:a + GATHER_QUERIES]])
    exact[~found] = -np.inf
    top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact, top, axis=1), np.take_along_axis(C, top, axis=1)
