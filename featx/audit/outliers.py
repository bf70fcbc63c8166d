"""Outliers: images far from everything else, by the similarity of their k-th nearest neighbour."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..search.flat import flat_search


def find_outliers(vectors: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per row of L2-normalised ``vectors`` (one per distinct image): the distance 1 − cos to its k-th
    nearest other row, and a robust z-score of it (median and MAD over all rows). Far images are often
    corrupt, off-topic or mislabelled."""
    n = len(vectors)
    if k < 1:
        raise ParameterError("k", f"must be at least 1, not {k}.")
    if n < 2:
        return np.zeros(n), np.zeros(n)
    k = min(k, n - 1)
    D, I = flat_search(vectors, vectors, k + 1)
    distance = np.empty(n)
    for r in range(n):
        others = D[r][I[r] != r]  # the row itself (usually first) is not its own neighbour
        distance[r] = 1.0 - float(others[k - 1]) if len(others) >= k else 1.0
    median = np.median(distance)
    mad = np.median(np.abs(distance - median)) * 1.4826
    z = (distance - median) / mad if mad > 0 else np.zeros(n)
    return distance, z
