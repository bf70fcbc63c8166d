"""The embedding runner: hash a source, decode what is new in worker processes, forward in batches, store."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .backbones import Backbone, PreprocessConfig
from .errors import FeatxError, ImageError, StoreError
from .images import load_input, normalize_batch
from .sources import FileListSource, Source, content_hash, split_from_key
from .store import SPLIT_ORDER, FeatureStore, Member

# progress(stage, advance, total): stages are "hash" and "embed"; the CLI draws bars from it.
Progress = Callable[[str, int, int], None]


def default_workers() -> int:
    """Decoding processes: leave one core to the forward pass, which uses all cores between batches."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class EmbedResult:
    """What one ``embed_source`` run did; ``to_dict()`` is the CLI's ``--json`` object."""

    dataset: str
    store: str
    backbone: str
    dim: int
    n_total: int
    n_embedded: int
    n_reused: int
    n_failed: int
    seconds: float
    images_per_second: float
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def keep_freed_memory() -> bool:
    """Stop glibc from handing large freed blocks back to the kernel; returns whether it applied.

    A CPU forward pass allocates and frees activations of tens of MB per layer. By default glibc
    serves those with mmap and returns them with munmap, so every batch faults its memory back in
    page by page (on 2 cores that was over half the CPU time, as system time). Serving them from the
    heap and never trimming it roughly doubles CPU throughput. Process-wide; FEATX_MALLOC=default
    turns it off.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        if os.environ.get("FEATX_MALLOC", "") != "default" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                m_trim_threshold, m_mmap_max = -1, -4
                _MALLOC_TUNED = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
            except (OSError, AttributeError):  # not glibc
                pass
    return _MALLOC_TUNED


_MALLOC_TUNED: bool | None = None


class Embedder:
    """The mapper: uint8 image batches in, float32 feature vectors out, at the backbone's precision."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.device = next(backbone.model.parameters()).device
        self.preprocess: PreprocessConfig = backbone.config.preprocess
        self.bf16 = backbone.config.precision == "bf16"
        if self.device.type == "cpu":
            keep_freed_memory()

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        x = normalize_batch(batch.to(self.device, non_blocking=True), self.preprocess)
        x = x.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            features = self.backbone.extractor(x)
        return features.float().cpu().numpy()

    def embed_inputs(self, inputs: Sequence[bytes | np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embed in-memory images (encoded bytes or pixel arrays); raises ImageError for a bad one."""
        return self.embed_crops([load_input(data, self.preprocess) for data in inputs], batch_size)

    def embed_crops(self, crops: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embed preprocessed uint8 (3, H, W) crops in batches."""
        out = [self(torch.from_numpy(np.stack(crops[i : i + batch_size]))) for i in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.empty((0, self.backbone.dim), np.float32)


class _DecodeDataset(Dataset):
    """The reader: runs in worker processes, turns source items into model-ready uint8 crops."""

    def __init__(self, source: Source, indices: list[int], preprocess: PreprocessConfig):
        self.source, self.indices, self.preprocess = source, indices, preprocess

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        try:
            data = self.source.read(i)
        except OSError as e:
            return i, None, None, f"cannot read: {e.strerror or e}"
        try:
            key = content_hash(data)
            return i, key, load_input(data, self.preprocess), None
        except ImageError as e:
            return i, None, None, str(e)
        except Exception as e:  # a decoder bug on one odd file must not end the run
            return i, None, None, f"cannot decode: {type(e).__name__}: {e}"


def _collate(rows):
    good = [(i, k, a) for i, k, a, _ in rows if a is not None]
    bad = [(i, reason) for i, _, a, reason in rows if a is None]
    batch = torch.from_numpy(np.stack([a for _, _, a in good])) if good else None
    return [i for i, _, _ in good], [k for _, k, _ in good], batch, bad


def hash_source(source: Source, progress: Progress | None = None, threads: int = 8):
    """Content hash of every item (None where unreadable) and the read failures, in item order."""
    n = len(source.items)
    keys: list[str | None] = [None] * n
    failures: dict[int, str] = {}

    def one(i: int) -> None:
        try:
            keys[i] = source.content_hash(i)
        except OSError as e:
            failures[i] = f"cannot read: {e.strerror or e}"

    # hashlib and file reads release the GIL, so threads overlap I/O and hashing.
    step = 256
    with ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(one, range(n)), start=1):
            if progress and (done % step == 0 or done == n):
                progress("hash", (done - 1) % step + 1, n)
    return keys, failures


def _missing(keys: Sequence[str | None], store: FeatureStore) -> dict[str, int]:
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
    source : the dataset (see featx.sources.open_source).
    backbone : the model; must match the store's configuration.
    store : the feature store for ``backbone.config``.
    name : dataset name in the catalog; defaults to the source's name.
    batch_size : images per forward pass.
    workers : decoding processes (0 decodes in this process); defaults to cores - 1.
    progress : optional ``progress(stage, advance, total)`` callback.
    engine : what decodes and runs the model (``run(source, store, indices, keys, batch_size, progress)``);
        defaults to this machine (LocalEngine). featx.ray_engine.RayEngine spreads it over a Ray cluster.
        Either way this process alone writes the store.
    hashes : ``hash_source(source)``'s result when the caller already has it (saves hashing twice).
    """
    if backbone.config.key != store.key:
        raise FeatxError(f"backbone {backbone.config.describe()} does not match store {store.path}.")
    if batch_size < 1:
        raise FeatxError(f"--batch-size must be at least 1, not {batch_size}.")
    if workers is not None and workers < 0:
        raise FeatxError(f"--workers must be 0 (decode in this process) or more, not {workers}.")
    name = name or source.name
    start = time.perf_counter()
    n = len(source.items)
    engine = engine or LocalEngine(backbone, workers)

    with store.writing():
        keys, failures = (hashes[0], dict(hashes[1])) if hashes is not None else hash_source(source, progress)
        todo = _missing(keys, store)
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
        return _run_batches(source, self.embedder, store, indices, keys, batch_size, self.workers, progress)


def store_batch(store: FeatureStore, keys: Sequence[str | None], idx: Sequence[int], read_keys: Sequence[str],
                X: np.ndarray, failed: dict[str, str]) -> list[str]:
    """Add one embedded batch to ``store``, except items whose file changed since it was hashed; their keys."""
    for i, k in zip(idx, read_keys):
        if k != keys[i]:  # changed on disk since it was hashed: its vector would be misfiled
            failed[keys[i]] = "file changed while embedding; run again"
    ok = [j for j, i in enumerate(idx) if keys[i] not in failed]
    batch_keys = [keys[idx[j]] for j in ok]
    store.add(batch_keys, X[ok])
    return batch_keys


def _run_batches(source, embedder, store, indices, keys, batch_size, workers, progress):
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


def embed_files(
    paths: Sequence[str], backbone: Backbone, store: FeatureStore, *, batch_size: int = 64, workers: int = 0,
    strict: bool = False,
) -> tuple[np.ndarray, list[str], list[dict]]:
    """Vectors for loose image files or folders, through the store's cache: what is there is reused,
    what is new is embedded and kept (when no other process is writing the store).

    Returns ``(X, paths, failures)`` for the images that could be used, in the order found. With
    ``strict``, any unusable image raises a FeatxError naming each one instead.
    """
    source = FileListSource(paths)
    keys, failures = hash_source(source)
    embedder = Embedder(backbone)
    try:
        with store.writing():
            todo = _missing(keys, store)
            if todo:
                _, failed = _run_batches(source, embedder, store, list(todo.values()), keys, batch_size,
                                         workers, None)
                failures.update({i: failed[k] for i, k in enumerate(keys) if k in failed})
        ok = [i for i, k in enumerate(keys) if k and i not in failures]
        X = store.vectors([keys[i] for i in ok])
    except StoreError:  # the store is busy: embed without caching
        ok, crops = [], []
        for i in (i for i in range(len(keys)) if i not in failures):
            try:
                crops.append(load_input(source.read(i), embedder.preprocess))
                ok.append(i)
            except (ImageError, OSError) as e:
                failures[i] = str(e)
        X = embedder.embed_crops(crops, batch_size)
    bad = [{"path": source.items[i].path, "reason": r} for i, r in sorted(failures.items())]
    if strict and bad:
        listed = "; ".join(f"{f['path']}: {f['reason']}" for f in bad)
        raise FeatxError(f"cannot read {len(bad)} image(s): {listed}")
    return np.asarray(X, dtype=np.float32), [source.items[i].path for i in ok], bad
