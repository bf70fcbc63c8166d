"""The catalog's SQLite connection: SQLite's errors become StoreErrors that name the store and say what to do."""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from pathlib import Path

from ..errors import DamagedStoreError, StoreError

QUICK_CHECK_BELOW = 64 << 20  # catalogs up to this size are quick-checked when listed (~35 ms for 29 MB, warm)


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
