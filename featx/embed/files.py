"""Vectors for loose image files (to predict or search with), through a store's cache when it is free."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data import FileListSource, hash_source, read_input
from ..errors import ImageError, StoreBusyError
from ..store import FeatureStore
from .decoders import DecoderPool
from .mapper import Embedder
from .engines import run_batches
from .runner import missing_keys


def embed_files(
    paths: Sequence[str], backbone, store: FeatureStore, *, batch_size: int = 64, workers: int = 0,
    strict: bool = False,
) -> tuple[np.ndarray, list[str], list[dict]]:
    """Vectors for loose image files or folders, through the store's cache: what is there is reused,
    what is new is embedded and kept (unless the store is read-only or another process is writing it).
    ``backbone`` is a Runtime (``featx.runtimes.runtime_for``) or a torch Backbone.

    Returns ``(X, paths, failures)`` for the images that could be used, in the order found. With
    ``strict``, any unusable image raises an ImageError naming each one instead.
    """
    source = FileListSource(paths)
    keys, failures = hash_source(source)
    embedder = Embedder(backbone)
    found = None
    if not store.read_only:
        try:
            found = _embed_cached(source, keys, failures, embedder, store, batch_size, workers)
        except StoreBusyError:  # another process is writing the store: embed without caching
            pass
    ok, X = found or _embed_uncached(source, keys, failures, embedder, batch_size)
    bad = [{"path": source.items[i].path, "reason": r} for i, r in sorted(failures.items())]
    if strict and bad:
        listed = "; ".join(f"{f['path']}: {f['reason']}" for f in bad)
        raise ImageError(f"cannot read {len(bad)} image(s): {listed}")
    return np.asarray(X, dtype=np.float32), [source.items[i].path for i in ok], bad


def _embed_cached(source, keys, failures, embedder, store, batch_size, workers) -> tuple[list[int], np.ndarray]:
    with store.writing():
        todo = missing_keys(keys, store)
        if todo:
            with DecoderPool(source, workers) as decoders:
                _, failed, _ = run_batches(decoders, embedder, store, list(todo.values()), keys, batch_size, None)
            failures.update({i: failed[k] for i, k in enumerate(keys) if k in failed})
    ok = [i for i, k in enumerate(keys) if k and i not in failures]
    return ok, store.vectors([keys[i] for i in ok])


def _embed_uncached(source, keys, failures, embedder, batch_size) -> tuple[list[int], np.ndarray]:
    ok, crops = [], []
    for i in (i for i in range(len(keys)) if i not in failures):
        _, crop, reason = read_input(source, i, embedder.preprocess)
        if reason is None:
            crops.append(crop)
            ok.append(i)
        else:
            failures[i] = reason
    return ok, embedder.embed_crops(crops, batch_size)
