"""Shard files: memory-mapped .npy arrays of vectors, checked by header and size (and checksum) before use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import StoreError
from .atomic import file_sha256, is_regular_file

SHARDS = "shards"


class ShardReads:
    """How a FeatureStore reads and checks its shards (``self.path``, ``self.dim``, ``self.dtype``, ``self._db``,
    ``self._mmaps``): one memory map per shard, rows gathered by (shard, row)."""

    def _shard(self, shard_id: int) -> np.ndarray:
        if shard_id not in self._mmaps:
            row = self._db.execute("SELECT file, n FROM shards WHERE id = ?", (shard_id,)).fetchone()
            if row is None:  # merged away since the catalog was read
                raise FileNotFoundError(f"shard {shard_id} is no longer in the catalog")
            problem = self.shard_problem(row[0], row[1])
            if problem == "is missing" and not self._missing_is_damage:
                raise FileNotFoundError(f"shard {row[0]} is missing")  # maybe merged away: read the catalog again
            if problem is not None:
                raise StoreError(
                    f"store {str(self.path)!r} is damaged: shard {row[0]} {problem}. Its {row[1]} vectors are lost; "
                    "verify and repair the store (the next embed also repairs it), then embed the dataset again.")
            # mmap so nothing is read until rows are touched, and pages are shared between processes.
            self._mmaps[shard_id] = np.load(self.path / SHARDS / row[0], mmap_mode="r")
        return self._mmaps[shard_id]

    def shard_problem(self, file: str, n: int) -> str | None:
        """What is wrong with shard ``file`` of ``n`` rows from its header and size alone, or None."""
        path = self.path / SHARDS / file
        if path.exists() and not is_regular_file(path):
            return "is not a regular file (a FIFO, a device or a folder stands in its place)"
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                offset = f.tell()
            size = path.stat().st_size
        except FileNotFoundError:
            return "is missing"
        except (OSError, ValueError, SyntaxError) as e:
            return f"has an unreadable header ({e})"
        if tuple(shape) != (n, self.dim) or np.dtype(dtype) != self.dtype:
            return f"holds {dtype} {tuple(shape)}, not {self.dtype} ({n}, {self.dim})"
        expected = offset + n * self.dim * self.dtype.itemsize
        if size != expected:
            return f"is {size:,} bytes, not the {expected:,} its header promises (truncated?)"
        return None

    def damaged_shards(self, checksums: bool = False) -> list[dict]:
        """Shards that are missing, truncated or mislabelled (and, with ``checksums``, whose bytes changed)."""
        out = []
        checksummed = "sha256" in {r[1] for r in self._db.execute("PRAGMA table_info(shards)")}  # absent: old store
        query = f"SELECT id, file, n, {'sha256' if checksummed else 'NULL'} FROM shards ORDER BY id"
        for shard_id, file, n, digest in self._db.execute(query):
            problem = self.shard_problem(file, n)
            if problem is None and checksums and digest and file_sha256(self.path / SHARDS / file) != digest:
                problem = "does not match its checksum (its bytes changed after it was written)"
            if problem is not None:
                out.append({"id": shard_id, "file": file, "n": n, "problem": problem})
        return out

    def _gather(self, locations: list[tuple[int, int]], out: np.ndarray | None = None) -> np.ndarray:
        """Rows at (shard, row) ``locations``: a zero-copy slice when contiguous, else copied into ``out``."""
        if not locations:
            return np.empty((0, self.dim), dtype=self.dtype)
        shard_ids = {s for s, _ in locations}
        if out is None and len(shard_ids) == 1:
            rows = np.fromiter((r for _, r in locations), dtype=np.int64, count=len(locations))
            first = int(rows[0])
            if np.array_equal(rows, np.arange(first, first + len(rows))):
                return self._shard(locations[0][0])[first : first + len(rows)]
        X = np.empty((len(locations), self.dim), dtype=self.dtype) if out is None else out
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for i, (s, r) in enumerate(locations):
            dst, src = by_shard.setdefault(s, ([], []))
            dst.append(i)
            src.append(r)
        for s, (dst, src) in by_shard.items():
            X[dst] = self._shard(s)[src]
        return X


@dataclass
class Locations:
    """Where some vectors lie, (shard, row) each, with the shards' memory maps as one catalog snapshot saw them:
    reading later reads those very vectors, even after a writer merged their shards into others (the maps keep
    the unlinked files readable), and never a shard that replaced them. Resolved once, read many times."""

    shards: np.ndarray
    rows: np.ndarray
    maps: dict
    dim: int
    dtype: np.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The vectors at ``positions`` (all, in order, when None), as stored."""
        shards, rows = (self.shards, self.rows) if positions is None else (self.shards[positions], self.rows[positions])
        X = np.empty((len(rows), self.dim), dtype=self.dtype)
        for shard_id in np.unique(shards):
            at = np.flatnonzero(shards == shard_id)
            X[at] = self.maps[int(shard_id)][rows[at]]
        return X

    def take(self, positions: np.ndarray) -> "Locations":
        return Locations(self.shards[positions], self.rows[positions], self.maps, self.dim, self.dtype)

    @staticmethod
    def join(*parts: "Locations") -> "Locations":
        return Locations(np.concatenate([p.shards for p in parts]), np.concatenate([p.rows for p in parts]),
                         {k: v for p in parts for k, v in p.maps.items()}, parts[0].dim, parts[0].dtype)


def to_store_dtype(X: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """X rounded to a narrower store dtype; refuses values it cannot hold rather than store them as inf."""
    limit = np.finfo(dtype).max
    if np.any(np.abs(X) > limit):
        raise StoreError(f"these vectors hold values beyond {dtype}'s range (±{limit:g}); store this backbone's "
                         "vectors as float32 (store_dtype=float32).", params=("store_dtype",))
    return X.astype(dtype)


def as_float32(X: np.ndarray) -> np.ndarray:
    """X as float32: itself when it is already (a memory map stays one), else a converted copy."""
    return X if X.dtype == np.float32 else X.astype(np.float32)
