"""Writing a store: the single-writer lock, new shards committed after their bytes, datasets, merging, forgetting."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

from ..errors import StoreBusyError, StoreError
from .atomic import commit, file_sha256, write_npy
from .catalog import Member
from .shards import SHARDS, to_store_dtype

COMPACT_BELOW = 16384  # shards with fewer rows than this are merged after each run
_WRITING: set[str] = set()  # stores this process holds the write lock of (POSIX locks do not exclude threads)


class StoreWriter:
    """A FeatureStore's writes, each inside ``with store.writing():``. A crash at any point leaves the store
    consistent: a shard's bytes are fsynced and renamed into place before the catalog names them."""

    @contextmanager
    def writing(self) -> Iterator[StoreWriter]:
        """Hold the store's single-writer lock; clears what an interrupted writer left behind."""
        busy = StoreBusyError(
            f"another featx process is writing to store {str(self.path)!r}; wait for it to finish and retry."
        )
        if self.read_only:
            raise StoreError(f"store {str(self.path)!r} is read-only here (a read-only disk, or another user's "
                             "files): featx can read it but not add to it. Pass cache=DIR on a writable disk.",
                             params=("cache",))
        ident = os.path.realpath(self.path)
        if ident in _WRITING:
            raise busy
        lock = open(self.path / "write.lock", "a+")
        try:
            # A POSIX record lock, not flock: it belongs to this process alone, so decoding workers
            # forked while it is held do not keep the store locked after this process is killed.
            fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise busy from None
        _WRITING.add(ident)
        self._lock_file = lock
        try:
            self._remove_orphans()
            # A damaged shard would break every merge: forget it, so this run re-embeds its images.
            self.forget_shards([d["id"] for d in self.damaged_shards()])
            yield self
        finally:
            self._lock_file = None
            _WRITING.discard(ident)
            lock.close()  # closing releases the lock

    def _require_lock(self) -> None:
        if self._lock_file is None:
            raise RuntimeError("write to a FeatureStore inside `with store.writing():`")

    def _remove_orphans(self) -> None:
        """Shard files not in the catalog: a crash between rename and commit, or before a temp was renamed."""
        known = {f for (f,) in self._db.execute("SELECT file FROM shards")}
        for f in (self.path / SHARDS).iterdir():
            if f.name not in known:
                f.unlink(missing_ok=True)

    def add(self, keys: Sequence[str], X: np.ndarray) -> None:
        """Add one batch of vectors as a new shard: written, fsynced and renamed before the catalog commit.

        A crash at any point loses at most this batch; vectors whose key is already stored are dropped.
        """
        self._require_lock()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim or len(keys) != len(X):
            raise StoreError(f"expected {len(keys)} vectors of dimension {self.dim}, got an array of shape {X.shape}.")
        if self.dtype != np.float32:
            X = to_store_dtype(X, self.dtype)
        have = self.present(keys)
        fresh = [i for i, k in enumerate(keys) if k not in have]
        fresh = list({keys[i]: i for i in fresh}.values())  # one row per key
        if not fresh:
            return
        name = f"{uuid.uuid4().hex}.npy"
        try:
            digest = write_npy(self.path / SHARDS / name, X[fresh])
        except OSError as e:  # disk full, quota, read-only: nothing reached the catalog
            raise StoreError(f"cannot write a shard to store {str(self.path)!r}: {e.strerror or e}. The store is "
                             "unchanged and consistent (vectors written before are kept): free space and run again."
                             ) from None
        with self._transaction() as db:
            shard_id = db.execute("INSERT INTO shards (file, n, sha256) VALUES (?, ?, ?)",
                                  (name, len(fresh), digest)).lastrowid
            db.executemany(
                "INSERT INTO samples VALUES (?, ?, ?)", [(keys[i], shard_id, r) for r, i in enumerate(fresh)]
            )

    def record_dataset(
        self, name: str, source: str, members: Sequence[Member], failures: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Replace dataset ``name``'s membership list and failures in one transaction."""
        self._require_lock()
        missing = {m.key for m in members} - self.present(m.key for m in members)
        if missing:
            raise StoreError(f"dataset {name!r} names {len(missing)} vectors that are not in the store.")
        labelled = any(m.label is not None for m in members)
        with self._transaction() as db:
            db.execute("DELETE FROM members WHERE dataset = ?", (name,))
            db.execute("DELETE FROM failures WHERE dataset = ?", (name,))
            db.executemany(
                "INSERT INTO members VALUES (?, ?, ?, ?, ?, ?)",
                [(name, pos, m.key, m.path, m.label, m.split) for pos, m in enumerate(members)],
            )
            db.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)", [(name, p, r) for p, r in failures])
            db.execute(
                "INSERT OR REPLACE INTO datasets VALUES (?, ?, ?, ?, ?)",
                (name, source, len(members), int(labelled), time.time()),
            )

    def compact(self, order: Sequence[str] = (), below: int = COMPACT_BELOW) -> int:
        """Merge shards smaller than ``below`` rows into one; returns how many shards were merged.

        Rows are laid out in ``order`` (keys) first, so a dataset embedded in one run reads back as a
        contiguous slice of one memory-mapped shard.
        """
        self._require_lock()
        small = self._db.execute("SELECT id, file FROM shards WHERE n < ?", (below,)).fetchall()
        if len(small) < 2:
            return 0
        ids = [i for i, _ in small]
        rows = self._db.execute(
            f"SELECT key, shard, row FROM samples WHERE shard IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
        where = {k: (s, r) for k, s, r in rows}
        rank = {k: i for i, k in enumerate(dict.fromkeys(k for k in order if k in where))}
        keys = sorted(where, key=lambda k: (rank.get(k, len(rank)), where[k]))
        name = f"{uuid.uuid4().hex}.npy"
        files = dict(small)
        tmp = self.path / SHARDS / f".tmp-{name}"
        # A merge rewrites its rows: without room for them, leave the shards as they are (readable, just
        # more of them) rather than die half-way with a bus error on a full disk.
        if shutil.disk_usage(self.path).free < 2 * len(keys) * self.dim * self.dtype.itemsize + (64 << 20):
            return 0
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(len(keys), self.dim))
        self._gather([where[k] for k in keys], out=out)
        out.flush()
        del out
        commit(tmp, self.path / SHARDS / name)
        digest = file_sha256(self.path / SHARDS / name)
        with self._transaction() as db:
            new_id = db.execute("INSERT INTO shards (file, n, sha256) VALUES (?, ?, ?)",
                                (name, len(keys), digest)).lastrowid
            db.executemany("UPDATE samples SET shard = ?, row = ? WHERE key = ?",
                           [(new_id, r, k) for r, k in enumerate(keys)])
            db.execute(f"DELETE FROM shards WHERE id IN ({','.join('?' * len(ids))})", ids)
        for shard_id in ids:
            self._mmaps.pop(shard_id, None)
            (self.path / SHARDS / files[shard_id]).unlink(missing_ok=True)
        return len(ids)

    def forget_shards(self, shard_ids: Sequence[int]) -> int:
        """Remove damaged shards and their vectors from the catalog; returns the vectors forgotten.

        Datasets keep their members, so the next embed of each re-embeds exactly those images.
        """
        self._require_lock()
        if not shard_ids:
            return 0
        marks = ",".join("?" * len(shard_ids))
        with self._transaction() as db:
            n = db.execute(f"DELETE FROM samples WHERE shard IN ({marks})", list(shard_ids)).rowcount
            files = [f for (f,) in db.execute(f"SELECT file FROM shards WHERE id IN ({marks})", list(shard_ids))]
            db.execute(f"DELETE FROM shards WHERE id IN ({marks})", list(shard_ids))
        for shard_id, f in zip(shard_ids, files):
            self._mmaps.pop(shard_id, None)
            (self.path / SHARDS / f).unlink(missing_ok=True)
        return n
