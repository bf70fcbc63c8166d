"""Decoding: every odd but valid image becomes correct RGB; every bad one fails with its reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featx.config import PreprocessConfig
from featx.errors import ImageError
from featx.data.images import decode_image, load_input, resize_and_crop

from conftest import png_with_size, truncated_jpeg


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_grayscale_palette_and_cmyk_become_rgb():
    gray = Image.new("L", (10, 8), 128)
    assert decode_image(encode(gray, "PNG")).getpixel((0, 0)) == (128, 128, 128)
    pal = Image.new("RGB", (10, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert decode_image(encode(pal, "PNG")).getpixel((0, 0)) == (10, 200, 30)
    cmyk = Image.new("CMYK", (10, 8), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = decode_image(encode(cmyk, "JPEG", quality=95)).getpixel((5, 4))
    assert r > 200 and g < 60 and b < 60


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (6, 6), (255, 0, 0, 0))
    assert decode_image(encode(rgba, "PNG")).getpixel((2, 2)) == (255, 255, 255)
    half = Image.new("LA", (6, 6), (0, 128))
    assert decode_image(encode(half, "PNG")).getpixel((2, 2)) == (127, 127, 127)


def test_sixteen_bit_images_are_scaled_not_clipped():
    arr = np.full((8, 8), 32896, dtype=np.uint16)  # 32896 / 257 = 128
    img = Image.fromarray(arr)
    assert decode_image(encode(img, "PNG")).getpixel((3, 3)) == (128, 128, 128)


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = decode_image(encode(img, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)
    r, _, b = out.getpixel((10, 5))  # after rotation the red half is on top
    assert r > 200 and b < 60


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"plain text, not pixels\n", "not an image"),
        (truncated_jpeg(), "truncated"),
        (png_with_size(20000, 20000), "decompression bomb"),
    ],
)
def test_bad_bytes_raise_image_error_with_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(data)


def test_resize_and_crop_matches_timm_eval_transform():
    from timm.data import create_transform

    cfg = PreprocessConfig(input_size=32, crop_pct=0.875)
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8))
    ours = resize_and_crop(img, cfg)
    t = create_transform(input_size=(3, 32, 32), crop_pct=0.875, interpolation="bicubic", mean=(0, 0, 0),
                         std=(1, 1, 1))
    theirs = (t(img).numpy() * 255).round().astype(np.uint8)
    assert ours.shape == (3, 32, 32)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_arrays_are_accepted_as_grayscale_or_rgb():
    cfg = PreprocessConfig(input_size=16)
    assert load_input(np.zeros((8, 8), np.uint8), cfg).shape == (3, 16, 16)
    assert load_input(np.zeros((20, 30, 3), np.uint8), cfg).shape == (3, 16, 16)
