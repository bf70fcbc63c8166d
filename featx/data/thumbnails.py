"""Thumbnails of stored samples by their recorded path: image files, or items of the built-in datasets."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from . import BUILTINS


class Thumbnails:
    """Small RGB images of stored members, from the paths a store recorded (never from user input).

    Built-in datasets (``digits:0001``, ``fashion-mnist:train:00001``) are rendered from their pixels;
    tiny images are scaled up so a person can see them.
    """

    def __init__(self, data_dir: str | None = None, size: int = 96):
        self.data_dir, self.size = data_dir, size
        self._builtins: dict[str, tuple] = {}

    def _builtin(self, path: str):
        name = path.split(":", 1)[0]
        if name not in self._builtins:
            from .open import open_source

            source = open_source(name, data_dir=self.data_dir)
            self._builtins[name] = (source, {item.path: i for i, item in enumerate(source.items)})
        source, where = self._builtins[name]
        return source.read(where[path])

    def image(self, path: str, key: str | None = None) -> Image.Image | None:
        """The thumbnail, or None when the image cannot be read any more (moved, damaged) or, given the
        sample's content ``key``, when the file there now holds another image."""
        from .hashing import content_hash
        from .images import array_to_image, decode_image, to_rgb
        from .sources import read_regular_file

        try:
            data = (self._builtin(path) if path.split(":", 1)[0] in BUILTINS and not Path(path).exists()
                    else read_regular_file(path))
            if key is not None and content_hash(data) != key:
                return None
            img = array_to_image(data) if not isinstance(data, bytes) else to_rgb(decode_image(data,
                                                                                              draft_size=self.size))
        except Exception:  # a finding whose file is gone still gets its caption
            return None
        img = img.copy()
        img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        if max(img.width, img.height) < self.size // 2:  # 8x8 digits, 28x28 clothes: scale up, sharp
            scale = self.size // max(img.width, img.height)
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        return img

    def jpeg(self, path: str, quality: int = 85, key: str | None = None) -> bytes | None:
        """The thumbnail as JPEG bytes (None when unreadable, or no longer the image of ``key``)."""
        img = self.image(path, key)
        if img is None:
            return None
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return buf.getvalue()
