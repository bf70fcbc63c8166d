"""Similarity search over a stored dataset: queries (stored ids or image files) to ranked neighbours."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..config import StoreQuery
from ..embed import embed_files
from ..errors import ParameterError, SearchError
from ..store import FeatureStore
from ..store.view import VectorView
from .dataset_index import open_index
from .keys import unpack_keys


@dataclass
class SearchAnswer:
    """Neighbours for each query, and how the search was made."""

    results: list[dict]
    exact: bool  # no saved index: brute force
    unindexed: int = 0  # dataset vectors the saved index does not hold yet (searched exactly beside it)
    failures: list[dict] = field(default_factory=list)


def member_info(store: FeatureStore, dataset: str) -> dict[str, tuple[str, str | None, str]]:
    """Each key of the dataset with the (first) path, label and split it was recorded under."""
    info: dict[str, tuple[str, str | None, str]] = {}
    for m in store.members(dataset):
        info.setdefault(m.key, (m.path, m.label, m.split))
    return info


def resolve_ids(keys: Sequence[str], ids: Sequence[str]) -> list[str]:
    """Full keys among ``keys`` for ``id:KEY`` queries; a unique prefix of at least 8 characters is enough."""
    out = []
    for q in ids:
        hits = [k for k in keys if k.startswith(q)] if len(q) >= 8 else [k for k in keys if k == q]
        if len(hits) != 1:
            why = "matches several samples" if hits else "is not a sample of this dataset"
            raise SearchError(f"key {q!r} {why}; pass a full key (search results list each sample's key).")
        out.append(hits[0])
    return out


def search_dataset(
    store: FeatureStore,
    dataset: str,
    queries: Sequence[str],
    k: int = 10,
    backbone=None,
    use_layers: str | Sequence[str] | None = None,
) -> SearchAnswer:
    """Nearest neighbours in ``dataset`` for each query: ``id:KEY``, an image file or a folder.

    New images are embedded with ``backbone`` (a Runtime or torch Backbone matching the store) through the cache.
    Uses the dataset's saved index when there is one, exact search otherwise. ``use_layers``: search
    on some of the recipe's layers (as ``featx index --use-layers`` indexed them); default all.
    """
    vi, unindexed = open_index(store, dataset, use_layers)
    view = VectorView(store, dataset, use_layers)
    check_k(k, vi.n)
    labels: list[str] = []
    vectors = []
    id_queries = [q[3:] for q in queries if q.startswith("id:")]
    files = [q for q in queries if not q.startswith("id:")]
    failures: list[dict] = []
    info = member_info(store, dataset)
    if id_queries:
        keys = resolve_ids(list(info), id_queries)
        vectors.append(view.vectors(keys))
        labels += [f"id:{k}" for k in keys]
    if files:
        if backbone is None:
            raise ParameterError("backbone", "is needed to search with image files: pass the store's backbone.")
        X, found, failures = embed_files(files, backbone, store, strict=True)
        vectors.append(view.selection.take(X))
        labels += found
    results = answer_queries(vi, np.concatenate(vectors), labels, k, info)
    return SearchAnswer(results, exact=unindexed is None, unindexed=unindexed or 0, failures=failures)


def check_k(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise ParameterError("k", f"must be between 1 and the dataset's size ({n}), not {k}.")


def answer_queries(index, vectors: np.ndarray, queries: Sequence[str], k: int,
                   info: dict[str, tuple[str, str | None, str]]) -> list[dict]:
    """Each query's ``k`` nearest samples as ranked rows, in the queries' order: what `featx search` prints
    and the service's /search answers (``index``: a VectorIndex or the service's dataset index)."""
    D, I = index.search(vectors, k)
    return [{"query": query, "results": neighbour_rows(scores, ids, index.keys, info)}
            for query, scores, ids in zip(queries, D, I)]


def neighbour_rows(scores: np.ndarray, ids: np.ndarray, keys: np.ndarray,
                   info: dict[str, tuple[str, str | None, str]]) -> list[dict]:
    """One query's ranked neighbours as rows: rank, key, path, label, split, cosine similarity (FAISS's -1 ids
    dropped). ``score`` repeats ``similarity`` for scripts that read it before the vocabulary was made one (audit,
    duplicates and search all say similarity); it goes in the next release."""
    rows = []
    for rank, (score, i) in enumerate(((s, i) for s, i in zip(scores, ids) if i >= 0), start=1):
        key = str(unpack_keys(keys[i]))
        path, label, split = info.get(key, ("?", None, None))
        similarity = round(float(score), 6)
        rows.append({"rank": rank, "key": key, "path": path, "label": label, "split": split,
                     "similarity": similarity, "score": similarity})
    return rows


def search_stored(dataset: str, queries: Sequence[str], k: int = 10, *, cache=None,
                  store_query: StoreQuery = StoreQuery(), use_layers: str | None = None,
                  runtime: str = "auto") -> SearchAnswer:
    """Find the store holding ``dataset`` (the one ``store_query`` narrows it to: see find_dataset) and search it.

    The backbone is re-created on ``runtime`` (with the query's weights file when given) only when a query is an
    image file.
    """
    from ..runtimes import runtime_for
    from ..store import find_dataset

    with find_dataset(dataset, cache, store_query) as store:
        model = None
        if any(not q.startswith("id:") for q in queries):
            model = runtime_for(store.config, runtime=runtime, weights=store_query.weights, cache=cache)
        return search_dataset(store, dataset, list(queries), k, model, use_layers)
