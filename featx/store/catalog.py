"""The catalog: its SQLite schema, connection (SQLite's errors become StoreErrors that name the store and say
what to do) and the queries a store answers from it."""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import DamagedStoreError, StoreError

CATALOG = "catalog.sqlite"
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
QUICK_CHECK_BELOW = 64 << 20  # catalogs up to this size are quick-checked when listed (~35 ms for 29 MB, warm)


SCHEMA = """
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


@dataclass
class Dataset:
    """A dataset's entry in a store's catalog."""

    name: str
    source: str
    n: int
    labelled: bool
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


def catalog_error(e: sqlite3.Error, store: Path) -> Exception:
    """The StoreError a user should see for SQLite's ``e`` on ``store``'s catalog (``e`` itself when busy)."""
    message = str(e)
    code = getattr(e, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "disk is full" in message:
        return StoreError(f"the disk holding store {str(store)!r} is full ({message}): free some space and run the "
                          "command again; nothing already stored was lost.", params=("cache",))
    if code in (sqlite3.SQLITE_READONLY,) or "readonly" in message:
        return StoreError(f"store {str(store)!r} cannot be written here ({message}); pass cache=DIR on a writable "
                          "disk.", params=("cache",))
    if isinstance(e, sqlite3.OperationalError) and ("locked" in message or "busy" in message):
        return e
    if code in (sqlite3.SQLITE_IOERR,) or "disk I/O error" in message:
        return StoreError(f"reading or writing store {str(store)!r} failed ({message}): check the disk, then run "
                          "`featx verify`.", params=("cache",))
    if not isinstance(e, sqlite3.OperationalError) or "malformed" in message:
        return DamagedStoreError(store, message)
    return StoreError(f"store {str(store)!r}: {message}")


def _translated(method):
    """``method`` of a catalog cursor, raising catalog_error instead of SQLite's own errors."""
    @functools.wraps(method)
    def call(self, *args):
        try:
            return method(self, *args)
        except sqlite3.Error as e:
            raise catalog_error(e, self.connection.store) from None

    return call


class _Cursor(sqlite3.Cursor):
    """A catalog's cursor: queries and rows raise featx's errors (rows are read lazily, so both count)."""

    execute = _translated(sqlite3.Cursor.execute)
    executemany = _translated(sqlite3.Cursor.executemany)
    fetchone = _translated(sqlite3.Cursor.fetchone)
    fetchall = _translated(sqlite3.Cursor.fetchall)
    __next__ = _translated(sqlite3.Cursor.__next__)


class CatalogConnection(sqlite3.Connection):
    """``sqlite3.connect(..., factory=CatalogConnection)``; set ``store`` to the store's folder after connecting.

    Every query, its rows and script raise featx's errors: a damaged page says which store is damaged
    and what to do, a full disk says so, and one damaged store never surfaces as a traceback in a
    command about another.
    """

    store = Path(".")

    def cursor(self, factory=None):
        return super().cursor(factory or _Cursor)

    def execute(self, *args):
        return self.cursor().execute(*args)

    def executemany(self, *args):
        return self.cursor().executemany(*args)

    def executescript(self, script):
        try:
            return super().executescript(script)
        except sqlite3.Error as e:
            raise catalog_error(e, self.store) from None


def connect(uri_or_path, store: Path, **kwargs) -> CatalogConnection:
    """Open a catalog with errors translated (``kwargs`` are sqlite3.connect's)."""
    try:
        db = sqlite3.connect(uri_or_path, factory=CatalogConnection, **kwargs)
    except sqlite3.Error as e:
        raise catalog_error(e, store) from None
    db.store = store
    return db


def quick_check(db: CatalogConnection, catalog: Path, force: bool = False) -> list[str]:
    """SQLite's quick integrity check of a catalog (empty when healthy); skipped for a large catalog
    unless ``force`` (its pages are still checked as they are read, and by `featx verify`)."""
    if not force:
        try:
            if os.path.getsize(catalog) > QUICK_CHECK_BELOW:
                return []
        except OSError as e:
            return [os.strerror(e.errno or errno.EIO)]
    try:
        return [r[0] for r in db.execute("PRAGMA quick_check") if r[0] != "ok"]
    except DamagedStoreError as e:
        return [e.problem]


class Catalog:
    """The queries a FeatureStore answers from its catalog (``self._db``, ``self.path``): what is stored,
    which datasets, their members and failures; transactions and read snapshots."""

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

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state (WAL)."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        finally:
            self._db.execute("COMMIT")

    def n_vectors(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def catalog_problems(self, force: bool = True) -> list[str]:
        """What SQLite's quick integrity check finds wrong with the catalog (empty when healthy); without
        ``force`` a large catalog is not checked (see catalog.quick_check)."""
        return quick_check(self._db, self.path / CATALOG, force)

    def shard_files(self) -> list[str]:
        """The shard files the catalog lists, in id order."""
        return [f for (f,) in self._db.execute("SELECT file FROM shards ORDER BY id")]

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

    def datasets(self, name: str | None = None) -> list[Dataset]:
        """The datasets recorded in this store (or just ``name``), with split sizes and failure counts."""
        out = []
        q = "SELECT name, source, n, labeled, updated FROM datasets"
        rows = self._db.execute(q + " WHERE name = ?", (name,)) if name else self._db.execute(q + " ORDER BY name")
        for name, source, n, labelled, updated in rows.fetchall():
            splits = dict(
                self._db.execute(
                    "SELECT split, COUNT(*) FROM members WHERE dataset = ? GROUP BY split", (name,)
                ).fetchall()
            )
            splits = dict(sorted(splits.items(), key=lambda kv: SPLIT_ORDER.get(kv[0], 9)))
            n_failed = self._db.execute("SELECT COUNT(*) FROM failures WHERE dataset = ?", (name,)).fetchone()[0]
            out.append(Dataset(name, source, n, bool(labelled), splits, n_failed, updated))
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

    def keys_in_storage_order(self, dataset: str) -> list[str]:
        """A dataset's unique keys ordered by where their vectors lie (shard, row): read in that order,
        a dataset embedded in one run comes back as memory-map slices, not copies."""
        return [k for k, _, _ in self._storage_order(self._db, dataset)]

    @staticmethod
    def _storage_order(db, dataset: str) -> list[tuple[str, int, int]]:
        """(key, shard, row) of a dataset's unique keys in storage order; fetched at once (a million rows one by
        one through the cursor took 3.6 s, most of it per-row calls)."""
        q = ("SELECT DISTINCT m.key, s.shard, s.row FROM members m JOIN samples s ON s.key = m.key "
             "WHERE m.dataset = ? ORDER BY s.shard, s.row")
        return db.execute(q, (dataset,)).fetchall()
