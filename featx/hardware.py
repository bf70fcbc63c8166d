"""This machine's side of running a model: device, precision, decoding workers, the allocator, progress callbacks."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import sys
from typing import TYPE_CHECKING, Callable, Sequence

from .config import PRECISIONS
from .errors import ParameterError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that need it, so importing this module stays cheap.

# progress(stage, advance, total): stages such as "hash", "embed", "train", "runs"; skins draw bars from it.
Progress = Callable[[str, int, int], None]


def default_device() -> torch.device:
    """CUDA when a GPU is present, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_info(field: str) -> str:
    """One field of /proc/cpuinfo for the first CPU (``model name``, ``flags``); empty where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(field)), "")
    except OSError:
        return ""


def gpu_may_be_present() -> bool:
    """A cheap look for an NVIDIA driver, so CPU-only machines need not import torch to rule a GPU out."""
    return os.path.exists("/dev/nvidiactl")


def cpu_flags_say_bf16() -> bool:
    """Whether /proc/cpuinfo lists native bf16 (AMX-BF16 or AVX512-BF16); False when it cannot tell."""
    flags = cpu_info("flags").split()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision_without_torch(precision: str) -> str | None:
    """What ``resolve_precision`` will say on the CPU, when that is certain without importing torch; else None.

    Only a yes is trusted: a machine that may have a GPU, or a CPU whose flags do not list bf16,
    is left to torch to decide, so both paths always agree (the precision is part of the store key).
    """
    if precision != "auto":
        return precision
    if gpu_may_be_present() or not cpu_flags_say_bf16():
        return None
    return "bf16"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 on CUDA with bf16 support or a CPU with native bf16 (AVX512-BF16/AMX), else fp32."""
    if precision not in PRECISIONS:
        raise ParameterError("precision", f"must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_THREADS: int | None = None  # set_threads' choice; None: the available cores
_POOL = None  # (size, executor): the threads of on_cores, made on first use


def compute_threads() -> int:
    """How many threads a hot loop of featx's own uses (set_threads' choice, else the available cores)."""
    return _THREADS or available_cores()


def on_cores(pieces: Sequence, work: Callable) -> list:
    """``[work(piece) for piece in pieces]``, computed on compute_threads() threads.

    Pieces are handed out one at a time, so a thread whose core is busy with another process simply
    takes fewer: with one of two cores busy, a pass over 60,000 × 1,280 rows took 1.48x its quiet time
    (OpenBLAS's own threads, which split work evenly and wait for each other, took 2.8x). ``work``
    should run single-threaded BLAS (see single_threaded_blas) and release the GIL, as numpy's
    products do.
    """
    global _POOL
    # At least 4 pieces a thread: handing a few small pieces to threads costs more than it saves (a
    # digits fit's 4-piece passes took 2.4 ms threaded against about 1 ms in this thread).
    threads = min(compute_threads(), len(pieces) // 4)
    if threads <= 1:
        return [work(p) for p in pieces]
    if _POOL is None or _POOL[0] < threads:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (compute_threads(), ThreadPoolExecutor(compute_threads(), thread_name_prefix="featx-core"))
    order = itertools.count()  # next() on it is atomic under the GIL: each piece goes to one thread
    results: list = [None] * len(pieces)

    def worker() -> None:
        while (i := next(order)) < len(pieces):
            results[i] = work(pieces[i])

    for future in [_POOL[1].submit(worker) for _ in range(threads)]:
        future.result()
    return results  # in the pieces' order, so sums over them do not depend on which thread was faster


_BLAS = None  # (modules loaded when it was made, threadpoolctl's controller of the loaded BLAS libraries)


@contextlib.contextmanager
def single_threaded_blas():
    """Every BLAS library at one thread inside the block (on_cores supplies the parallelism), as before after.

    scipy's linear algebra is loaded first: it brings an OpenBLAS of its own, which must be limited too.
    The libraries are looked up again only when a module was imported since: each look-up reads every
    loaded library (5 ms; rank's 800 fits spent 3.6 s on it).
    """
    global _BLAS
    import scipy.linalg  # noqa: F401

    if _BLAS is None or _BLAS[0] != len(sys.modules):
        from threadpoolctl import ThreadpoolController

        _BLAS = (len(sys.modules), ThreadpoolController())
    with _BLAS[1].limit(limits=1, user_api="blas"):
        yield


def set_threads(threads: int | None = None) -> int:
    """Size every thread pool of this process for ``threads`` cores (default: the available ones), once,
    at start-up; returns the number.

    featx's own hot loops (a head's passes, via on_cores) use that many threads, with BLAS held at one
    thread inside them (single_threaded_blas): numpy's and scipy's OpenBLAS are two pools, and at 2
    threads each on 2 cores they spun against each other (a digits fit took 2.4 s instead of 0.5 s).
    Libraries loaded later read ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` (set unless the user
    set them); torch, if already imported, is told directly.
    """
    global _THREADS
    threads = _THREADS = threads or available_cores()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def default_workers() -> int:
    """Decoding processes: every core but one, which the forward pass keeps (it uses all cores between batches).

    Decoders only work a few batches ahead, so idle ones cost little; a GPU on a many-core machine
    needs them all (a 1,024 px PNG takes 30 ms of one core here). At most 32.
    """
    return max(1, min(32, (os.cpu_count() or 2) - 1))


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 0:
        raise ParameterError("workers", f"must be 0 (decode in this process) or more, not {workers}.")


def check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise ParameterError("batch_size", f"must be at least 1, not {batch_size}.")


_MALLOC_TUNED: bool | None = None
_MALLOC_ENABLED = True


def set_malloc_tuning(enabled: bool) -> None:
    """Whether ``keep_freed_memory`` may tune glibc (the CLI sets it from FEATX_MALLOC)."""
    global _MALLOC_ENABLED
    _MALLOC_ENABLED = enabled


def keep_freed_memory() -> bool:
    """Stop glibc from handing large freed blocks back to the kernel; returns whether it applied.

    A CPU forward pass allocates and frees activations of tens of MB per layer. By default glibc
    serves those with mmap and returns them with munmap, so every batch faults its memory back in
    page by page (on 2 cores that was over half the CPU time, as system time). Serving them from the
    heap and never trimming it roughly doubles CPU throughput. Process-wide; ``set_malloc_tuning(False)``
    (FEATX_MALLOC=default on the command line) turns it off.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        if _MALLOC_ENABLED and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                m_trim_threshold, m_mmap_max = -1, -4
                _MALLOC_TUNED = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
            except (OSError, AttributeError):  # not glibc
                pass
    return _MALLOC_TUNED


def prepare_batch(batch: torch.Tensor, preprocess, device: torch.device) -> torch.Tensor:
    """uint8 (N, 3, H, W) crops → the model's float input on ``device``: scaled, normalised, channels-last."""
    import torch

    x = batch.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(preprocess.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux; 10 ms steps), imports included; None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def die_with_parent(parent: int, forked_by_main_thread: bool = True) -> None:
    """End this (forked worker) process when ``parent`` dies, however it dies (``kill -9`` included).

    Linux's parent-death signal does it at once; it fires when the *thread* that forked exits, so it
    is armed only for workers forked by the main thread. Otherwise (or elsewhere) a daemon thread
    watches for the parent's pid to change. Either way a worker blocked on its pipe never outlives the
    command that started it.
    """
    import ctypes.util
    import signal
    import threading
    import time

    armed = False
    if forked_by_main_thread:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            armed = libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="featx-parent-watch", daemon=True).start()
