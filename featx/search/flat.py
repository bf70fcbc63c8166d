"""Exact cosine search: L2-normalised rows and FAISS's flat inner-product index."""

from __future__ import annotations

import numpy as np

from ..store.view import normalize  # noqa: F401 (exact search takes normalised rows; named here too)


def flat_index(X: np.ndarray):
    """A FAISS IndexFlatIP holding the rows of X as given (normalise them first for cosine)."""
    import faiss

    index = faiss.IndexFlatIP(X.shape[1])
    index.add(np.ascontiguousarray(X, dtype=np.float32))
    return index


def flat_search(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products D and row ids I of ``base`` for each query row."""
    return flat_index(base).search(np.ascontiguousarray(queries, dtype=np.float32), k)
