"""Hostile and odd input: extreme images, symlink loops, special files; each is refused or recorded, never hangs."""

from __future__ import annotations

import io
import json
import os
import time

import pytest
from PIL import Image

from featx.config import PreprocessConfig
from featx.data.reader import decode_input
from featx.errors import ImageError

from conftest import SMALL, png_with_size, run_cli, write_class_folder


def wide_png(width=200_000, height=10) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("blob", [wide_png(), wide_png(10, 200_000), png_with_size(80_000_000, 1)])
def test_extreme_aspect_ratios_are_refused_before_decoding(blob):
    started = time.perf_counter()
    with pytest.raises(ImageError, match="extreme aspect ratio"):
        decode_input(blob, PreprocessConfig(224))
    assert time.perf_counter() - started < 2.0  # it was 17 s and 4.7 GB for the 200,000×10 PNG


def test_a_wide_png_is_a_recorded_failure_when_embedding(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=2)
    (folder / "red" / "wide.png").write_bytes(wide_png())
    out = json.loads(run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--json").output)
    assert out["n_failed"] == 1 and "extreme aspect ratio" in out["failures"][0]["reason"]


def test_symlink_loops_are_walked_once(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    (folder / "red" / "loop").symlink_to("..")  # back up the tree
    (folder / "again").symlink_to(folder)  # an absolute link to the folder itself
    (folder / "blue-alias").symlink_to(folder / "blue")  # a second name for a real folder
    started = time.perf_counter()
    out = json.loads(run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--json").output)
    assert out["n_total"] == 6 and out["n_failed"] == 0
    assert time.perf_counter() - started < 60


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_special_files_are_recorded_not_read(tmp_path, cache, kind):
    folder = write_class_folder(tmp_path / "data", per_class=2)
    special = folder / "red" / "x.png"
    if kind == "device":
        special.symlink_to("/dev/zero")
    else:
        os.mkfifo(special)
    out = json.loads(run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--json").output)
    assert out["n_total"] == 5 and out["n_failed"] == 1
    assert "not a regular file" in out["failures"][0]["reason"]
    # The same file named in a CSV manifest.
    (tmp_path / "m.csv").write_text(f"path,label\n{special},red\n{folder / 'red' / '0.png'},red\n")
    out = json.loads(run_cli("embed", tmp_path / "m.csv", "--image-size", SMALL, "--workers", 0, "--json").output)
    assert out["n_failed"] == 1 and "not a regular file" in out["failures"][0]["reason"]


def test_oversized_files_are_refused_before_reading(tmp_path):
    from featx.data.sources import read_regular_file

    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * 2048)
    with pytest.raises(OSError, match="over the 1,024-byte limit"):
        read_regular_file(str(path), max_bytes=1024)
    assert read_regular_file(str(path), max_bytes=4096) == b"\0" * 2048
