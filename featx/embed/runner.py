"""The embedding runner: hash a source, decode what is new in worker processes, forward in batches, store."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..backbones import Backbone
from ..config import DEFAULT_BACKBONE, PreprocessConfig
from ..data import Source, hash_source, read_input, split_from_key
from ..errors import ParameterError, StoreError
from ..runtime import Progress, check_batch_size, check_workers, default_workers
from ..store import SPLIT_ORDER, FeatureStore, Member
from .mapper import Embedder
from . import ENGINES
from .writer import store_batch


@dataclass
class EmbedResult:
    """What one ``embed_source`` run did; ``to_dict()`` is the CLI's ``--json`` object."""

    dataset: str
    store: str
    backbone: str
    dim: int
    layers: list[str]
    crop: str
    n_total: int
    n_embedded: int
    n_reused: int
    n_failed: int
    seconds: float
    images_per_second: float
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _DecodeDataset(Dataset):
    """The reader: runs in worker processes, turns source items into model-ready uint8 crops."""

    def __init__(self, source: Source, indices: list[int], preprocess: PreprocessConfig):
        self.source, self.indices, self.preprocess = source, indices, preprocess

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        return (i, *read_input(self.source, i, self.preprocess))


def _collate(rows):
    good = [(i, k, a) for i, k, a, _ in rows if a is not None]
    bad = [(i, reason) for i, _, a, reason in rows if a is None]
    batch = torch.from_numpy(np.stack([a for _, _, a in good])) if good else None
    return [i for i, _, _ in good], [k for _, k, _ in good], batch, bad


def missing_keys(keys: Sequence[str | None], store: FeatureStore) -> dict[str, int]:
    """Each key not yet in the store, with the first item that has it."""
    known = store.present(k for k in keys if k)
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k and k not in known and k not in todo:
            todo[k] = i
    return todo


def embed_source(
    source: Source,
    backbone: Backbone,
    store: FeatureStore,
    *,
    name: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
    engine: "Engine | None" = None,
    hashes: tuple[list[str | None], dict[int, str]] | None = None,
) -> EmbedResult:
    """Embed every item of ``source`` not yet in ``store`` and record the dataset's membership.

    Parameters
    ----------
    source : the dataset (see featx.data.open_source).
    backbone : the model; must match the store's configuration.
    store : the feature store for ``backbone.config``.
    name : dataset name in the catalog; defaults to the source's name.
    batch_size : images per forward pass.
    workers : decoding processes (0 decodes in this process); defaults to cores - 1.
    progress : optional ``progress(stage, advance, total)`` callback.
    engine : what decodes and runs the model (``run(source, store, indices, keys, batch_size, progress)``);
        defaults to this machine (LocalEngine). featx.embed.ray_engine.RayEngine spreads it over a Ray cluster.
        Either way this process alone writes the store.
    hashes : ``hash_source(source)``'s result when the caller already has it (saves hashing twice).
    """
    if backbone.config.key != store.key:
        raise StoreError(f"backbone {backbone.config.describe()} does not match store {store.path}.")
    check_batch_size(batch_size)
    check_workers(workers)
    name = name or source.name
    start = time.perf_counter()
    n = len(source.items)
    engine = engine or LocalEngine(backbone, workers)

    with store.writing():
        keys, failures = (hashes[0], dict(hashes[1])) if hashes is not None else hash_source(source, progress)
        todo = missing_keys(keys, store)
        embedded_keys: set[str] = set()
        if todo:
            embedded_keys, failed_keys = engine.run(source, store, list(todo.values()), keys, batch_size, progress)
            for i, k in enumerate(keys):
                if k in failed_keys:
                    failures[i] = failed_keys[k]
        members = []
        for i, (item, k) in enumerate(zip(source.items, keys)):
            if i in failures or k is None:
                continue
            members.append(Member(k, item.path, item.label, item.split or split_from_key(k)))
        store.record_dataset(name, source.description, members,
                             [(source.items[i].path, reason) for i, reason in sorted(failures.items())])
        order = [m.key for m in sorted(members, key=lambda m: SPLIT_ORDER.get(m.split, 9))]
        store.compact(order)

    seconds = time.perf_counter() - start
    n_embedded = sum(1 for m in members if m.key in embedded_keys)
    return EmbedResult(
        dataset=name,
        store=str(store.path),
        backbone=backbone.name,
        dim=backbone.dim,
        layers=list(backbone.config.layers),
        crop=backbone.config.preprocess.crop,
        n_total=n,
        n_embedded=n_embedded,
        n_reused=len(members) - n_embedded,
        n_failed=len(failures),
        seconds=round(seconds, 3),
        images_per_second=round(n_embedded / seconds, 2) if seconds > 0 else 0.0,
        failures=[{"path": source.items[i].path, "reason": r} for i, r in sorted(failures.items())],
    )


