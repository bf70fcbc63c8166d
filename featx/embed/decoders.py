"""Decoding workers: processes that turn source items into batches of model-ready crops, in order, ahead of the model."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator, Sequence

import numpy as np

from ..config import PreprocessConfig
from ..data import Source, read_input
from ..errors import FeatxError
from ..hardware import die_with_parent

# (item indices, their content keys as read, uint8 crops (N, 3, H, W) or None, [(index, reason)] unusable)
Batch = tuple[list[int], list[str], "np.ndarray | None", list[tuple[int, str]]]

_SOURCE: Source | None = None  # a worker's source, inherited when it forks


def decode_batch(source: Source, indices: Sequence[int], preprocess: PreprocessConfig) -> Batch:
    """Read and decode ``indices``: the usable ones stacked into one array, the others with their reasons."""
    idx, keys, crops, bad = [], [], [], []
    for i in indices:
        key, crop, reason = read_input(source, i, preprocess)
        if crop is None:
            bad.append((i, reason))
        else:
            idx.append(i)
            keys.append(key)
            crops.append(crop)
    return idx, keys, (np.stack(crops) if crops else None), bad


def _decode_in_worker(indices: Sequence[int], preprocess: PreprocessConfig) -> Batch:
    return decode_batch(_SOURCE, indices, preprocess)


def _set_source(source: Source, parent: int, forked_by_main_thread: bool) -> None:
    global _SOURCE
    _SOURCE = source
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it stops the pool
    # a parent killed with -9 cannot stop the pool: the workers must notice themselves
    die_with_parent(parent, forked_by_main_thread)


def _ready() -> None:
    pass


class DecoderPool:
    """``workers`` forked processes (0: decode in this process) that decode batches a few ahead, in order.

    Start it before loading a model or starting threads: the workers fork from a process with
    nothing running but this one thread, and decode while the model loads. A batch is one task,
    so a worker returns a whole stacked array (one pickled buffer), not one object per image. A
    worker that dies (killed for memory, a crashing decoder) ends the run with an error saying so,
    never a hang; what was stored stays, and the next run resumes.
    """

    def __init__(self, source: Source, workers: int):
        self.source, self.workers = source, workers
        self.pool = None
        if workers:
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_set_source,
                                            initargs=(source, os.getpid(),
                                                      threading.current_thread() is threading.main_thread()))
            self.pool.submit(_ready)  # with fork, this starts every worker now, before any thread exists

    def batches(self, indices: Sequence[int], preprocess: PreprocessConfig, batch_size: int,
                ahead: int | None = None) -> Iterator[Batch]:
        """Decoded batches of ``indices`` in order, at most ``ahead`` in flight (default: two per worker + 2)."""
        chunks = [list(indices[i:i + batch_size]) for i in range(0, len(indices), batch_size)]
        if self.pool is None:
            for chunk in chunks:
                yield decode_batch(self.source, chunk, preprocess)
            return
        ahead = ahead or 2 * self.workers + 2
        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append(self.pool.submit(_decode_in_worker, chunk, preprocess))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise FeatxError("a decoding worker died (killed for memory, or a decoder crashed on a file); what "
                             "was embedded is stored: run again to resume", params=("workers",)) from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # batches not started are dropped
            self.pool = None

    def __enter__(self) -> "DecoderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
