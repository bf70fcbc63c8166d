"""Content hashes: the key each sample's vector is stored under, and hashing a whole source."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..hardware import Progress
    from .sources import Source


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_array(arr: np.ndarray) -> str:
    h = hashlib.sha256(f"featx-array:{arr.dtype.str}:{arr.shape}:".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def content_hash(data: bytes | np.ndarray) -> str:
    """The key a sample's vector is stored under: SHA-256 of its file bytes or its pixel array."""
    return hash_array(data) if isinstance(data, np.ndarray) else hash_bytes(data)


def hash_source(source: "Source", progress: "Progress | None" = None, threads: int = 8):
    """Content hash of every item (None where unreadable) and the read failures, in item order."""
    n = len(source.items)
    keys: list[str | None] = [None] * n
    failures: dict[int, str] = {}

    def one(i: int) -> None:
        try:
            keys[i] = source.content_hash(i)
        except OSError as e:
            failures[i] = read_failure(e)

    # hashlib and file reads release the GIL, so threads overlap I/O and hashing.
    step = 256
    with ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(one, range(n)), start=1):
            if progress and (done % step == 0 or done == n):
                progress("hash", (done - 1) % step + 1, n)
    return keys, failures


def read_failure(e: OSError) -> str:
    """The recorded reason for a file that could not be read."""
    return f"cannot read: {e.strerror or e}"
