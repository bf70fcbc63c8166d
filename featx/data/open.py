"""Opening a source by what the user typed: a folder, a CSV manifest, or a built-in dataset's name."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from . import BUILTINS
from .builtins import load_builtin
from .sources import CsvSource, FolderSource, Source


def open_source(spec: str, *, name: str | None = None, data_dir: str | None = None) -> Source:
    """The source named by ``spec``: a folder, a ``.csv`` manifest, ``digits`` or ``fashion-mnist``."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, name)
    if path.suffix.lower() == ".csv":
        return CsvSource(path, name)
    if spec in BUILTINS:
        return load_builtin(spec, name=name, data_dir=data_dir)
    if path.exists():
        raise SourceError(f"{spec!r} is a file but not a .csv manifest; pass a folder of images or a CSV.")
    raise SourceError(
        f"source {spec!r} not found: pass a folder of images, a CSV manifest (path,label[,split]), "
        f"or a built-in dataset ({', '.join(BUILTINS)})."
    )
