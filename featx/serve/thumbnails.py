"""What the page shows beside the API's answers: thumbnails (made once per sample, kept beside the store,
served only for loaded samples), the dataset's map (computed once, kept beside the store) and its audit."""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

from ..data.thumbnails import Thumbnails
from .errors import ServiceError
from .packed_map import pack_map
from ..data.sources import read_regular_file
from ..store.atomic import atomic_write
from ..store.paths import thumbnails_dir

STATIC = Path(__file__).parent / "static"
KEY = re.compile(r"[0-9a-f]{64}")


class ThumbnailCache:
    """``get(key)`` → JPEG bytes of a loaded sample: from memory, from ``<store>/thumbnails``, or made now.

    The key is the only input: it must be a full content key of the loaded dataset, and the image is
    read from the path the store recorded for it, so no request can name a file.
    """

    def __init__(self, resources, memory: int = 2048):
        self.resources = resources
        self.folder = None if resources.store is None else thumbnails_dir(resources.store)
        self.thumbnails = Thumbnails()
        self.memory: OrderedDict[str, bytes] = OrderedDict()
        self.limit = memory
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes:
        if not KEY.fullmatch(key) or key not in self.resources.members:
            raise ServiceError("no sample with this key in the loaded dataset (send a full 64-character key from "
                               "/search).", 404)
        with self.lock:
            if key in self.memory:
                self.memory.move_to_end(key)
                return self.memory[key]
        data = self._from_disk(key) or self._make(key)
        with self.lock:
            self.memory[key] = data
            while len(self.memory) > self.limit:
                self.memory.popitem(last=False)
        return data

    def _from_disk(self, key: str) -> bytes | None:
        if self.folder is None:
            return None
        try:
            return (self.folder / f"{key}.jpg").read_bytes()
        except OSError:
            return None

    def _make(self, key: str) -> bytes:
        path = self.resources.members[key][0]
        data = self.thumbnails.jpeg(path, key=key)
        if data is None:
            raise ServiceError(f"the image of this sample can no longer be read, or was replaced by another "
                               f"({path}).", 404)
        if self.folder is not None and not self.resources.store.read_only:
            try:
                self.folder.mkdir(exist_ok=True)
                with atomic_write(self.folder / f"{key}.jpg") as f:
                    f.write(data)
            except OSError:  # a full disk costs the cache, not the answer
                pass
        return data


class MapCache:
    """``get()`` → the loaded dataset's Layout: computed (or read from beside the store) once per process."""

    def __init__(self, resources, store_lock: threading.Lock):
        self.resources, self.store_lock = resources, store_lock
        self.layout = None
        self._packed: bytes | None = None  # packed() of the layout, made once: a million points cost seconds
        self.lock = threading.Lock()

    def get(self):
        from ..maps import dataset_map

        with self.lock:  # one computation, however many pages ask at once; searches go on meanwhile
            if self.layout is None:
                self.layout, _ = dataset_map(self.resources.store, self.resources.dataset, lock=self.store_lock)
            return self.layout

    def point_info(self, layout) -> list[tuple]:
        """(path, label, split) of each point of ``layout``, from the loaded members."""
        return [self.resources.members.get(str(k), ("?", None, None)) for k in layout.keys]

    def packed(self) -> bytes:
        """The layout as /map?format=binary sends it (serve.packed_map), packed once per process."""
        layout = self.get()
        with self.lock:
            if self._packed is None:
                info = self.point_info(layout)
                self._packed = pack_map(self.resources.dataset, layout.method, layout.points,
                                        [i[1] for i in info], [i[2] for i in info])
            return self._packed


def audit_findings(resources, top: int) -> dict:
    """The top findings of each kind from the dataset's `featx audit` report, when it is this store's."""
    rerun = f"run `featx audit {resources.dataset}` with the same --cache"
    try:
        report = json.loads(read_regular_file(resources.audit_report))
    except FileNotFoundError:
        raise ServiceError(f"no audit report for dataset {resources.dataset!r}: {rerun}.", 404) from None
    except (OSError, ValueError, TypeError):
        raise ServiceError(f"the audit report of dataset {resources.dataset!r} cannot be read: {rerun}.", 409) from None
    if not isinstance(report, dict):
        raise ServiceError(f"the audit report of dataset {resources.dataset!r} is not a report: {rerun}.", 409)
    if report.get("dataset") != resources.dataset:
        raise ServiceError(f"the audit report found belongs to another dataset, not {resources.dataset!r}: {rerun}.",
                           409)
    if not _same_path(report.get("store"), resources.store.path):
        raise ServiceError("the audit report was made from another store of this dataset (another backbone or "
                           "recipe): run `featx audit` again with this one.", 409)

    def findings(field: str) -> list[dict]:
        found = report.get(field)
        return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []

    summary = report.get("summary")
    leaks = [f for f in findings("leaks") if f.get("kind") == "near_leak"]
    return {"dataset": resources.dataset, "summary": summary if isinstance(summary, dict) else {},
            "label_issues": findings("label_issues")[:top], "near_leaks": leaks[:top],
            "outliers": findings("outliers")[:top]}


def _same_path(recorded, path) -> bool:
    """Whether a recorded store path names ``path`` however it was spelled (relative, absolute, via a link)."""
    if not isinstance(recorded, str):
        return False
    try:
        return os.path.samefile(recorded, path)
    except OSError:
        return os.path.realpath(recorded) == os.path.realpath(path)
