"""Dataset sources: image folders, CSV manifests and built-ins, as items with labels, splits and content hashes."""

from __future__ import annotations

import csv
import errno
import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SourceError
from .hashing import content_hash
from .images import IMAGE_EXTENSIONS

SPLIT_NAMES = ("train", "val", "test")

_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class Item:
    """One sample of a source: where it is, its label (None when unlabelled), its split (None: derive)."""

    path: str
    label: str | None = None
    split: str | None = None


def split_from_key(key: str, test_fraction: float = 0.2) -> str:
    """Deterministic train/test split from a content hash: the same on every run and machine.

    Identical images share a hash and so a split, which keeps duplicates from leaking across it.
    """
    return "test" if int(key[:8], 16) / 0x100000000 < test_fraction else "train"


class Source(ABC):
    """A dataset: ``items`` lists samples; ``read(i)`` returns encoded bytes or a pixel array.

    Sources are pickled into decoding worker processes, so they hold plain data only.
    """

    name: str
    description: str
    items: list[Item]
    crop = "center"  # the crop that suits it when the user names none: photos are framed loosely
    spec: str | None = None  # what `featx embed` takes to read it again (a folder, a CSV, a built-in's name)

    @abstractmethod
    def read(self, i: int) -> bytes | np.ndarray:
        """The raw content of item ``i``; raises OSError when it cannot be read."""

    def content_hash(self, i: int) -> str:
        return content_hash(self.read(i))

    @property
    def labelled(self) -> bool:
        return any(item.label is not None for item in self.items)


MAX_FILE_BYTES = 512 * 2**20  # larger "images" are refused before they are read into memory


class FileSource(Source):
    """Samples that are image files on disk."""

    def read(self, i: int) -> bytes:
        return read_regular_file(self.items[i].path)


