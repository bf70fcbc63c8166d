"""A dataset's index beside its store: build or update it, and open it (or exact search) for queries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import ParameterError, SearchError
from ..store import FeatureStore
from ..store.paths import index_path
from ..store.view import StoredRows, VectorView
from .budget import choose_index, parse_bytes, size_text
from .flat import flat_index
from .index import (
    AUTO_EXACT_BELOW, BLOCK_ROWS, TARGET_RECALL, VectorIndex, build_index, check_collection_k, check_kind,
    exact_neighbours, load_index, save_index, tune_index,
)
from .keys import join_keys, pack_keys, positions_in, unpack_keys

REMOVED_KEPT = 1000  # rows removed from a dataset that its saved index keeps, left out of its answers
TUNE_QUERIES = 1000  # new vectors an index is tuned again on before they join it (as build_index tunes on 1,000)


def dataset_keys(store: FeatureStore, dataset: str) -> np.ndarray:
    """Unique keys of a dataset in the order their vectors lie in the shards (VectorView.keys)."""
    return VectorView(store, dataset).keys()


class SearchView(VectorView):
    """What search reads of a store (VectorView), and where the index of those vectors lives."""

    def __init__(self, store: FeatureStore, dataset: str, use_layers: str | Sequence[str] | None = None):
        super().__init__(store, dataset, use_layers)
        self.path = index_path(store, dataset, self.layers)

    def exact_index(self, keys: np.ndarray) -> VectorIndex:
        """An exact (flat) index of ``keys``' vectors, built now and never saved."""
        return VectorIndex(index=flat_index(self.normalised(keys)), keys=keys, kind="flat", recall_at_10=1.0,
                           store_key=self.store.key, dataset=self.dataset, layer_widths=self.layer_widths,
                           layers=self.layers)

    def fits(self, vi: VectorIndex) -> bool:
        """Whether a saved index was built from this view's vectors."""
        return (vi.store_key == self.store.key and vi.dataset == self.dataset and vi.layer_widths == self.layer_widths
                and vi.layers == self.layers)


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
    choices: list[dict] = field(default_factory=list)  # under a memory budget: every index considered
    note: str = ""

    def to_dict(self) -> dict:
        return dict(vars(self))


def index_dataset(store: FeatureStore, dataset: str, kind: str = "auto",
                  use_layers: str | Sequence[str] | None = None, *, max_memory: int | str | None = None,
                  target_recall: float = TARGET_RECALL, rebuild: bool = False, progress=None) -> IndexReport:
    """Build or update the index of a dataset (of ``use_layers`` of its recipe; default all), saved beside its store.

    An existing index of the same kind gains the dataset's new vectors (FAISS can add to flat, IVF and HNSW
    indexes); up to REMOVED_KEPT vectors the dataset no longer holds stay in it, left out of its answers
    (open_index), and the report's ``note`` says so. More removed than that, or ``rebuild``, builds it anew.
    Before 100 or more new vectors are added to an approximate index, its search effort is tuned again with them
    (up to TUNE_QUERIES of them) as queries; when even its highest effort leaves their recall@10 below
    ``target_recall``, the report's ``note`` says a rebuild is worth it (the index was trained on the earlier
    vectors).

    ``max_memory`` (bytes, or a size such as ``256MB``) chooses the index instead: the most faithful
    FAISS index that fits it and reaches ``target_recall`` (see ``budget.choose_index``), built from
    blocks of vectors. An index built under a budget is rebuilt under the same budget when indexed
    again. ``progress(message)`` hears what it is doing.
    """
    check_kind(kind)
    if store.read_only:
        raise SearchError(f"store {str(store.path)!r} is read-only here, so an index cannot be saved beside it; "
                          "`featx search` still answers, by exact search.")
    view = SearchView(store, dataset, use_layers)
    keys = dataset_keys(store, dataset)
    path = view.path
    start = time.perf_counter()
    # The saved index's metadata first: its FAISS index (gigabytes at a million vectors) is read only to add to it.
    saved = load_index(path, read_index=False) if path.is_file() else None
    if max_memory is None and kind == "auto" and saved is not None and saved.kind == BUDGET and view.fits(saved):
        max_memory, target_recall = saved.params["max_memory"], saved.params["target_recall"]
    if max_memory is not None:
        if kind != "auto":
            raise ParameterError("max_memory", f"chooses the kind of index itself; leave kind=auto, not {kind!r}.",
                                 also=("kind",))
        return _index_within_budget(view, parse_bytes(max_memory), target_recall, progress)
    action, note = "built", ""
    old = None
    if (not rebuild and saved is not None and view.fits(saved) and saved.kind != BUDGET
            and kind in ("auto", saved.kind)):
        old = load_index(path)
    if old is not None:
        current = pack_keys(keys)
        at = positions_in(old.keys, current)
        indexed = np.zeros(len(current), bool)
        indexed[at[at >= 0]] = True
        new, removed = np.flatnonzero(~indexed), int(np.count_nonzero(at < 0))
        if removed <= REMOVED_KEPT and not (kind == "auto" and old.kind == "flat" and len(keys) >= AUTO_EXACT_BELOW):
            if len(new):
                # Only the new vectors are read, unless retuning needs the indexed ones too.
                fresh = view.normalised(keys[new])
                if old.kind != "flat" and len(new) >= 100:
                    # The new vectors are outside queries for the index as it stands: retune on (a sample of) them.
                    # All of them as queries cost more than the build adding them saves: their exact neighbours
                    # among 90,000 indexed 1,792-d vectors took longer than a rebuild (docs/results/scale.md).
                    asked = fresh
                    if len(new) > TUNE_QUERIES:
                        asked = fresh[np.sort(np.random.default_rng(0).choice(len(new), TUNE_QUERIES, replace=False))]
                    indexed = (view.normalised(unpack_keys(old.keys[a:a + BLOCK_ROWS]))
                               for a in range(0, old.n, BLOCK_ROWS))
                    tune_index(old, asked, exact_neighbours(asked, indexed), target_recall=target_recall)
                    if old.recall_at_10 < target_recall:
                        note = (f"{len(asked):,} of the new vectors reach recall@10 {old.recall_at_10:.3f} at the "
                                f"index's highest search effort, below {target_recall}: the index was built on the "
                                "earlier vectors and fits the new ones poorly. Rebuilding it (rebuild=True) trains it "
                                "on all of them.")
                old.index.add(fresh)
                old.keys = join_keys(old.keys, current[new])
                action = "added"
            else:
                action = "unchanged"
            if removed:
                note = " ".join(filter(None, [note, (
                    f"{removed:,} vectors no longer in {dataset!r} stay in the index and are left out of its answers; "
                    f"past {REMOVED_KEPT:,} of them, or with rebuild=True, it is built anew without them.")]))
            vi = old
            vi.build_seconds = time.perf_counter() - start
    if action == "built":
        old = None  # not kept in memory beside the new one
        vi = build_index(view.vectors(keys), keys, kind, layer_widths=view.layer_widths)
    vi.store_key, vi.dataset, vi.layers = store.key, dataset, view.layers
    if action != "unchanged":
        path.parent.mkdir(exist_ok=True)
        save_index(vi, path)
    return IndexReport(dataset=dataset, kind=vi.kind, n=vi.n, dim=vi.dim, build_seconds=round(vi.build_seconds, 3),
                       bytes=vi.nbytes(), recall_at_10=vi.recall_at_10, params=vi.params, path=str(path),
                       action=action, note=note)


