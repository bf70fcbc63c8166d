"""Leaks: the same image, or a near-twin, on both sides of a split; and one image given two labels."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from ..errors import ParameterError
from .outliers import nearest_among

# Cosine similarity from which two images count as near-twins. Measured on Fashion-MNIST (lite0, 224 px,
# every stage): 7,952 of 10,000 test images have a training image at ≥ 0.95 (same style, another item),
# 983 at ≥ 0.98, 47 at ≥ 0.99 (benchmarks/bench_audit.py); the pairs at ≥ 0.994 are the same product photo.
LEAK_THRESHOLD = 0.99


def exact_findings(keys: Sequence[str], splits: Sequence[str], labels: Sequence[str | None],
                   paths: Sequence[str]) -> list[dict]:
    """Identical content (one key) listed in several splits, or with several labels."""
    rows = defaultdict(list)
    for i, k in enumerate(keys):
        rows[k].append(i)
    found = []
    for k, members in rows.items():
        if len(members) < 2:
            continue
        split_set = sorted({splits[i] for i in members})
        label_set = sorted({labels[i] for i in members if labels[i] is not None})
        base = {"key": k, "paths": [paths[i] for i in members], "splits": [splits[i] for i in members],
                "labels": [labels[i] for i in members], "similarity": 1.0}
        if len(split_set) > 1:
            found.append({"kind": "exact_leak", **base})
        if len(label_set) > 1:
            found.append({"kind": "conflicting_labels", **base})
    return found


def near_leaks(vectors: np.ndarray, keys: Sequence[str], splits: Sequence[str], labels: Sequence[str | None],
               paths: Sequence[str], threshold: float = LEAK_THRESHOLD, rows: np.ndarray | None = None) -> list[dict]:
    """Each test or val image whose most similar training image (another content key) reaches ``threshold``.

    ``vectors`` are L2-normalised (cosine similarity): the members' rows, or with ``rows`` the distinct vectors
    that member i reads at ``rows[i]`` (only each side of the split is gathered). Most similar first.
    """
    if not 0.0 < threshold <= 1.0:
        raise ParameterError("leak_threshold", f"must be in (0, 1], not {threshold}.")
    splits = np.asarray(splits)
    train = np.flatnonzero(splits == "train")
    held = np.flatnonzero(splits != "train")
    if len(train) == 0 or len(held) == 0:
        return []
    at = np.arange(len(splits)) if rows is None else np.asarray(rows)
    # searched among the distinct vectors of each side (nearest_among: exact, or candidates re-ranked at scale)
    train_rows, first_train = np.unique(at[train], return_index=True)
    held_rows, held_of = np.unique(at[held], return_inverse=True)
    D, I = nearest_among(vectors, train_rows, held_rows, min(2, len(train_rows)))
    found = []
    for q, i in enumerate(held):
        for s, j in zip(D[held_of[q]], I[held_of[q]]):
            if j < 0 or keys[train[first_train[j]]] == keys[i]:
                continue  # the same content: an exact leak, reported as such
            if s >= threshold:
                t = train[first_train[j]]
                found.append({"kind": "near_leak", "key": keys[i], "path": paths[i], "split": str(splits[i]),
                              "label": labels[i], "train_key": keys[t], "train_path": paths[t],
                              "train_label": labels[t], "similarity": round(float(s), 5)})
            break
    found.sort(key=lambda f: -f["similarity"])
    return found


def find_leaks(vectors, keys, splits, labels, paths, threshold: float = LEAK_THRESHOLD, rows=None) -> list[dict]:
    """Exact leaks, conflicting labels, then near leaks (most similar first); ``rows`` as near_leaks takes them."""
    return (exact_findings(keys, splits, labels, paths)
            + near_leaks(vectors, keys, splits, labels, paths, threshold, rows))
