"""The feature store: vectors in memory-mappable .npy shards, a SQLite catalog, crash-safe writes."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .. import __version__
from ..config import BackboneConfig
from ..errors import DamagedStoreError, StoreBusyError, StoreError
from .atomic import commit, file_sha256, is_regular_file, safe_name, write_npy
from .catalog import connect, quick_check

CATALOG = "catalog.sqlite"
SHARDS = "shards"
COMPACT_BELOW = 16384  # shards with fewer rows than this are merged after each run
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
_WRITING: set[str] = set()  # stores this process holds the write lock of (POSIX locks do not exclude threads)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, file TEXT NOT NULL UNIQUE, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, shard INTEGER NOT NULL, row INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS samples_by_shard ON samples (shard);
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY, source TEXT NOT NULL, n INTEGER NOT NULL, labeled INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    dataset TEXT NOT NULL, pos INTEGER NOT NULL, key TEXT NOT NULL, path TEXT NOT NULL,
    label TEXT, split TEXT NOT NULL, PRIMARY KEY (dataset, pos));
CREATE INDEX IF NOT EXISTS members_by_split ON members (dataset, split, pos);
CREATE INDEX IF NOT EXISTS members_by_key ON members (key);
CREATE TABLE IF NOT EXISTS failures (
    dataset TEXT NOT NULL, path TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (dataset, path));
"""


DEFAULT_CACHE = Path("cache")


def store_dir(config: BackboneConfig, cache: str | os.PathLike | None = None) -> Path:
    """Where the store for ``config`` lives: ``<cache>/<backbone>-<key prefix>``."""
    return Path(cache or DEFAULT_CACHE) / f"{safe_name(config.name)}-{config.key[:12]}"


@dataclass
class Dataset:
    """A dataset's entry in a store's catalog."""

    name: str
    source: str
    n: int
    labeled: bool
    splits: dict[str, int] = field(default_factory=dict)
    n_failed: int = 0
    updated: float = 0.0


@dataclass
class Member:
    """One row of a dataset's membership list."""

    key: str
    path: str
    label: str | None
    split: str


