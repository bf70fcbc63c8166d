"""Shared fixtures: a real backbone loaded once, and tiny image folders generated on the fly."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SMALL = 64  # input size for tests that exercise plumbing rather than accuracy


def run_cli(*args, ok=True):
    """Invoke ``featx`` in-process as a user would; unless ``ok=False``, insist it succeeded."""
    from click.testing import CliRunner

    from featx.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(*args, env: dict | None = None, timeout: float = 60):
    """A real `featx serve` process on a free loopback port, once /health answers: (process, base URL).

    Its output is read as it comes (``proc.output``, a list of lines): an unread pipe that fills up would
    block the server mid-request or mid-shutdown.
    """
    import subprocess
    import sys
    import threading
    import time

    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "featx.cli", "serve", *map(str, args), "--port", str(port)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    proc.output = []
    threading.Thread(target=lambda: proc.output.extend(proc.stdout), daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "".join(proc.output)
        assert time.monotonic() < deadline, "featx serve did not come up"
        time.sleep(0.2)


def stop_serve(proc, timeout: float = 60) -> int:
    """SIGTERM a server from start_serve and wait for it; a server that does not stop fails with its output."""
    import subprocess

    proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("featx serve did not stop on SIGTERM:\n" + "".join(proc.output)) from None


def noisy_image(rgb, seed: int, size=(40, 32)) -> Image.Image:
    """A solid colour with seeded noise: distinct bytes per seed, recognisable class per colour."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb, dtype=np.int16) + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def write_class_folder(root: Path, per_class: int = 4, classes=None, fmt: str = "png") -> Path:
    """root/<class>/<i>.<fmt> with one colour per class."""
    classes = classes or {"red": (220, 30, 30), "blue": (30, 30, 220)}
    for c, (name, rgb) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noisy_image(rgb, seed=1000 * c + i).save(root / name / f"{i}.{fmt}")
    return root


def png_with_size(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring a huge size: Pillow's bomb check fires before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def truncated_jpeg(seed: int = 7) -> bytes:
    buf = io.BytesIO()
    noisy_image((120, 200, 80), seed, size=(64, 64)).save(buf, "JPEG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def write_bad_files(folder: Path) -> dict[str, str]:
    """Each kind of unusable file, and the word its failure reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.jpg").write_bytes(truncated_jpeg())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "bomb.png").write_bytes(png_with_size(20000, 20000))
    return {"truncated.jpg": "truncated", "empty.jpg": "empty", "text.jpg": "not an image", "bomb.png": "bomb"}


@pytest.fixture(scope="session")
def lite0():
    from featx.backbones import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def lite0_small():
    from featx.backbones import create_backbone

    return create_backbone("efficientnet_lite0", image_size=SMALL)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("FEATX_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def digits_head_cache(tmp_path_factory) -> Path:
    """A cache holding digits embedded at 32 px and a logreg head on them (digits.npz): what a service serves."""
    from click.testing import CliRunner

    from featx.cli import main

    cache = tmp_path_factory.mktemp("digits-head-cache")
    for args in (["embed", "digits", "--image-size", "32", "--workers", "0", "--cache", str(cache)],
                 ["train", "digits", "--cache", str(cache), "--out", str(cache / "digits.npz")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    return cache


@pytest.fixture(autouse=True)
def shared_runtime_files(tmp_path_factory, monkeypatch, request):
    """Every test's caches share one runtimes folder (FEATX_RUNTIMES, inherited by the servers and embeds a
    test starts), so OpenVINO converts each configuration and auto measures it once per
    session, not once per test. Tests of that machinery opt out with ``@pytest.mark.own_runtime_files``."""
    if request.node.get_closest_marker("own_runtime_files"):
        monkeypatch.delenv("FEATX_RUNTIMES", raising=False)
        return
    monkeypatch.setenv("FEATX_RUNTIMES", str(tmp_path_factory.getbasetemp() / "runtimes"))