def read_regular_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file; OSError for anything else.

    Opened without blocking and checked before reading, so a FIFO named ``x.png`` cannot hang a run
    and a link to ``/dev/zero`` cannot fill the memory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a device, FIFO or socket)")
        if info.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"file of {info.st_size:,} bytes is over the {max_bytes:,}-byte limit")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(max_bytes + 1)
    finally:
        os.close(fd)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, following links but visiting each real directory once.

    A link back up the tree (``loop -> ..``) would otherwise make the walk endless, and a link to a
    sibling would list its files twice.
    """
    found = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d)
                             and os.path.realpath(os.path.join(dirpath, d)) not in seen)
        for name in sorted(filenames):
            if not _is_hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found


class FolderSource(FileSource):
    """A folder of images. Class sub-folders give labels; files at the top level are unlabelled.

    When the top level holds only split folders (``train/``, ``val/``, ``test/``), each of those
    is read the same way and its name gives the split.
    """

    def __init__(self, root: str | os.PathLike, name: str | None = None):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise SourceError(f"{str(root)!r} is not a folder.")
        self.root = root.resolve()
        self.name = name or self.root.name
        self.description = f"folder {self.root}"
        self.spec = str(self.root)
        subdirs = [d for d in self.root.iterdir() if d.is_dir() and not _is_hidden(d.name)]
        split_dirs = subdirs and all(d.name.lower() in _SPLIT_ALIASES for d in subdirs)
        items: list[Item] = []
        for split_dir in sorted(subdirs) if split_dirs else [self.root]:
            split = _SPLIT_ALIASES[split_dir.name.lower()] if split_dirs else None
            for path in _image_files(split_dir):
                rel = path.relative_to(split_dir)
                label = rel.parts[0] if len(rel.parts) > 1 else None
                items.append(Item(str(path), label, split))
        if not items:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise SourceError(f"no images found in {str(self.root)!r} (looked for {exts}).")
        self.items = items


class CsvSource(FileSource):
    """A CSV manifest with a header: ``path`` (relative to the CSV), optional ``label`` and ``split``."""

    def __init__(self, csv_path: str | os.PathLike, name: str | None = None):
        csv_path = Path(csv_path).expanduser()
        if not csv_path.is_file():
            raise SourceError(f"manifest {str(csv_path)!r} does not exist.")
        self.name = name or csv_path.stem
        self.description = f"manifest {csv_path.resolve()}"
        self.spec = str(csv_path.resolve())
        base = csv_path.resolve().parent
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                fields = [c.strip().lower() for c in (reader.fieldnames or [])]
                if "path" not in fields:
                    raise SourceError(
                        f"manifest {str(csv_path)!r} has no 'path' column (columns: {', '.join(fields) or 'none'}). "
                        "Its first line must be a header such as: path,label,split"
                    )
                reader.fieldnames = fields
                rows = []
                for row in reader:
                    if None in row or None in row.values():  # DictReader's filler for a ragged row
                        n_fields = len(fields) + len(row.get(None) or ()) - list(row.values()).count(None)
                        raise SourceError(f"manifest {str(csv_path)!r}, line {reader.line_num}: {n_fields} fields, "
                                          f"but the header has {len(fields)} ({','.join(fields)}). Quote a value "
                                          "that holds a comma.")
                    rows.append((reader.line_num, row))
        except UnicodeDecodeError:
            raise SourceError(f"manifest {str(csv_path)!r} is not UTF-8 text.") from None
        except csv.Error as e:
            raise SourceError(f"manifest {str(csv_path)!r}, near line {reader.line_num + 1}: {e} (is it a CSV "
                              "file?).") from None
        items = []
        for n, row in rows:
            rel = (row.get("path") or "").strip()
            if not rel:
                raise SourceError(f"manifest {str(csv_path)!r}, line {n}: empty path.")
            label = (row.get("label") or "").strip() or None
            split = (row.get("split") or "").strip().lower() or None
            if split is not None and split not in _SPLIT_ALIASES:
                raise SourceError(
                    f"manifest {str(csv_path)!r}, line {n}: unknown split {split!r}; use train, val or test."
                )
            items.append(Item(str((base / rel).resolve()), label, _SPLIT_ALIASES.get(split) if split else None))
        if not items:
            raise SourceError(f"manifest {str(csv_path)!r} lists no images.")
        self.items = items


class FileListSource(FileSource):
    """Loose image files and folders named on a command line (unlabelled), e.g. to predict or search."""

    def __init__(self, paths: Sequence[str | os.PathLike], name: str = "files"):
        items = []
        for p in paths:
            path = Path(p).expanduser()
            if path.is_dir():
                items += [Item(str(f.resolve())) for f in _image_files(path)]
            elif path.exists():  # a device or FIFO is recorded as unreadable, not called missing
                items.append(Item(str(path.resolve())))
            else:
                raise SourceError(f"{str(p)!r} does not exist; pass image files or folders of images.")
        if not items:
            raise SourceError(f"no images found in {', '.join(map(str, paths))}.")
        self.name = name
        self.description = "files"
        self.items = items


class ArraySource(Source):
    """Samples held in memory as uint8 pixel arrays (the built-in datasets)."""

    crop = "full"  # digits and Fashion-MNIST fill the frame: a centre crop would cut the object's edges

    def __init__(self, name: str, description: str, images: np.ndarray, items: list[Item]):
        self.name = name
        self.description = description
        self.images = images
        self.items = items

    def read(self, i: int) -> np.ndarray:
        return self.images[i]


class SubsetSource(Source):
    """Some items of another source (a sample of it), read through it, with the same crop."""

    def __init__(self, source: Source, indices, name: str | None = None):
        self.source = source
        self.indices = [int(i) for i in indices]
        self.name = name or source.name
        self.description = f"{source.description} ({len(self.indices):,} of {len(source.items):,} items)"
        self.items = [source.items[i] for i in self.indices]
        self.crop = source.crop

    def read(self, i: int) -> bytes | np.ndarray:
        return self.source.read(self.indices[i])