class Engine:
    """Turns source items into stored vectors; ``run`` returns the keys embedded and {key: reason} failed."""

    def run(self, source: Source, store: FeatureStore, indices: list[int], keys: Sequence[str | None],
            batch_size: int, progress: Progress | None) -> tuple[set[str], dict[str, str]]:
        raise NotImplementedError


class LocalEngine(Engine):
    """This machine: decoding in DataLoader worker processes, forward passes in this one."""

    def __init__(self, backbone: Backbone, workers: int | None = None):
        self.embedder = Embedder(backbone)
        self.workers = default_workers() if workers is None else workers

    def run(self, source, store, indices, keys, batch_size, progress):
        return run_batches(source, self.embedder, store, indices, keys, batch_size, self.workers, progress)


def run_batches(source, embedder, store, indices, keys, batch_size, workers, progress):
    """Decode ``indices`` in workers and store their vectors batch by batch.

    Returns the keys embedded and {key: failure reason} for those that could not be.
    """
    loader = DataLoader(
        _DecodeDataset(source, indices, embedder.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=embedder.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    failed: dict[str, str] = {}
    embedded: set[str] = set()
    for idx, read_keys, batch, bad in loader:
        for i, reason in bad:
            failed[keys[i]] = reason
        if batch is not None:
            embedded.update(store_batch(store, keys, idx, read_keys, embedder(batch), failed))
        if progress:
            progress("embed", len(idx) + len(bad), len(indices))
    return embedded, failed


def embed_into_store(
    source: Source,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    precision: str = "auto",
    layers: str | None = None,
    crop: str | None = None,
    store_dtype: str = "float32",
    cache: str | os.PathLike | None = None,
    name: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> EmbedResult:
    """Create the backbone, open (or create) its store under ``cache``, and embed ``source`` into it.

    ``engine`` is ``local`` (``workers``: decoding processes) or ``ray`` (``workers``: backbone actors;
    ``address``: the cluster to join, default a local Ray instance). ``layers`` and ``crop`` make the
    recipe (see ``create_backbone``); ``crop`` defaults to what suits the source (``source.crop``).
    ``store_dtype`` ``float16`` keeps the vectors in half the bytes (a store of its own).
    """
    from ..backbones import create_backbone
    from ..store import open_store

    if engine not in ENGINES:
        raise ParameterError("engine", f"must be one of {', '.join(ENGINES)}, not {engine!r}.")
    check_batch_size(batch_size)
    if engine == "local":
        check_workers(workers)
    model = create_backbone(backbone, weights=weights, image_size=image_size, precision=precision, layers=layers,
                            crop=crop or source.crop, store_dtype=store_dtype)
    runner = None
    if engine == "ray":
        from .ray_engine import RayEngine

        runner = RayEngine(model.config, weights, address=address, num_workers=workers)
    with open_store(model.config, cache) as store:
        return embed_source(source, model, store, name=name, batch_size=batch_size,
                            workers=None if engine == "ray" else workers, progress=progress, engine=runner)



