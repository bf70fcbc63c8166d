"""Similarity search: FAISS indexes (build, tune, save, load), dataset indexes, queries, near-duplicates."""

from ..lazy import lazy_exports

KINDS = ("auto", "flat", "ivf", "hnsw")  # index kinds; auto: exact when small, HNSW when large

_EXPORTS = {
    "IndexReport": "dataset_index", "index_dataset": "dataset_index", "open_index": "dataset_index",
    "find_duplicates": "duplicates",
    "flat_search": "flat", "normalize": "flat",
    "VectorIndex": "index", "build_index": "index", "load_index": "index", "save_index": "index",
    "SearchAnswer": "query", "answer_queries": "query", "check_k": "query", "neighbour_rows": "query", "resolve_ids": "query", "search_dataset": "query",
}
__all__ = sorted(_EXPORTS) + ["KINDS"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
