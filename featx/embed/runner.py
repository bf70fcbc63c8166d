"""The embedding runner: hash a source while the model loads, decode what is new in worker processes, forward, store."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..config import PreprocessConfig, Recipe, StoreQuery
from ..data import Source, hash_source, split_from_key
from ..errors import DatasetNotStoredError, ParameterError, SourceError, StoreError
from ..hardware import Progress, check_batch_size, check_workers, default_workers
from ..runtimes import as_runtime
from ..store import SPLIT_ORDER, FeatureStore, Member
from .decoders import DecoderPool, decode_batch
from . import ENGINES
from .engines import Engine, LocalEngine


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
    precision: str = ""
    runtime: dict = field(default_factory=dict)  # RuntimeChoice.to_dict(): what ran the model, and why
    first_batch_seconds: float | None = None  # from the process's start to the first stored batch

    def to_dict(self) -> dict:
        return asdict(self)


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
    backbone,
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
    backbone : the model, a Runtime (``featx.runtimes.load_runtime``) or a torch Backbone; must match
        the store's configuration.
    store : the feature store for ``backbone.config``.
    name : dataset name in the catalog; defaults to the source's name.
    batch_size : images per forward pass.
    workers : decoding processes (0 decodes in this process); defaults to cores - 1.
        Ignored when ``engine`` is given.
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
    model = as_runtime(backbone)
    own_engine = engine is None
    engine = engine or LocalEngine(model, DecoderPool(source, default_workers() if workers is None else workers))

    try:
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
    finally:
        if own_engine:
            engine.close()

    seconds = time.perf_counter() - start
    n_embedded = sum(1 for m in members if m.key in embedded_keys)
    config = model.config
    return EmbedResult(
        dataset=name,
        store=str(store.path),
        backbone=config.name,
        dim=config.dim,
        layers=list(config.layers),
        crop=config.preprocess.crop,
        n_total=n,
        n_embedded=n_embedded,
        n_reused=len(members) - n_embedded,
        n_failed=len(failures),
        seconds=round(seconds, 3),
        images_per_second=round(n_embedded / seconds, 2) if seconds > 0 else 0.0,
        failures=[{"path": source.items[i].path, "reason": r} for i, r in sorted(failures.items())],
        precision=config.precision,
        runtime=model.choice.to_dict(),
        first_batch_seconds=engine.first_batch_seconds,
    )


def calibration_for(source: Source, keys: Sequence[str | None]):
    """int8's calibration: a sample of ``source`` chosen by content key, decoded with the model's preprocessing."""
    from ..runtimes.quantize import calibration_fingerprint, calibration_sample

    def calibrate(preprocess: PreprocessConfig) -> tuple[str, np.ndarray]:
        _, read_keys, crops, _ = decode_batch(source, calibration_sample(keys), preprocess)
        return calibration_fingerprint(read_keys), crops if crops is not None else np.empty((0,), np.uint8)

    return calibrate


def embed_into_store(
    source: Source,
    recipe: Recipe = Recipe(),
    *,
    runtime: str = "auto",
    cache: str | os.PathLike | None = None,
    name: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> EmbedResult:
    """Load the backbone ``recipe`` asks for on a runtime, open (or create) its store under ``cache``, and embed
    ``source`` into it.

    ``engine`` is ``local`` (``workers``: decoding processes) or ``ray`` (``workers``: backbone actors;
    ``address``: the cluster to join, default a local Ray instance). The recipe's layers default to every
    stage over a 2×2 grid (DEFAULT_LAYERS, measured best), its crop to what suits the source (``source.crop``);
    ``store_dtype="float16"`` keeps the vectors in half the bytes (a store of its own). ``runtime``
    (``auto``, ``torch``, ``openvino``) is what runs the model (see ``featx.runtimes.load_runtime``);
    ``precision="int8"`` quantises on OpenVINO, calibrated on a sample of ``source``.

    Locally, the decoding workers start first; the model then loads in a thread while this one
    hashes the source, so start-up costs the longer of the two, not their sum.
    """
    from ..runtimes import load_runtime
    from ..store import open_store

    if engine not in ENGINES:
        raise ParameterError("engine", f"must be one of {', '.join(ENGINES)}, not {engine!r}.")
    if address and engine != "ray":
        raise ParameterError("address", "goes with engine=ray (the Ray cluster to join).", also=("engine",))
    check_batch_size(batch_size)
    if engine == "local":
        check_workers(workers)
    _check_backbone_name(recipe.backbone)  # before hashing starts: a typo should not wait for a whole dataset
    recipe = recipe.for_source(source)
    load = dict(runtime=runtime, cache=cache, batch_size=batch_size)
    if engine == "ray":
        from .ray_engine import RayEngine

        hashes = hash_source(source, progress) if recipe.precision == "int8" else None
        model = load_runtime(recipe, **load, calibrate=calibration_for(source, hashes[0]) if hashes else None)
        runner = RayEngine(model.config, recipe.weights, address=address, num_workers=workers,
                           runtime=model.choice.runtime, cache=cache)
        with open_store(model.config, cache) as store:
            return embed_source(source, model, store, name=name, batch_size=batch_size, progress=progress,
                                engine=runner, hashes=hashes)
    decoders = DecoderPool(source, default_workers() if workers is None else workers)
    try:
        if recipe.precision == "int8":  # calibration needs the content keys first
            hashes = hash_source(source, progress)
            model = load_runtime(recipe, **load, calibrate=calibration_for(source, hashes[0]))
        else:
            with ThreadPoolExecutor(1) as loader:
                loading = loader.submit(load_runtime, recipe, **load, progress=progress)
                try:
                    hashes = hash_source(source, progress)
                finally:
                    model = loading.result()
        with open_store(model.config, cache) as store:
            return embed_source(source, model, store, name=name, batch_size=batch_size, progress=progress,
                                engine=LocalEngine(model, decoders), hashes=hashes)
    finally:
        decoders.close()


def _check_backbone_name(name: str) -> None:
    from ..backbones.registry import HUB_PREFIXES, get_backbone_spec

    if not name.startswith(HUB_PREFIXES):
        get_backbone_spec(name)  # raises BackboneError naming the known ones


def embed_missing(spec: str, missing: DatasetNotStoredError, cache, store_query: StoreQuery, data_dir: str | None,
                  progress: Progress | None) -> tuple[str, dict]:
    """Embed the source ``spec`` names (a folder, a CSV manifest, a built-in) with the default recipe, or the one
    ``store_query`` asks for, when no store holds it yet: its dataset name and what the embedding did. ``missing`` is
    raised again when ``spec`` names no source."""
    from ..data import open_source

    try:
        source = open_source(spec, data_dir=data_dir)
    except SourceError:
        raise missing from None
    result = embed_into_store(source, store_query.recipe(), cache=cache, progress=progress)
    return result.dataset, {"dataset": result.dataset, "store": result.store, "recipe": ", ".join(result.layers),
                            "n_embedded": result.n_embedded, "n_failed": result.n_failed,
                            "seconds": round(result.seconds, 3)}
