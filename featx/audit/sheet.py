"""The contact sheet: thumbnails of the top findings, captioned, in one PNG a person can judge by eye."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..data.thumbnails import Thumbnails
from ..reporting import save_figure


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
