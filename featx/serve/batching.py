"""Dynamic micro-batching: concurrent callers' images share forward passes on one worker thread."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ParameterError


@dataclass
class _Request:
    crops: np.ndarray  # (n, 3, H, W) uint8
    future: Future


class MicroBatcher:
    """Queue crops from many requests; run ``fn`` on batches of up to ``max_batch`` images.

    The worker takes the first waiting request, then gathers more for at most ``max_wait``
    seconds (or until ``max_batch`` images), runs one forward pass, and hands each request its
    rows. A lone request waits ``max_wait`` at most; many concurrent ones share the cost of each
    pass, which is where the throughput comes from on CPU and GPU alike.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 32, max_wait: float = 0.005):
        if max_batch < 1:
            raise ParameterError("max_batch", f"must be at least 1, not {max_batch}.")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="featx-batcher", daemon=True)
        self._closed = False
        self.batches = 0  # forward passes run, for /info and tests
        self.images = 0
        self._thread.start()

    def submit(self, crops: np.ndarray) -> Future:
        """A future for ``fn``'s rows for these crops."""
        future: Future = Future()
        if self._closed:
            future.set_exception(RuntimeError("the batcher is closed"))
        elif len(crops) == 0:
            future.set_result(np.empty((0, 0), np.float32))
        else:
            self._queue.put(_Request(np.asarray(crops), future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, n = [first], len(first.crops)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            n += len(item.crops)
        return batch, False

    def _work(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._gather(first)
            try:
                out = self.fn(np.concatenate([r.crops for r in batch]))
            except Exception as e:  # every waiting request learns why
                for r in batch:
                    r.future.set_exception(e)
                continue
            self.batches += 1
            self.images += len(out)
            start = 0
            for r in batch:
                r.future.set_result(out[start : start + len(r.crops)])
                start += len(r.crops)
