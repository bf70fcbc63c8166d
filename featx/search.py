"""Similarity search over a stored dataset: queries to ranked neighbours, and near-duplicate groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .backbones import Backbone
from .embed import embed_files
from .errors import FeatxError
from .index import normalize, open_index
from .store import FeatureStore


@dataclass
class SearchAnswer:
    """Neighbours for each query, and how the search was made."""

    results: list[dict]
    exact: bool  # no saved index: brute force
    unindexed: int = 0  # dataset vectors the saved index does not hold yet
    failures: list[dict] = field(default_factory=list)


def member_info(store: FeatureStore, dataset: str) -> dict[str, tuple[str, str | None]]:
    """Each key of the dataset with the (first) path and label it was recorded under."""
    info: dict[str, tuple[str, str | None]] = {}
    for m in store.members(dataset):
        info.setdefault(m.key, (m.path, m.label))
    return info


def resolve_ids(keys: Sequence[str], ids: Sequence[str]) -> list[str]:
    """Full keys among ``keys`` for ``id:KEY`` queries; a unique prefix of at least 8 characters is enough."""
    out = []
    for q in ids:
        hits = [k for k in keys if k.startswith(q)] if len(q) >= 8 else [k for k in keys if k == q]
        if len(hits) != 1:
            why = "matches several samples" if hits else "is not a sample of this dataset"
            raise FeatxError(f"id:{q} {why}; pass a full key (featx search prints keys with --json).")
        out.append(hits[0])
    return out


def search_dataset(
    store: FeatureStore,
    dataset: str,
    queries: Sequence[str],
    k: int = 10,
    backbone: Backbone | None = None,
) -> SearchAnswer:
    """Nearest neighbours in ``dataset`` for each query: ``id:KEY``, an image file or a folder.

    New images are embedded with ``backbone`` (which must match the store) through the cache.
    Uses the dataset's saved index when there is one, exact search otherwise.
    """
    vi, unindexed = open_index(store, dataset)
    if not 1 <= k <= vi.n:
        raise FeatxError(f"-k must be between 1 and the dataset's size ({vi.n}), not {k}.")
    labels: list[str] = []
    vectors = []
    id_queries = [q[3:] for q in queries if q.startswith("id:")]
    files = [q for q in queries if not q.startswith("id:")]
    failures: list[dict] = []
    info = member_info(store, dataset)
    if id_queries:
        keys = resolve_ids(list(info), id_queries)
        vectors.append(store.vectors(keys))
        labels += [f"id:{k}" for k in keys]
    if files:
        if backbone is None:
            raise FeatxError("searching with image files needs the store's backbone.")
        X, found, failures = embed_files(files, backbone, store, strict=True)
        vectors.append(X)
        labels += found
    D, I = vi.search(np.concatenate(vectors), k)
    results = []
    for query, scores, ids in zip(labels, D, I):
        rows = []
        for rank, (score, i) in enumerate(((s, i) for s, i in zip(scores, ids) if i >= 0), start=1):
            key = str(vi.keys[i])
            path, label = info.get(key, ("?", None))
            rows.append({"rank": rank, "key": key, "path": path, "label": label, "score": round(float(score), 6)})
        results.append({"query": query, "results": rows})
    return SearchAnswer(results, exact=unindexed is None, unindexed=unindexed or 0, failures=failures)


def find_duplicates(store: FeatureStore, dataset: str, threshold: float = 0.95, k: int = 10) -> list[dict]:
    """Groups of near-duplicates: samples whose cosine similarity is at least ``threshold``.

    Neighbours come from the dataset's index (exact search when it has none); groups are the
    connected components of the "similar enough" pairs, so A~B and B~C put A, B, C together.
    Files with identical content share a key and are always in one group.
    """
    if not 0.0 < threshold <= 1.0:
        raise FeatxError(f"--threshold must be in (0, 1], not {threshold}.")
    vi, _ = open_index(store, dataset)
    keys = vi.keys.tolist()
    X = normalize(store.vectors(keys))
    D, I = vi.search(X, min(k + 1, vi.n))
    parent = list(range(len(keys)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    best: dict[tuple[int, int], float] = {}
    for a, (scores, ids) in enumerate(zip(D, I)):
        for s, b in zip(scores, ids):
            if b >= 0 and b != a and s >= threshold:
                parent[find(a)] = find(b)
                pair = (min(a, b), max(a, b))
                best[pair] = max(best.get(pair, 0.0), float(s))
    paths_of: dict[str, list[tuple[str, str | None]]] = {}
    for m in store.members(dataset):
        paths_of.setdefault(m.key, []).append((m.path, m.label))
    groups: dict[int, list[int]] = {}
    for a in range(len(keys)):
        groups.setdefault(find(a), []).append(a)
    weakest: dict[int, float] = {}
    for (a, _), s in best.items():
        root = find(a)
        weakest[root] = min(weakest.get(root, 1.0), s)
    out = []
    for root, members in groups.items():
        items = [{"key": keys[a], "path": p, "label": lbl} for a in members for p, lbl in paths_of.get(keys[a], [])]
        if len(items) >= 2:
            out.append({"size": len(items), "min_score": round(weakest.get(root, 1.0), 6), "items": items})
    return sorted(out, key=lambda g: (-g["size"], g["items"][0]["path"]))