class FeatureStore:
    """Vectors of one backbone configuration, addressed by content hash, grouped into datasets.

    Open with :func:`open_store` (by configuration) or ``FeatureStore(path)`` (an existing store).
    """

    def __init__(self, path: str | os.PathLike, config: BackboneConfig | None = None):
        self.path = Path(path)
        catalog = self.path / CATALOG
        if config is None and not catalog.is_file():
            raise StoreError(f"{str(self.path)!r} is not a featx store (no {CATALOG}).")
        # A store on a read-only disk or owned by someone else is still readable: SQLite's WAL mode
        # needs write access even to read, so such a catalog is opened read-only instead.
        self.read_only = catalog.is_file() and not (os.access(self.path, os.W_OK) and os.access(catalog, os.W_OK))
        if not self.read_only:
            try:
                (self.path / SHARDS).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store {str(self.path)!r}: {e.strerror or e}.",
                                 params=("cache",)) from None
        self._db = None
        try:
            if self.read_only:
                self._open_catalog_read_only(catalog, config)
            else:
                self._open_catalog(catalog, config)
        except BaseException:
            self.close()
            raise
        self._lock_file = None
        self._mmaps: dict[int, np.ndarray] = {}
        self._missing_is_damage = False

    def _open_catalog(self, catalog: Path, config: BackboneConfig | None) -> None:
        self._db = connect(catalog, self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if "sha256" not in {r[1] for r in self._db.execute("PRAGMA table_info(shards)")}:
            self._db.execute("ALTER TABLE shards ADD COLUMN sha256 TEXT")  # stores from before checksums
        self._check_config(config)

    def _open_catalog_read_only(self, catalog: Path, config: BackboneConfig | None) -> None:
        uri = catalog.resolve().as_uri()
        try:  # sees a writer's latest commits when the WAL's files are there to read
            self._db = connect(f"{uri}?mode=ro", self.path, uri=True, isolation_level=None, check_same_thread=False)
            self._db.execute("SELECT COUNT(*) FROM meta").fetchone()
        except (sqlite3.OperationalError, StoreError) as e:
            if isinstance(e, DamagedStoreError):
                raise
            # no -shm file and no right to make one: read the file as it stands
            if self._db is not None:
                self._db.close()
            self._db = connect(f"{uri}?immutable=1", self.path, uri=True, isolation_level=None,
                               check_same_thread=False)
        self._check_config(config)

    def _check_config(self, config: BackboneConfig | None) -> None:
        stored = self._meta("config")
        if stored is None:
            if config is None or self.read_only:
                raise StoreError(f"store {str(self.path)!r} has no configuration; it was never initialised.")
            with self._transaction() as db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('config', ?)", (json.dumps(config.to_dict()),))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('featx_version', ?)", (__version__,))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))
            stored = self._meta("config")
        self.config = BackboneConfig.from_dict(json.loads(stored))
        if config is not None and config.key != self.config.key:
            raise StoreError(
                f"store {str(self.path)!r} holds vectors of {self.config.describe()}, not {config.describe()}."
            )

    # --- basics -----------------------------------------------------------------------------

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def dtype(self) -> np.dtype:
        """How the shards keep the vectors (float32, or float16 for half the disk and page cache)."""
        return np.dtype(self.config.store_dtype)

    def close(self) -> None:
        getattr(self, "_mmaps", {}).clear()
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, {self.config.describe()})"

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def n_vectors(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def catalog_problems(self, force: bool = True) -> list[str]:
        """What SQLite's quick integrity check finds wrong with the catalog (empty when healthy); without
        ``force`` a large catalog is not checked (see catalog.quick_check)."""
        return quick_check(self._db, self.path / CATALOG, force)

    def shard_files(self) -> list[str]:
        """The shard files the catalog lists, in id order."""
        return [f for (f,) in self._db.execute("SELECT file FROM shards ORDER BY id")]

    def describe(self) -> dict:
        """What the store holds, as ``featx stores`` and the service's /info show it."""
        return {
            "store": str(self.path), "key": self.key, "backbone": self.config.name, "dim": self.dim,
            "input_size": self.config.preprocess.input_size, "precision": self.config.precision,
            "store_dtype": self.config.store_dtype,
            "layers": list(self.config.layers), "crop": self.config.preprocess.crop,
            "columns": {name: list(span) for name, span in self.config.columns().items()},
            "n_vectors": self.n_vectors(), "bytes": self.size_bytes(),
            "datasets": [{"name": d.name, "n": d.n, "splits": d.splits, "labeled": d.labeled,
                          "n_failed": d.n_failed, "source": d.source} for d in self.datasets()],
        }

    def present(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` already have a vector here."""
        keys = set(keys)
        if not keys:
            return set()
        if len(keys) > 5000:
            stored = {k for (k,) in self._db.execute("SELECT key FROM samples")}
            return keys & stored
        found: set[str] = set()
        chunk = sorted(keys)
        for i in range(0, len(chunk), 500):
            part = chunk[i : i + 500]
            q = f"SELECT key FROM samples WHERE key IN ({','.join('?' * len(part))})"
            found.update(k for (k,) in self._db.execute(q, part))
        return found

    # --- writing ----------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator["FeatureStore"]:
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
        labeled = any(m.label is not None for m in members)
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
                (name, source, len(members), int(labeled), time.time()),
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

    # --- reading ----------------------------------------------------------------------------

    def datasets(self, name: str | None = None) -> list[Dataset]:
        """The datasets recorded in this store (or just ``name``), with split sizes and failure counts."""
        out = []
        q = "SELECT name, source, n, labeled, updated FROM datasets"
        rows = self._db.execute(q + " WHERE name = ?", (name,)) if name else self._db.execute(q + " ORDER BY name")
        for name, source, n, labeled, updated in rows.fetchall():
            splits = dict(
                self._db.execute(
                    "SELECT split, COUNT(*) FROM members WHERE dataset = ? GROUP BY split", (name,)
                ).fetchall()
            )
            splits = dict(sorted(splits.items(), key=lambda kv: SPLIT_ORDER.get(kv[0], 9)))
            n_failed = self._db.execute("SELECT COUNT(*) FROM failures WHERE dataset = ?", (name,)).fetchone()[0]
            out.append(Dataset(name, source, n, bool(labeled), splits, n_failed, updated))
        return out

    def dataset(self, name: str) -> Dataset:
        found = self.datasets(name)
        if found:
            return found[0]
        known = ", ".join(d.name for d in self.datasets()) or "none"
        raise StoreError(
            f"no dataset {name!r} in store {self.path.name} (datasets: {known}). Embed it first, with name={name!r}.",
            params=("name",),
        )

    def failures(self, dataset: str) -> list[tuple[str, str]]:
        return self._db.execute(
            "SELECT path, reason FROM failures WHERE dataset = ? ORDER BY path", (dataset,)
        ).fetchall()

    def members(self, dataset: str, split: str | None = None) -> list[Member]:
        q = "SELECT key, path, label, split FROM members WHERE dataset = ?"
        args: list = [dataset]
        if split is not None:
            q += " AND split = ?"
            args.append(split)
        return [Member(*row) for row in self._db.execute(q + " ORDER BY pos", args)]

    def load(
        self, dataset: str, split: str | None = None, *, as_stored: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """``(X, y, keys, paths)`` for a dataset, optionally one split, in the dataset's order.

        X is a read-only memory map when the rows lie contiguously in one shard (a dataset embedded
        in one run), else an array gathered from the memory-mapped shards. y is None when unlabeled.
        X is float32; ``as_stored`` keeps a float16 store's rows as they are stored (no float32 copy),
        for readers that convert block by block. The catalog is read as one snapshot; if a writer merged
        shards away meanwhile, it is read again.
        """
        X, y, keys, paths = self._retrying(lambda: self._load(dataset, split))
        return (X if as_stored else as_float32(X)), y, keys, paths

    def _retrying(self, read):
        """Run ``read``; once more if a shard it was told about was merged away by a writer meanwhile."""
        try:
            return read()
        except FileNotFoundError:
            self._mmaps.clear()
        self._missing_is_damage = True  # a fresh snapshot still naming a missing file: the shard is lost
        try:
            return read()
        finally:
            self._missing_is_damage = False

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state (WAL)."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        finally:
            self._db.execute("COMMIT")

    def _load(self, dataset: str, split: str | None):
        with self._snapshot() as db:
            info = self.dataset(dataset)
            if split is not None and split not in info.splits:
                have = ", ".join(info.splits) or "none"
                raise StoreError(f"dataset {dataset!r} has no {split!r} split (splits: {have}).")
            q = (
                "SELECT m.key, m.path, m.label, s.shard, s.row FROM members m JOIN samples s ON s.key = m.key "
                "WHERE m.dataset = ?" + (" AND m.split = ?" if split else "") + " ORDER BY m.pos"
            )
            rows = db.execute(q, (dataset, split) if split else (dataset,)).fetchall()
            expected = info.splits[split] if split is not None else sum(info.splits.values())
            # Open the shards inside the snapshot: a file opened before a merge unlinks it stays readable.
            for shard_id in {r[3] for r in rows}:
                self._shard(shard_id)
        if len(rows) < expected:
            raise StoreError(f"dataset {dataset!r} lacks {expected - len(rows)} of its {expected} vectors (lost with a "
                             "damaged shard); embed it again to restore them.")
        keys = np.array([r[0] for r in rows], dtype=str)
        paths = np.array([r[1] for r in rows], dtype=str)
        labels = [r[2] for r in rows]
        y = np.array(labels, dtype=str) if info.labeled else None
        X = self._gather([(r[3], r[4]) for r in rows])
        return X, y, keys, paths

    def keys_in_storage_order(self, dataset: str) -> list[str]:
        """A dataset's unique keys ordered by where their vectors lie (shard, row): read in that order,
        a dataset embedded in one run comes back as memory-map slices, not copies."""
        q = ("SELECT DISTINCT m.key, s.shard, s.row FROM members m JOIN samples s ON s.key = m.key "
             "WHERE m.dataset = ? ORDER BY s.shard, s.row")
        return [k for k, _, _ in self._db.execute(q, (dataset,))]

    def vectors(self, keys: Sequence[str]) -> np.ndarray:
        """Float32 vectors for arbitrary stored keys, in the order given (one catalog snapshot, as ``load``)."""
        return as_float32(self._retrying(lambda: self._vectors(keys)))

    def _vectors(self, keys: Sequence[str]) -> np.ndarray:
        where: dict[str, tuple[int, int]] = {}
        uniq = list(dict.fromkeys(keys))
        with self._snapshot() as db:
            for i in range(0, len(uniq), 500):
                part = uniq[i : i + 500]
                q = f"SELECT key, shard, row FROM samples WHERE key IN ({','.join('?' * len(part))})"
                where.update({k: (s, r) for k, s, r in db.execute(q, part)})
            for shard_id in {s for s, _ in where.values()}:
                self._shard(shard_id)
        missing = [k for k in uniq if k not in where]
        if missing:
            raise StoreError(f"no vector for key {missing[0]!r} in store {self.path.name}.")
        return self._gather([where[k] for k in keys])

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


def open_store(config: BackboneConfig, cache: str | os.PathLike | None = None) -> FeatureStore:
    """The store for a backbone configuration under ``cache``, created when it does not exist."""
    return FeatureStore(store_dir(config, cache), config=config)
