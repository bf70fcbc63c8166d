"""The 2-D layout of a dataset's vectors (PCA to 50 dimensions, then UMAP), cached beside the store."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hardware import Progress
from ..store.view import VectorView, normalize
from ..store import FeatureStore
from ..errors import StoreError
from ..store.atomic import atomic_write, is_regular_file
from ..store.paths import map_path  # noqa: F401 (featx.maps.map_path)

METHOD = "pca50-umap"  # chosen by benchmarks/bench_map.py (README: "Which map")


@dataclass(frozen=True)
class Layout:
    """One 2-D point per distinct sample, scaled into [0, 1]², in ``keys`` order."""

    keys: np.ndarray
    points: np.ndarray  # float32 (n, 2)
    method: str


FIT_SAMPLE = 100_000  # points UMAP is fitted on; the others are placed by its transform
BLOCK_ROWS = 50_000  # rows read, normalised and projected at a time


def compute_layout(X, layer_widths: tuple[int, ...] | None = None, seed: int = 0,
                   fit_sample: int | None = None) -> Layout:
    """PCA to 50 dimensions, then UMAP to 2 (PCA alone below 16 points); ``keys`` left empty.

    ``X``: an array, or anything that gives rows for ``X[slice]`` and ``X[positions]`` (a dataset's stored
    vectors read on demand). Beyond ``fit_sample`` points (default FIT_SAMPLE) memory stays bounded: PCA and
    UMAP are fitted on a random sample, every row is projected block by block, and UMAP's ``transform``
    places the rows outside the sample (``method`` says so); only n × 50 numbers are held.
    """
    from sklearn.decomposition import PCA

    n = len(X)
    fit_sample = fit_sample or FIT_SAMPLE
    if n < 16:
        X = normalize(np.asarray(X[0:n]), layer_widths=layer_widths)
        Y = PCA(2).fit_transform(X) if n > 2 else np.zeros((n, 2))
        method = "pca"
    else:
        umap = import_umap()
        sample = np.arange(n) if n <= fit_sample else np.sort(
            np.random.default_rng(seed).choice(n, fit_sample, replace=False))
        fitted = normalize(np.asarray(X[sample] if n > fit_sample else X[0:n]), layer_widths=layer_widths)
        pca = PCA(min(50, len(sample) - 1, fitted.shape[1]), random_state=seed).fit(fitted)
        if n <= fit_sample:
            Z = pca.transform(fitted).astype(np.float32)
        else:
            del fitted
            Z = np.empty((n, pca.n_components_), np.float32)
            for a in range(0, n, BLOCK_ROWS):
                Z[a:a + BLOCK_ROWS] = pca.transform(normalize(np.asarray(X[a:a + BLOCK_ROWS]),
                                                              layer_widths=layer_widths))
        with warnings.catch_warnings():  # "n_jobs value 1 overridden to 1 by setting random_state": no news
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            # import_umap turned numba's cache on for every function; the few it cannot cache say so: no news
            warnings.filterwarnings("ignore", message="Cannot cache compiled function")
            reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(sample) - 1), random_state=seed)
            Y = np.empty((n, 2), np.float64)
            Y[sample] = reducer.fit_transform(Z[sample])
            if n > fit_sample:
                rest = np.setdiff1d(np.arange(n), sample)
                Y[rest] = reducer.transform(Z[rest])
        method = METHOD if n <= fit_sample else f"{METHOD} (fitted on {fit_sample:,}, the rest placed by transform)"
    Y = np.asarray(Y, dtype=np.float64)
    low, span = Y.min(axis=0), np.maximum(np.ptp(Y, axis=0), 1e-12)
    return Layout(np.array([], dtype=str), ((Y - low) / span).astype(np.float32), method)


def import_umap():
    """umap, its numba code compiled once per machine instead of once per process.

    Most of umap's (and some of pynndescent's) numba functions are not marked for numba's on-disk cache, so
    every process compiled them again on its first map: 13–15 s, against 0.1 s for the layout of 24 points
    once they were cached. Their caching is turned on before their first call; numba keeps the compiled code
    beside their sources (or in its user-wide cache, or NUMBA_CACHE_DIR), writes it atomically, and compiles
    again when the library changes. A function numba cannot cache is compiled as before.
    """
    import umap

    global _UMAP_CACHED
    if not _UMAP_CACHED:
        _UMAP_CACHED = True
        import sys

        from numba.core.dispatcher import Dispatcher

        for name, module in list(sys.modules.items()):
            if name.split(".")[0] not in ("umap", "pynndescent"):
                continue
            for value in list(vars(module).values()):
                if isinstance(value, Dispatcher) and type(value._cache).__name__ == "NullCache":
                    with contextlib.suppress(Exception):  # an older numba, a function it cannot cache
                        value.enable_caching()
    return umap


_UMAP_CACHED = False


class StoredRows:
    """A dataset's vectors in ``keys``' order, read from the store when asked for (``rows[a:b]``,
    ``rows[positions]``), under ``guard`` (the service's store lock)."""

    def __init__(self, view: VectorView, keys: np.ndarray, guard):
        self.view, self.keys, self.guard = view, keys, guard

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, rows) -> np.ndarray:
        with self.guard:
            return self.view.vectors(self.keys[rows])


