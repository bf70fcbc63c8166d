"""Files on disk: crash-safe writes (temporary name, fsync, rename) and safe file names."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np


def safe_name(name: str) -> str:
    """``name`` reduced to characters that are safe in a file name on every system."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "unnamed"


_HASHED_STEM = re.compile(r".*-[0-9a-f]{8}")


def name_stem(name: str) -> str:
    """A file-name stem for a user's name that no other name shares.

    A name that is already safe is its own stem, unless it could be mistaken for a hashed stem (it ends
    in ``-`` and 8 hex digits) or a path step (``.``, ``..``, a leading dot); every other name becomes its
    safe form plus a short hash of the real name. So ``"p q"`` → ``p-q-38c70423``, and the name
    ``"p-q-38c70423"`` itself gets a hash of its own: verbatim stems never end like hashed ones.
    """
    safe = safe_name(name)
    if safe == name and not name.startswith(".") and not _HASHED_STEM.fullmatch(name):
        return safe
    return f"{safe.strip('.') or 'unnamed'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file (following links), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable, then atomically give it its final name."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path`` for writing; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    # A unique temporary name: two writers of one file never share (or delete) each other's half-file.
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            yield f
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Hashing:
    """A writable file that also hashes what passes through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)


def write_npy(path: str | os.PathLike, X: np.ndarray) -> str:
    """Write ``X`` as ``.npy`` atomically; returns the SHA-256 of the file's bytes (hashed as written)."""
    with atomic_write(path) as f:
        hashing = _Hashing(f)
        np.save(hashing, X)
    return hashing.sha.hexdigest()


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return Path(path)
