"""A dataset's index beside its store: build or update it, and open it (or exact search) for queries."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SearchError
from ..store import FeatureStore
from ..store.atomic import name_stem
from ..store.columns import select_layers
from .flat import flat_index, normalize
from .index import AUTO_EXACT_BELOW, VectorIndex, build_index, check_kind, load_index, save_index, tune_index


def layer_blocks(store: FeatureStore) -> tuple[int, ...] | None:
    """The widths of the store's layers when it holds several: search normalises each on its own."""
    return select_layers(store.config).blocks


def index_path(store: FeatureStore, dataset: str) -> Path:
    return store.path / "indexes" / f"{name_stem(dataset)}.npz"


def dataset_keys(store: FeatureStore, dataset: str) -> np.ndarray:
    """Unique keys of a dataset in first-occurrence order, from the catalog alone."""
    store.dataset(dataset)  # a clear error for an unknown dataset
    return np.array(list(dict.fromkeys(m.key for m in store.members(dataset))), dtype=str)


def dataset_vectors(store: FeatureStore, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys of a dataset (first occurrence order) and their vectors."""
    keys = dataset_keys(store, dataset)
    return keys, store.vectors(keys.tolist())


@dataclass
class IndexReport:
    dataset: str
    kind: str
    n: int
    dim: int
    build_seconds: float
    bytes: int
    recall_at_10: float | None
    params: dict
    path: str
    action: str  # built, added, unchanged

    def to_dict(self) -> dict:
        return dict(vars(self))


def index_dataset(store: FeatureStore, dataset: str, kind: str = "auto") -> IndexReport:
    """Build or update the index of a dataset, saved beside its store.

    An existing index of the same kind gains the dataset's new vectors when none were removed
    (FAISS can add to flat, IVF and HNSW indexes); anything else rebuilds it.
    """
    check_kind(kind)
    if store.read_only:
        raise SearchError(f"store {str(store.path)!r} is read-only here, so an index cannot be saved beside it; "
                          "`featx search` still answers, by exact search.")
    keys = dataset_keys(store, dataset)
    path = index_path(store, dataset)
    start = time.perf_counter()
    old = load_index(path) if path.is_file() else None
    action = "built"
    if (old is not None and old.store_key == store.key and old.dataset == dataset and kind in ("auto", old.kind)
            and old.blocks == layer_blocks(store)):
        have = set(old.keys.tolist())
        new = [i for i, k in enumerate(keys.tolist()) if k not in have]
        if have <= set(keys.tolist()) and not (kind == "auto" and old.kind == "flat"
                                                  and len(keys) >= AUTO_EXACT_BELOW):
            if new:
                # Only the new vectors are read, unless retuning needs the indexed ones too.
                fresh = normalize(store.vectors(keys[new].tolist()), blocks=old.blocks)
                if old.kind != "flat" and len(new) >= 100:
                    # The new vectors are outside queries for the index as it stands: retune on them.
                    tune_index(old, normalize(store.vectors(old.keys.tolist()), blocks=old.blocks), fresh)
                old.index.add(fresh)
                old.keys = np.concatenate([old.keys, keys[new]])
                action = "added"
            else:
                action = "unchanged"
            vi = old
            vi.build_seconds = time.perf_counter() - start
    if action == "built":
        vi = build_index(store.vectors(keys.tolist()), keys, kind, blocks=layer_blocks(store))
    vi.store_key, vi.dataset = store.key, dataset
    if action != "unchanged":
        path.parent.mkdir(exist_ok=True)
        save_index(vi, path)
    return IndexReport(dataset=dataset, kind=vi.kind, n=vi.n, dim=vi.dim, build_seconds=round(vi.build_seconds, 3),
                       bytes=vi.nbytes(), recall_at_10=vi.recall_at_10, params=vi.params, path=str(path),
                       action=action)


def open_index(store: FeatureStore, dataset: str) -> tuple[VectorIndex, int | None]:
    """The dataset's saved index and how many of its vectors it lacks; or, without a saved index,
    an exact one built now and None.
    """
    path = index_path(store, dataset)
    if path.is_file():
        vi = load_index(path)
        if vi.store_key != store.key:
            raise SearchError(f"the index {str(path)!r} was built for another backbone configuration; rebuild it "
                              f"by indexing {dataset!r} again.")
        if vi.dataset != dataset:
            raise SearchError(f"the index {str(path)!r} belongs to dataset {vi.dataset!r}, not {dataset!r}; rebuild "
                              f"it by indexing {dataset!r} again.")
        # From the catalog alone: no vector needs reading to know what the index lacks or holds too many of.
        current = set(dataset_keys(store, dataset).tolist())
        indexed = set(vi.keys.tolist())
        if indexed <= current:
            return vi, len(current - indexed)
        # Samples were removed since it was built: its answers could name them. Search exactly instead.
    keys, X = dataset_vectors(store, dataset)
    blocks = layer_blocks(store)
    return VectorIndex(index=flat_index(normalize(X, blocks=blocks)), keys=keys, kind="flat", recall_at_10=1.0,
                       store_key=store.key, dataset=dataset, blocks=blocks), None
