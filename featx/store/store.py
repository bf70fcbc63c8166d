"""The feature store: vectors in memory-mappable .npy shards (shards.py), a SQLite catalog (catalog.py),
crash-safe writes (writer.py); this module opens a store and reads datasets and vectors out of it."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import __version__
from ..config import BackboneConfig
from ..errors import DamagedStoreError, StoreError
from .atomic import safe_name
from .catalog import CATALOG, SCHEMA, SPLIT_ORDER, Catalog, Dataset, Member, connect
from .shards import SHARDS, Locations, ShardReads, as_float32, to_store_dtype
from .writer import COMPACT_BELOW, StoreWriter

__all__ = ["CATALOG", "COMPACT_BELOW", "DEFAULT_CACHE", "SHARDS", "SPLIT_ORDER", "Dataset", "FeatureStore", "Member",
           "as_float32", "open_store", "store_dir", "to_store_dtype"]

DEFAULT_CACHE = Path("cache")


def store_dir(config: BackboneConfig, cache: str | os.PathLike | None = None) -> Path:
    """Where the store for ``config`` lives: ``<cache>/<backbone>-<key prefix>``."""
    return Path(cache or DEFAULT_CACHE) / f"{safe_name(config.name)}-{config.key[:12]}"


class FeatureStore(Catalog, ShardReads, StoreWriter):
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
        self._db.executescript(SCHEMA)
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

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def describe(self) -> dict:
        """What the store holds, as ``featx stores`` and the service's /info show it."""
        return {
            "store": str(self.path), "key": self.key, "backbone": self.config.name, "dim": self.dim,
            "image_size": self.config.preprocess.input_size, "precision": self.config.precision,
            "input_size": self.config.preprocess.input_size,  # image_size's key before 2026-12-07, for one release
            "store_dtype": self.config.store_dtype,
            "layers": list(self.config.layers), "crop": self.config.preprocess.crop,
            "columns": {name: list(span) for name, span in self.config.columns().items()},
            "n_vectors": self.n_vectors(), "bytes": self.size_bytes(),
            "datasets": [{"name": d.name, "n": d.n, "splits": d.splits, "labelled": d.labelled,
                          "labeled": d.labelled,  # the key's spelling before 2026-12-06, kept for one release
                          "n_failed": d.n_failed, "source": d.source} for d in self.datasets()],
        }

    def load(
        self, dataset: str, split: str | None = None, *, as_stored: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """``(X, y, keys, paths)`` for a dataset, optionally one split, in the dataset's order.

        X is a read-only memory map when the rows lie contiguously in one shard (a dataset embedded
        in one run), else an array gathered from the memory-mapped shards. y is None when unlabelled.
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
        y = np.array(labels, dtype=str) if info.labelled else None
        X = self._gather([(r[3], r[4]) for r in rows])
        return X, y, keys, paths

    def vectors(self, keys: Sequence[str]) -> np.ndarray:
        """Float32 vectors for arbitrary stored keys, in the order given (one catalog snapshot, as ``load``)."""
        return as_float32(self._retrying(lambda: self._vectors(keys)))

    def _vectors(self, keys: Sequence[str]) -> np.ndarray:
        where = self._locations(keys)
        return self._gather(list(zip(where.shards.tolist(), where.rows.tolist())))

    def locations(self, keys: Sequence[str]) -> Locations:
        """Where ``keys``' vectors lie, with their shards' memory maps, from one catalog snapshot (Locations): a
        reader that reads the same rows many times (a head's passes, re-ranking) resolves them once."""
        return self._retrying(lambda: self._locations(keys))

    def _locations(self, keys: Sequence[str]) -> Locations:
        where: dict[str, tuple[int, int]] = {}
        uniq = list(dict.fromkeys(keys))
        with self._snapshot() as db:
            for i in range(0, len(uniq), 500):
                part = uniq[i : i + 500]
                q = f"SELECT key, shard, row FROM samples WHERE key IN ({','.join('?' * len(part))})"
                where.update({k: (s, r) for k, s, r in db.execute(q, part)})
            maps = {s: self._shard(s) for s in {s for s, _ in where.values()}}
        missing = [k for k in uniq if k not in where]
        if missing:
            raise StoreError(f"no vector for key {missing[0]!r} in store {self.path.name}.")
        found = np.array([where[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        return Locations(found[:, 0].copy(), found[:, 1].copy(), maps, self.dim, self.dtype)

    def dataset_locations(self, dataset: str) -> tuple[list[str], Locations]:
        """A dataset's unique keys in storage order (``keys_in_storage_order``) and where they lie, one snapshot."""
        def read():
            with self._snapshot() as db:
                self.dataset(dataset)  # a clear error for an unknown dataset
                rows = self._storage_order(db, dataset)
                maps = {s: self._shard(s) for s in {r[1] for r in rows}}
            where = np.array([r[1:] for r in rows], dtype=np.int64).reshape(-1, 2)
            return [r[0] for r in rows], Locations(where[:, 0].copy(), where[:, 1].copy(), maps, self.dim, self.dtype)

        return self._retrying(read)


def open_store(config: BackboneConfig, cache: str | os.PathLike | None = None) -> FeatureStore:
    """The store for a backbone configuration under ``cache``, created when it does not exist."""
    return FeatureStore(store_dir(config, cache), config=config)