BUDGET = "budget"  # the kind of an index chosen under a memory budget


def _index_within_budget(view: SearchView, max_bytes: int, target_recall: float, progress) -> IndexReport:
    start = time.perf_counter()
    keys, rows = view.located_keys()  # read where they lie, as open_index's re-ranking reads them: no SQLite per read
    read = rows.__getitem__
    d = view.dim
    packed = pack_keys(keys)
    index, order, chosen, tried = choose_index(read, len(keys), d, max_bytes, target_recall=target_recall,
                                               key_bytes=packed.nbytes,
                                               row_bytes=view.store.dim * view.store.dtype.itemsize, progress=progress)
    params = {"factory": chosen.factory, "search": chosen.search, "max_memory": max_bytes,
              "target_recall": target_recall, **({"rerank": chosen.rerank} if chosen.rerank else {})}
    vi = VectorIndex(index=index, keys=packed[order], kind=BUDGET, params=params, recall_at_10=chosen.recall_at_10,
                     build_seconds=time.perf_counter() - start, store_key=view.store.key, dataset=view.dataset,
                     layer_widths=view.layer_widths, layers=view.layers)
    view.path.parent.mkdir(exist_ok=True)
    save_index(vi, view.path)
    note = "" if chosen.recall_at_10 >= target_recall else (
        f"no index within {size_text(max_bytes)} reaches recall@10 {target_recall}: this is the best it allows; "
        "raise max_memory= for more.")
    return IndexReport(dataset=view.dataset, kind=f"{BUDGET}: {chosen.factory}", n=vi.n, dim=vi.dim,
                       build_seconds=round(vi.build_seconds, 3), bytes=vi.nbytes(), recall_at_10=vi.recall_at_10,
                       params=params, path=str(view.path), action="built", choices=[c.to_dict() for c in tried],
                       note=note)


