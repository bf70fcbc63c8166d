"""Wall time and peak memory of one block of work, so runs in one process are measured apart."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (VmHWM) to the current RSS; Linux ≥ 4.0 only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Give freed heap memory back to the kernel, so the next block's peak counts what it allocates.

    featx.hardware.keep_freed_memory keeps freed blocks resident for speed; without this, a run
    after a larger one would reuse that memory and look as if it needed none.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


@contextlib.contextmanager
def measured_runs():
    """Around many measured runs in one process: what exists now (the libraries, the dataset, the store) is
    frozen out of the garbage collector's sight (``gc.freeze``), so each run's collection before it is measured
    walks only what the runs made. With torch, timm and scikit-learn loaded a full collection took 0.36 s,
    5.8 s of a 23 s `featx compare`. Everything frozen outlives the runs anyway; it is unfrozen after them."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Measure:
    """``with Measure() as m: …`` then ``m.seconds``, ``m.peak_rss_mb`` (and ``m.peak_gpu_mb`` on CUDA).

    Peak RSS is this block's own on Linux, where the kernel's high-water mark can be reset; elsewhere
    it is the process's peak so far (``ru_maxrss``), an upper bound. ``added_rss_mb`` is the peak less
    the resident memory at the start: what the block itself needed beyond the libraries and data
    already loaded (a CUDA build of torch alone keeps over 1 GB resident).
    """

    def __init__(self, device: torch.device | str | None = None):
        if device is not None:
            import torch

            device = torch.device(device)
        self.device = device
        self.seconds = 0.0
        self.peak_rss_mb: float | None = None
        self.peak_gpu_mb: float | None = None
        self.added_rss_mb: float | None = None

    def __enter__(self) -> "Measure":
        _release_free_memory()
        self._own_peak = _reset_peak_rss()
        self._start_rss = _status_mb("VmRSS")
        if self.device is not None and self.device.type == "cuda":
            sys.modules["torch"].cuda.reset_peak_memory_stats(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        peak = _status_mb("VmHWM") if self._own_peak else None
        if peak is None:
            per_mb = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, KiB on Linux
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_mb
        self.peak_rss_mb = round(peak, 1)
        if self._own_peak and self._start_rss is not None:
            self.added_rss_mb = round(max(0.0, peak - self._start_rss), 1)
        if self.device is not None and self.device.type == "cuda":
            self.peak_gpu_mb = round(sys.modules["torch"].cuda.max_memory_allocated(self.device) / 2**20, 1)