def _fingerprint(keys) -> str:
    """The membership the layout was made for: a dataset that changed gets a new layout."""
    return hashlib.sha256(("\n".join(sorted(keys)) + "|" + METHOD).encode()).hexdigest()


def dataset_map(store: FeatureStore, dataset: str, *, progress: Progress | None = None,
                lock=None, must_save: bool = False) -> tuple[Layout, bool]:
    """The dataset's layout and whether it was computed now: read from beside the store when its members
    are unchanged, else computed and saved there.

    ``lock`` (the service's store lock) is held while the store is read or written, not while UMAP runs.
    A layout that cannot be saved (read-only cache, full disk) is still returned, unless ``must_save``:
    then StoreError says why.
    """
    guard = lock or contextlib.nullcontext()
    with guard:
        keys = list(dict.fromkeys(m.key for m in store.members(dataset)))
        fingerprint = _fingerprint(keys)
        path = map_path(store, dataset)
        saved = _read_saved(path, dataset, fingerprint)
        if saved is not None:
            return saved, False
        view = VectorView(store, dataset)
        # read as the layout asks: a million rows are never all in memory at once
        X = StoredRows(view, np.array(keys), guard)
    if progress:
        progress("map", 0, len(keys))
    layout = compute_layout(X, layer_widths=view.layer_widths)
    layout = Layout(np.array(keys), layout.points, layout.method)
    if progress:
        progress("map", len(keys), len(keys))
    with guard:
        try:
            if store.read_only:
                raise OSError(errno.EROFS, "the store is read-only here")
            path.parent.mkdir(exist_ok=True)
            with atomic_write(path) as f:
                np.savez(f, keys=layout.keys, points=layout.points, method=layout.method, fingerprint=fingerprint,
                         dataset=dataset)
        except OSError as e:
            if must_save:
                raise StoreError(f"cannot save the map to {str(path)!r}: {e.strerror or e}. Free some space or pass "
                                 "cache=DIR on a writable disk.", params=("cache",)) from None
    return layout, True


def _read_saved(path: Path, dataset: str, fingerprint: str) -> Layout | None:
    """The saved layout when it is a whole, well-formed file made for exactly this dataset and membership."""
    if not is_regular_file(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["fingerprint"]) != fingerprint or str(saved["dataset"]) != dataset:
                return None
            keys, points, method = saved["keys"], saved["points"], str(saved["method"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # damaged or from an older featx: computed again
    if points.ndim != 2 or points.shape != (len(keys), 2) or not np.isfinite(points).all():
        return None
    return Layout(keys, points.astype(np.float32), method)
