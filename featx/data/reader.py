"""The one reader every path uses (embed, Ray, fine-tune, uncached embedding, the service): item → input or reason."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..config import PreprocessConfig
from ..errors import ImageError
from .hashing import content_hash, read_failure
from .images import load_image, resize_and_crop
from .sources import Source


def decode_input(data: bytes | np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """Encoded bytes or a pixel array → the model's uint8 (3, H, W) input; ImageError with the reason otherwise."""
    return resize_and_crop(decode(data, preprocess), preprocess)


def decode(data: bytes | np.ndarray, preprocess: PreprocessConfig) -> Image.Image:
    """Encoded bytes or a pixel array → an upright RGB image; every failure is an ImageError with its reason."""
    try:
        return load_image(data, preprocess)
    except ImageError:
        raise
    except Exception as e:  # a decoder bug on one odd file must not end a run
        raise ImageError(f"cannot decode: {type(e).__name__}: {e}") from None


def read_bytes(source: Source, i: int) -> bytes | np.ndarray:
    """Item ``i``'s raw content; an unreadable file is an ImageError with the reason."""
    try:
        return source.read(i)
    except OSError as e:
        raise ImageError(read_failure(e)) from None


def read_image(source: Source, i: int, preprocess: PreprocessConfig) -> Image.Image:
    """Item ``i`` as an RGB image (fine-tuning augments from it); ImageError with the reason otherwise."""
    return decode(read_bytes(source, i), preprocess)


def read_input(source: Source, i: int, preprocess: PreprocessConfig) -> tuple[str | None, np.ndarray | None, str | None]:
    """Item ``i`` as ``(content key, model input, None)``, or ``(key or None, None, reason)`` when unusable.

    The key is hashed from the very bytes decoded, so a file changed since it was listed is noticed.
    """
    try:
        data = read_bytes(source, i)
    except ImageError as e:
        return None, None, str(e)
    key = content_hash(data)
    try:
        return key, decode_input(data, preprocess), None
    except ImageError as e:
        return key, None, str(e)
