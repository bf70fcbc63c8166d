"""Embedding on Ray: decoding and forward passes as Ray Data map_batches over actors; this process writes the store."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import BackboneConfig
from ..data import Source, read_input
from ..errors import FeatxError, ParameterError
from ..hardware import Progress
from ..store import FeatureStore
from .engines import Engine
from .writer import store_batch

INSTALL_HINT = "install it with `pip install 'featx[ray]'` (or `pip install 'ray[data]'`)"


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the extra's other half)
    except ImportError:
        raise FeatxError(f"the Ray engine needs Ray: {INSTALL_HINT}.", params=("engine",)) from None
    return ray


class _EmbedActor:
    """One Ray actor: holds the backbone on the driver's runtime, decodes its batch's items, runs one forward pass."""

    def __init__(self, source: Source, config: dict, weights: str | None, runtime: str, cache: str | None):
        from ..runtimes import runtime_for
        from .mapper import Embedder

        self.source = source
        # Each actor has the one CPU Ray gave it (num_cpus=1); a runtime would otherwise start a thread per core.
        self.embedder = Embedder(runtime_for(BackboneConfig.from_dict(config), runtime=runtime, weights=weights,
                                             cache=cache, threads=1))
        self.dim = self.embedder.dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pre = self.embedder.preprocess
        crops, read_keys, errors = [], [], []
        for i in batch["i"]:
            key, crop, reason = read_input(self.source, int(i), pre)
            if crop is not None:
                crops.append(crop)
            read_keys.append(key or "")
            errors.append(reason or "")
        X = np.zeros((len(errors), self.dim), np.float32)
        good = [j for j, e in enumerate(errors) if not e]
        if good:
            X[good] = self.embedder.embed_crops(crops, len(crops))
        return {"i": np.asarray(batch["i"]), "read_key": np.array(read_keys), "error": np.array(errors),
                "vector": X}


class RayEngine(Engine):
    """Ray Data batch inference: items flow to ``num_workers`` actors that each hold the backbone, on
    ``runtime`` (the one the driver chose, so every vector comes from the same runtime as a local run).

    Without ``address`` a local Ray instance starts (``num_cpus`` CPUs, default all); with it,
    featx joins that cluster, whose nodes must reach the source's files. The vectors come back to
    this process, which alone writes the store: same shards, catalog and crash safety as the
    local engine.
    """

    def __init__(self, config: BackboneConfig, weights: str | None = None, *, address: str | None = None,
                 num_workers: int | None = None, num_cpus: int | None = None, runtime: str = "torch",
                 cache: str | None = None):
        if num_workers is not None and num_workers < 1:
            raise ParameterError("workers", f"must be at least 1 backbone actor on Ray, not {num_workers}.")
        self.ray = _import_ray()
        self.config, self.weights = config, weights
        self.address, self.num_workers, self.num_cpus = address, num_workers, num_cpus
        self.runtime, self.cache = runtime, None if cache is None else str(cache)

    def _start(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        try:
            if self.address:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level="warning")
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                         logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            raise FeatxError(f"cannot start or join {where}: {e}") from None

    def run(self, source: Source, store: FeatureStore, indices: list[int], keys: Sequence[str | None],
            batch_size: int, progress: Progress | None) -> tuple[set[str], dict[str, str]]:
        self._start()
        ray = self.ray
        workers = self.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"i": int(i)} for i in indices]).map_batches(
            _EmbedActor,
            fn_constructor_args=(source, self.config.to_dict(), self.weights, self.runtime, self.cache),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        embedded: set[str] = set()
        failed: dict[str, str] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            idx = [int(i) for i in batch["i"]]
            good = [j for j, e in enumerate(batch["error"]) if not e]
            for j, e in enumerate(batch["error"]):
                if e:
                    failed[keys[idx[j]]] = str(e)
            if good:
                embedded.update(store_batch(store, keys, [idx[j] for j in good],
                                            [str(batch["read_key"][j]) for j in good], batch["vector"][good], failed))
            if progress:
                progress("embed", len(idx), len(indices))
        return embedded, failed
