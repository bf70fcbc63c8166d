"""What turns source items into stored vectors: the engine interface, and this machine's engine."""

from __future__ import annotations

from typing import Sequence

from ..data import Source
from ..hardware import Progress, seconds_since_process_start
from ..store import FeatureStore
from .decoders import DecoderPool
from .mapper import Embedder
from .writer import store_batch


class Engine:
    """Turns source items into stored vectors; ``run`` returns the keys embedded and {key: reason} failed."""

    first_batch_seconds: float | None = None  # seconds from the process's start to the first stored batch

    def run(self, source: Source, store: FeatureStore, indices: list[int], keys: Sequence[str | None],
            batch_size: int, progress: Progress | None) -> tuple[set[str], dict[str, str]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalEngine(Engine):
    """This machine: decoding in a DecoderPool's processes, forward passes in this one."""

    def __init__(self, model, decoders: DecoderPool):
        self.embedder = Embedder(model)
        self.decoders = decoders

    def run(self, source, store, indices, keys, batch_size, progress):
        embedded, failed, self.first_batch_seconds = run_batches(
            self.decoders, self.embedder, store, indices, keys, batch_size, progress)
        return embedded, failed

    def close(self) -> None:
        self.decoders.close()


def run_batches(decoders: DecoderPool, embedder: Embedder, store, indices, keys, batch_size, progress):
    """Decode ``indices`` in the pool's workers and store their vectors batch by batch.

    Returns the keys embedded, {key: failure reason} for those that could not be, and the seconds
    from the process's start to the first stored batch.
    """
    failed: dict[str, str] = {}
    embedded: set[str] = set()
    first = None
    for idx, read_keys, batch, bad in decoders.batches(indices, embedder.preprocess, batch_size):
        for i, reason in bad:
            failed[keys[i]] = reason
        if batch is not None:
            embedded.update(store_batch(store, keys, idx, read_keys, embedder(batch), failed))
            if first is None:
                first = seconds_since_process_start()
        if progress:
            progress("embed", len(idx) + len(bad), len(indices))
    return embedded, failed, first
