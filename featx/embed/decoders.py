"""Decoding workers: processes that turn source items into batches of model-ready crops, in order, ahead of the model."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
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
# Decoding moves into the consumer's process once, over the first JUDGE_AFTER batches, it cost less than
# CHEAP_DECODE of the consumer's own time per batch: a worker then saves less than it costs, since it takes
# a core from the forward pass's threads whenever it runs. Digits at 224 px decode in 0.11-0.125 of the
# forward pass's time; 1,024 of them: 146 images/s with a worker, 161 without (bench_rank_parts.py).
CHEAP_DECODE = 0.2
JUDGE_AFTER = 3


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


def _decode_in_worker(indices: Sequence[int], preprocess: PreprocessConfig) -> tuple[Batch, float]:
    started = time.perf_counter()
    batch = decode_batch(_SOURCE, indices, preprocess)
    return batch, time.perf_counter() - started


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
    never a hang; what was stored stays, and the next run resumes. When decoding turns out cheap beside
    what the consumer does with each batch (CHEAP_DECODE), the rest is decoded in the consumer's process.
    """

    def __init__(self, source: Source, workers: int):
        self.source, self.workers = source, workers
        self.pool = None
        self.decoded_here = False  # whether batches() moved decoding into this process (cheap decoding)
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
        if self.pool is None or self.decoded_here:
            for chunk in chunks:
                yield decode_batch(self.source, chunk, preprocess)
            return
        ahead = ahead or 2 * self.workers + 2
        pending: deque = deque()
        decode = consume = 0.0  # seconds the workers decoded, and the consumer spent between batches
        todo = deque(chunks)
        try:
            while todo or pending:
                while todo and len(pending) < ahead:
                    pending.append(self.pool.submit(_decode_in_worker, todo.popleft(), preprocess))
                batch, seconds = pending.popleft().result()
                decode += seconds
                handed = time.perf_counter()
                yield batch
                consume += time.perf_counter() - handed
                if len(chunks) - len(todo) - len(pending) == JUDGE_AFTER and decode < CHEAP_DECODE * consume:
                    self.decoded_here = True
                    break
            while pending:  # already submitted: taken as they come, in order
                yield pending.popleft().result()[0]
        except BrokenProcessPool:
            raise FeatxError("a decoding worker died (killed for memory, or a decoder crashed on a file); what "
                             "was embedded is stored: run again to resume", params=("workers",)) from None
        for chunk in todo:
            yield decode_batch(self.source, chunk, preprocess)

    def subset(self, indices: Sequence[int]) -> "SubsetDecoders":
        """This pool decoding a ``SubsetSource(source, indices)`` of its source: one pool, forked once while the
        process was small, serves every subset (rank's groups), instead of a fork of a grown process each."""
        return SubsetDecoders(self, indices)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # batches not started are dropped
            self.pool = None

    def __enter__(self) -> "DecoderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SubsetDecoders:
    """A DecoderPool's batches for a subset of its source, in the subset's item numbers; closing it leaves the
    pool to its owner."""

    def __init__(self, pool: DecoderPool, indices: Sequence[int]):
        self.pool, self.indices = pool, [int(i) for i in indices]

    def batches(self, indices: Sequence[int], preprocess: PreprocessConfig, batch_size: int) -> Iterator[Batch]:
        back = {j: i for i, j in enumerate(self.indices)}
        for idx, keys, crops, bad in self.pool.batches([self.indices[i] for i in indices], preprocess, batch_size):
            yield [back[j] for j in idx], keys, crops, [(back[j], reason) for j, reason in bad]

    def close(self) -> None:
        pass