class LiveIndex:
    """A saved index as its dataset is now, answering as one index: the rows the dataset gained since it was
    built are searched exactly beside it (a search right after `featx embed` finds what was just added before
    `featx index` adds it), and the rows it lost (``removed``: positions in the saved index, at most
    REMOVED_KEPT) are left out of its answers, by asking it for that many more and dropping them.

    Positions index ``keys``: the saved index's keys, then the new rows'. ``n`` counts the dataset's rows;
    ``kind``, ``recall_at_10`` and ``params`` are the saved index's.
    """

    def __init__(self, saved: VectorIndex, new: VectorIndex | None, removed: np.ndarray | None = None):
        self.saved, self.new = saved, new
        self.removed = np.zeros(0, np.int64) if removed is None else np.asarray(removed, np.int64)
        self.keys = saved.keys if new is None else join_keys(saved.keys, new.keys)
        self.kind, self.recall_at_10, self.params = saved.kind, saved.recall_at_10, saved.params

    @property
    def n(self) -> int:
        return self.saved.n - len(self.removed) + (0 if self.new is None else self.new.n)

    @property
    def dim(self) -> int:
        return self.saved.dim

    def _search_saved(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The saved index's k nearest among the rows still in the dataset (-1 where it has fewer)."""
        live = self.saved.n - len(self.removed)
        if live <= 0:
            return np.full((len(Q), k), -np.inf, np.float32), np.full((len(Q), k), -1, np.int64)
        D, I = self.saved.search(Q, min(self.saved.n, k + len(self.removed)))
        if len(self.removed):
            I = np.where(np.isin(I, self.removed), -1, I)
        D = np.where(I < 0, -np.inf, D)
        best = np.argsort(-D, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(D, best, 1), np.take_along_axis(I, best, 1)

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best of the saved index's k nearest live rows and the new rows' k nearest (exact), per query."""
        check_collection_k(k, self.n)
        D_saved, I_saved = self._search_saved(Q, min(k, self.saved.n))
        if self.new is None:
            return D_saved, I_saved  # -1 where fewer live rows than k: _search_saved marks them
        D_new, I_new = self.new.search(Q, min(k, self.new.n))
        D = np.concatenate([D_saved, D_new], axis=1)
        I = np.concatenate([I_saved, np.where(I_new >= 0, I_new + len(self.saved.keys), -1)], axis=1)
        D[I < 0] = -np.inf
        best = np.argsort(-D, axis=1, kind="stable")[:, :k]  # ties: the saved index's row first
        D, I = np.take_along_axis(D, best, 1), np.take_along_axis(I, best, 1)
        I[~np.isfinite(D)] = -1
        return D, I


def open_index(store: FeatureStore, dataset: str,
               use_layers: str | Sequence[str] | None = None) -> tuple[VectorIndex | LiveIndex, int | None]:
    """The dataset's saved index (of ``use_layers``; default all) and how many of the dataset's vectors it
    lacks; those are searched exactly beside it, and up to REMOVED_KEPT rows it holds that the dataset no
    longer does are left out of its answers (LiveIndex). Without a saved index, or with more removed rows
    than that: an exact index built now, and None.
    """
    view = SearchView(store, dataset, use_layers)
    path = view.path
    # From the catalog alone: no vector needs reading to know what a saved index lacks or holds too many of.
    if not path.is_file():
        return view.exact_index(dataset_keys(store, dataset)), None
    store.dataset(dataset)  # a clear error for an unknown dataset
    vi = load_index(path)
    if vi.store_key != store.key:
        raise SearchError(f"the index {str(path)!r} was built for another backbone configuration; rebuild it "
                          f"by indexing {dataset!r} again.")
    if vi.dataset != dataset:
        raise SearchError(f"the index {str(path)!r} belongs to dataset {vi.dataset!r}, not {dataset!r}; rebuild "
                          f"it by indexing {dataset!r} again.")
    if not view.fits(vi):
        raise SearchError(f"the index {str(path)!r} was built from other layers; rebuild it by indexing "
                          f"{dataset!r} again.")
    rerank = vi.params.get("rerank")
    # a re-ranking index reads its candidates' rows: where they lie is resolved once, with the keys (an index that
    # does not re-rank reads no vector, so no shard is opened for it)
    keys, located = view.located_keys() if rerank else (store.keys_in_storage_order(dataset), None)
    at = positions_in(vi.keys, pack_keys(keys))
    removed = np.flatnonzero(at < 0)
    # a re-ranking index reads its candidates' vectors, removed ones too: they must still be in the store
    gone = unpack_keys(vi.keys[removed]).tolist()
    readable = not (len(removed) and rerank and len(store.present(gone)) < len(removed))
    if len(removed) > REMOVED_KEPT or not readable:
        # Many samples were removed since it was built: search exactly rather than ask it for thousands more.
        return view.exact_index(np.array(keys, dtype=str)), None
    if rerank:
        where = located.where.take(np.maximum(at, 0))
        if len(removed):
            lost = store.locations(gone)
            where.shards[removed], where.rows[removed] = lost.shards, lost.rows
            where.maps.update(lost.maps)
        vi.exact = StoredRows(view, where=where).__getitem__
    indexed = np.zeros(len(keys), bool)
    indexed[at[at >= 0]] = True
    new = np.array([keys[i] for i in np.flatnonzero(~indexed)], dtype=str)
    if not len(new) and not len(removed):
        return vi, 0
    return LiveIndex(vi, view.exact_index(new) if len(new) else None, removed), len(new)
