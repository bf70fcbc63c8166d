"""The contact sheet: thumbnails of the top findings, captioned, in one PNG a person can judge by eye."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from ..data import BUILTINS
from ..reporting import save_figure


class Thumbnails:
    """Small RGB images of stored members, from their paths: files, or items of the built-in datasets."""

    def __init__(self, data_dir: str | None = None, size: int = 96):
        self.data_dir, self.size = data_dir, size
        self._builtins: dict[str, tuple] = {}

    def _builtin(self, path: str):
        name = path.split(":", 1)[0]
        if name not in self._builtins:
            from ..data import open_source

            source = open_source(name, data_dir=self.data_dir)
            self._builtins[name] = (source, {item.path: i for i, item in enumerate(source.items)})
        source, where = self._builtins[name]
        return source.read(where[path])

    def image(self, path: str) -> Image.Image | None:
        """The thumbnail, or None when the image cannot be read any more (moved, damaged)."""
        from ..data.images import array_to_image, decode_image, to_rgb
        from ..data.sources import read_regular_file

        try:
            if path.split(":", 1)[0] in BUILTINS and not Path(path).exists():
                img = array_to_image(self._builtin(path))
            else:
                img = to_rgb(decode_image(read_regular_file(path), draft_size=self.size))
        except Exception:  # a finding whose file is gone still gets its caption
            return None
        img = img.copy()
        img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS if img.width > self.size else Image.Resampling.NEAREST)
        if img.width < self.size // 2:  # 8x8 digits: scale up so a person can see them
            scale = self.size // max(img.width, img.height)
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        return img


def contact_sheet(sections: Sequence[tuple[str, list[tuple[str, str]]]], path: Path, thumbnails: Thumbnails,
                  columns: int = 8) -> Path:
    """One PNG: for each (title, [(image path, caption)]) section, a row or more of captioned thumbnails."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [(t, cells) for t, cells in sections if cells]
    rows = sum(-(-len(cells) // columns) for _, cells in sections) or 1
    fig = plt.figure(figsize=(columns * 1.6, rows * 1.9 + 0.5 * len(sections)))
    grid = fig.add_gridspec(rows, columns, hspace=0.75)
    r = 0
    for title, cells in sections:
        for n, (image_path, caption) in enumerate(cells):
            ax = fig.add_subplot(grid[r + n // columns, n % columns])
            img = thumbnails.image(image_path)
            if img is not None:
                ax.imshow(img)
            else:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=6.5)
            if n == 0:
                ax.set_title(title, fontsize=9, loc="left", x=0, pad=10)
        r += -(-len(cells) // columns)
    if not sections:
        fig.text(0.5, 0.5, "no findings", ha="center", va="center")
    return save_figure(fig, path, dpi=100, bbox_inches="tight")
