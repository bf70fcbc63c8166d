"""The built-in datasets: scikit-learn's bundled digits and Fashion-MNIST from its IDX files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import SourceError
from .sources import ArraySource, Item

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def load_digits_source(name: str | None = None) -> ArraySource:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), scaled from 0–16 to 0–255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    items = [Item(f"digits:{i:04d}", str(t)) for i, t in enumerate(digits.target)]
    return ArraySource(name or "digits", "scikit-learn digits", images, items)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise SourceError(f"{str(path)!r} is not an IDX file of unsigned bytes.")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise SourceError(
        f"Fashion-MNIST file {stem}(.gz) not found in {str(folder)!r}. Install it with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the four IDX files from "
        "github.com/zalandoresearch/fashion-mnist and pass their folder as data_dir=DIR.", params=("data_dir",)
    )


def load_fashion_mnist_source(data_dir: str | os.PathLike | None = None, name: str | None = None) -> ArraySource:
    """Fashion-MNIST's 70,000 28×28 grayscale images with their own train (60k) / test (10k) split."""
    folder = Path(data_dir or FASHION_MNIST_DIR)
    images, items = [], []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
        y = _read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
        images.append(x)
        items += [Item(f"fashion-mnist:{split}:{i:05d}", FASHION_MNIST_CLASSES[t], split) for i, t in enumerate(y)]
    return ArraySource(name or "fashion-mnist", f"Fashion-MNIST from {folder}", np.concatenate(images), items)


def load_builtin(spec: str, *, name: str | None = None, data_dir: str | os.PathLike | None = None) -> ArraySource:
    """``digits`` or ``fashion-mnist`` (read from ``data_dir``, default FASHION_MNIST_DIR)."""
    source = load_digits_source(name) if spec == "digits" else load_fashion_mnist_source(data_dir, name)
    source.spec = spec
    return source
