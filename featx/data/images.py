"""Image decoding and eval preprocessing: encoded bytes or pixel arrays in, uint8 RGB crops out."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from ..config import PreprocessConfig
from ..errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".jfif"}
)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


MAX_ASPECT = 20  # longer side / shorter side; beyond it the short-side resize makes millions of pixels


def check_geometry(width: int, height: int) -> None:
    """Refuse sizes whose eval resize would cost far more than the image is worth.

    The short side is resized to the input size, so a 200,000×10 PNG of 2 KB would become a
    51,200,000×256 image (17 s, 4.7 GB); past MAX_ASPECT:1 the image is refused instead.
    """
    if min(width, height) < 1:
        raise ImageError(f"empty image ({width}×{height} pixels)")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"extreme aspect ratio: {width}×{height} pixels is more than {MAX_ASPECT}:1; "
                         "crop it to the region of interest first")


def image_decode_bytes(data: bytes) -> tuple[int, int]:
    """(pixels, bytes decoding needs) from the header alone: the decoded image in its own mode (a 16-bit
    PNG takes 2 bytes a sample) plus its RGB copy; (0, 0) when it is not a readable image header."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            pixels = int(img.size[0]) * int(img.size[1])
            bands = len(img.getbands())
            depth = 2 if img.mode.startswith("I;16") else 4 if img.mode in ("I", "F") else 1
    except Exception:  # the decoder proper reports what is wrong with it
        return 0, 0
    return pixels, pixels * (bands * depth + 3)


def decode_image(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Decode encoded image bytes into an upright RGB image.

    Raises ImageError with the reason for anything that is not a whole, sane image: empty or
    truncated files, non-images, images over Pillow's decompression-bomb pixel limit, and extreme
    aspect ratios (checked on the header, before any pixel is decoded). ``draft_size`` lets JPEG
    decode at a reduced scale that still covers that short side.
    """
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; treat both as a bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_geometry(*img.size)
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            img = ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"cannot decode: {e}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: 16-bit scaled, alpha composited on white, CMYK/palette mapped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit data scales down by 257 (65535 → 255); 'I'/'F' holding 8-bit values stay as they are.
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def array_to_image(arr: np.ndarray) -> Image.Image:
    """A uint8 pixel array (H, W) or (H, W, 3) as an RGB image."""
    check_geometry(arr.shape[1], arr.shape[0])
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    return Image.fromarray(arr, "RGB")


def resize_short_side(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """The short side resized to ``cfg.resize_size``, aspect ratio kept (timm's eval resize); with
    ``crop="full"``, the whole image resized to the input size's square."""
    w, h = img.size
    short = cfg.resize_size
    if cfg.crop == "full":
        size = (short, short)
    else:
        size = (short, max(1, int(short * h / w))) if w <= h else (max(1, int(short * w / h)), short)
    if size == (w, h):
        return img
    return img.resize(size, _RESAMPLE.get(cfg.interpolation, Image.Resampling.BICUBIC))


def resize_and_crop(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """timm's eval transform on a PIL image: short side to ``resize_size``, centre crop (nothing left to
    crop with ``crop="full"``); uint8 (3, H, W)."""
    img = resize_short_side(img, cfg)
    w, h = img.size
    side = cfg.input_size
    left = int(round((w - side) / 2.0))
    top = int(round((h - side) / 2.0))
    img = img.crop((left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def load_image(data: bytes | np.ndarray, cfg: PreprocessConfig) -> Image.Image:
    """Bytes of an image file, or a pixel array, → an RGB image (JPEGs decoded no larger than needed)."""
    if isinstance(data, np.ndarray):
        return array_to_image(data)
    return decode_image(data, draft_size=cfg.resize_size)


def load_input(data: bytes | np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Bytes of an image file, or a pixel array, → the model's uint8 (3, H, W) input."""
    return resize_and_crop(load_image(data, cfg), cfg)


def random_resized_crop(
    img: Image.Image, cfg: PreprocessConfig, scale: tuple[float, float] = (0.7, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Light training augmentation: a random crop of ``scale`` of the eval view's area, resized; uint8 (3, H, W).

    The crop is taken from the same short-side resize the eval transform uses, so a training
    image and its eval crop look alike in scale. There is no mirroring: it changes what digits
    and text mean. Random state is torch's, which DataLoader seeds per worker.
    """
    from torchvision.transforms import RandomResizedCrop

    img = resize_short_side(img, cfg)
    top, left, ch, cw = RandomResizedCrop.get_params(img, list(scale), list(ratio))
    side = cfg.input_size
    out = img.resize((side, side), _RESAMPLE.get(cfg.interpolation, Image.Resampling.BICUBIC),
                     box=(left, top, left + cw, top + ch))
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy()
