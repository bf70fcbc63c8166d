"""Checking a store before a long job: the catalog's integrity and every shard's size, header and checksum."""

from __future__ import annotations

import os

from ..errors import StoreError
from .finder import store_folders
from .store import FeatureStore


def verify_cache(cache: str | os.PathLike | None = None, repair: bool = False) -> list[dict]:
    """``verify_store`` for every folder with a catalog under ``cache``; one that cannot even be opened is
    reported damaged (not skipped): nothing can repair it but embedding again."""
    reports = []
    for folder in store_folders(cache):
        try:
            store = FeatureStore(folder)
        except StoreError as e:
            reports.append({"store": str(folder), "backbone": None, "n_shards": 0,
                            "catalog_problems": [getattr(e, "problem", str(e))], "damaged_shards": [], "ok": False,
                            "repaired": False, "vectors_forgotten": 0, "unreadable": True})
            continue
        with store:
            reports.append(verify_store(store, repair))
    return reports


def verify_store(store: FeatureStore, repair: bool = False) -> dict:
    """What is wrong with ``store``, and with ``repair`` what was done about it.

    Checks SQLite's integrity of the catalog, and each shard against the catalog (present, header,
    size) and against the SHA-256 recorded when it was written. Repair forgets damaged shards: their
    vectors leave the catalog and the next embed of each dataset re-embeds exactly those images.
    """
    problems = store.catalog_problems()
    if problems:  # shards cannot be trusted to the catalog, nor forgotten through it
        return {"store": str(store.path), "backbone": store.config.name, "n_shards": None,
                "catalog_problems": problems, "damaged_shards": [], "ok": False, "repaired": False,
                "vectors_forgotten": 0, "unreadable": False}
    n_shards = len(store.shard_files())
    damaged = store.damaged_shards(checksums=True)
    forgotten = 0
    if repair and damaged:
        with store.writing():
            store.forget_shards([d["id"] for d in damaged])
        forgotten = sum(d["n"] for d in damaged)
    return {
        "store": str(store.path), "backbone": store.config.name, "n_shards": n_shards,
        "catalog_problems": problems, "damaged_shards": damaged, "ok": not problems and not damaged,
        "repaired": bool(repair and damaged), "vectors_forgotten": forgotten, "unreadable": False,
    }
