"""Thumbnails the page shows: made once per sample, kept beside the store, served only for loaded samples."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path

from ..data.thumbnails import Thumbnails
from ..errors import ServiceError
from ..store.atomic import atomic_write

STATIC = Path(__file__).parent / "static"
KEY = re.compile(r"[0-9a-f]{64}")


class ThumbnailCache:
    """``get(key)`` → JPEG bytes of a loaded sample: from memory, from ``<store>/thumbnails``, or made now.

    The key is the only input: it must be a full content key of the loaded dataset, and the image is
    read from the path the store recorded for it, so no request can name a file.
    """

    def __init__(self, resources, memory: int = 2048):
        self.resources = resources
        self.folder = None if resources.store is None else Path(resources.store.path) / "thumbnails"
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
        data = self.thumbnails.jpeg(path)
        if data is None:
            raise ServiceError(f"the image of this sample can no longer be read ({path}).", 404)
        if self.folder is not None and not self.resources.store.read_only:
            try:
                self.folder.mkdir(exist_ok=True)
                with atomic_write(self.folder / f"{key}.jpg") as f:
                    f.write(data)
            except OSError:  # a full disk costs the cache, not the answer
                pass
        return data
