"""One way to read stored vectors: a dataset's rows of some of the recipe's layers, each layer normalised on its
own, whole or a block of rows at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .columns import select_layers

if TYPE_CHECKING:
    from .store import FeatureStore

BLOCK_ROWS = 65536  # rows read at a time where a whole dataset is never held at once


def normalize(X: np.ndarray, dtype=np.float32, layer_widths: tuple[int, ...] | None = None) -> np.ndarray:
    """A C-contiguous copy of X with rows scaled to unit length, so inner product is cosine similarity.

    With ``layer_widths`` (the widths of consecutive column blocks: the layers of a multi-layer recipe),
    each block is scaled to length 1/sqrt(number of layers) instead, so every layer weighs the same
    whatever its width and activation scale, and rows still have unit length.
    """
    X = np.array(X, dtype=dtype, order="C", copy=True)
    if not layer_widths or len(layer_widths) == 1:
        X /= np.maximum(row_norms(X), 1e-12)
        return X
    if sum(layer_widths) != X.shape[1]:
        raise ValueError(f"layer_widths {tuple(layer_widths)} do not add up to the {X.shape[1]} columns")
    start = 0
    for width in layer_widths:
        part = X[:, start : start + width]
        part /= np.maximum(row_norms(part), 1e-12) * np.sqrt(len(layer_widths))
        start += width
    return X


def row_norms(X: np.ndarray) -> np.ndarray:
    """Each row's length, as a column; einsum makes no squared copy of X (np.linalg.norm does: on 60,000 ×
    1,280 rows that copy's fresh pages cost 0.6 s)."""
    return np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]


class VectorView:
    """What a stage reads of a store's dataset: the columns of ``use_layers`` (all the recipe's by default), raw or
    normalised layer by layer (the way an index, a head, an audit and a map compare vectors)."""

    def __init__(self, store: "FeatureStore", dataset: str, use_layers: str | Sequence[str] | None = None):
        self.store, self.dataset = store, dataset
        self.selection = select_layers(store.config, use_layers)
        self.layers = None if use_layers is None else self.selection.layers  # None: the store's whole recipe

    @property
    def layer_widths(self) -> tuple[int, ...] | None:
        """The widths of the layers normalised one by one; None for a single layer."""
        return self.selection.layer_widths

    @property
    def dim(self) -> int:
        return self.selection.dim

    def keys(self) -> np.ndarray:
        """The dataset's unique keys in the order their vectors lie in the shards, from the catalog alone: read in
        that order, a dataset's vectors are memory-map slices, not copies (its member order would gather one)."""
        self.store.dataset(self.dataset)  # a clear error for an unknown dataset
        return np.array(self.store.keys_in_storage_order(self.dataset), dtype=str)

    def vectors(self, keys) -> np.ndarray:
        """The vectors of ``keys``, the view's columns, as stored."""
        return self.selection.take(self.store.vectors(list(keys)))

    def normalised(self, keys) -> np.ndarray:
        """The vectors of ``keys``, each layer scaled to length 1/√layers (rows of length 1): cosine by dot product."""
        return normalize(self.vectors(keys), layer_widths=self.layer_widths)

    def rows(self, keys: Sequence[str], normalised: bool = True) -> "StoredRows":
        """The vectors of ``keys`` (normalised, or as stored) as an array read where it lies (see StoredRows)."""
        return StoredRows(self, keys, normalised=normalised)

    def located_keys(self) -> tuple[list[str], "StoredRows"]:
        """``keys()`` (as a list) and their normalised vectors as StoredRows, from one snapshot of the catalog."""
        keys, where = self.store.dataset_locations(self.dataset)
        return keys, StoredRows(self, where=where)

    def normalised_blocks(self, keys: Sequence[str], size: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
        """The normalised vectors of ``keys``, ``size`` rows at a time: never the whole dataset at once."""
        for a in range(0, len(keys), size):
            yield self.normalised(keys[a:a + size])


class StoredRows:
    """A view's vectors of ``keys`` as a read-only 2-D array that is never held whole: indexing it (by a slice, a mask
    or an array of positions, of any shape) reads those rows from the store's memory maps, normalised as
    ``VectorView.normalised`` does them (float32), or with ``normalised=False`` as stored (the store's dtype). What reads a million vectors several times
    over (audit's folds, its neighbour and leak searches, a budgeted index's build) reads them this way instead of
    from a normalised copy (7.2 GB at 1M × 1,792)."""

    ndim = 2

    def __init__(self, view: VectorView, keys: Sequence[str] | None = None, where=None, normalised: bool = True):
        self.view, self.normalised = view, normalised
        # as stored (a float16 store's rows stay float16: a head converts each block once, as it normalises it)
        self.dtype = np.dtype(np.float32) if normalised else view.store.dtype
        self.where = view.store.locations(list(keys)) if where is None else where  # store.shards.Locations
        self.shape = (len(self.where), view.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, *args, **kwargs):
        raise TypeError("StoredRows are read a block at a time (index them); making them one array would copy "
                        "every row")

    def __iter__(self):
        raise TypeError("StoredRows are read a block at a time (index them), not row by row")

    def __getitem__(self, index) -> np.ndarray:
        if np.ndim(index) == 0 and not isinstance(index, slice):
            raise TypeError("StoredRows are read a block at a time: index them with a slice or an array")
        if isinstance(index, tuple):
            raise TypeError("StoredRows takes rows only: a slice or an array of positions")
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        flat = index.reshape(-1)
        X = self.view.selection.take(self.where.read(flat))
        if self.normalised:
            X = normalize(X, layer_widths=self.view.layer_widths)
        return X.reshape(index.shape + (self.shape[1],))
