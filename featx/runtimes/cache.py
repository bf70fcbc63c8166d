"""Runtime files under ``<cache>/runtimes``: converted models, the configurations they make, auto's choices."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

from ..config import BackboneConfig
from ..store import DEFAULT_CACHE
from ..store.atomic import atomic_write, fsync_dir, safe_name

RUNTIMES_DIR = "runtimes"
OPENVINO_MODEL = "openvino.xml"  # beside it, openvino.bin
CONFIGS = "configs.json"  # what a request (name, weights, size, recipe…) builds: skips building torch's model
CHOICES = "choices.json"  # auto's measured choice per machine, configuration and batch size


def runtimes_root(cache: str | os.PathLike | None) -> Path:
    return Path(cache or DEFAULT_CACHE) / RUNTIMES_DIR


def model_dir(cache: str | os.PathLike | None, config: BackboneConfig) -> Path:
    """The folder of ``config``'s converted model (int8: its own, calibration included in the key)."""
    return runtimes_root(cache) / f"{safe_name(config.name)}-{config.key[:16]}"


def openvino_model(cache: str | os.PathLike | None, config: BackboneConfig) -> Path | None:
    """The converted model's .xml for ``config``, or None when it has not been converted yet."""
    path = model_dir(cache, config) / OPENVINO_MODEL
    return path if path.is_file() and path.with_suffix(".bin").is_file() else None


def save_openvino_model(cache: str | os.PathLike | None, config: BackboneConfig,
                        write: Callable[[Path], None]) -> Path:
    """Write a model with ``write(path_to_xml)`` into a temporary folder, then rename it into place whole.

    A reader sees the folder complete or not at all; when another process got there first, its copy stays.
    Where the cache cannot be written (a read-only store), the model lives in a temporary folder for
    this process only.
    """
    final = model_dir(cache, config)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{final.name}")
        tmp.mkdir()
    except OSError:
        scratch = Path(tempfile.mkdtemp(prefix="featx-runtime-"))
        atexit.register(shutil.rmtree, scratch, True)
        write(scratch / OPENVINO_MODEL)
        return scratch / OPENVINO_MODEL
    try:
        write(tmp / OPENVINO_MODEL)
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        try:
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except OSError:
            if openvino_model(cache, config) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / OPENVINO_MODEL


def read_table(cache: str | os.PathLike | None, name: str) -> dict:
    """A small JSON table under the runtimes folder; empty when missing or unreadable (it is only a memo)."""
    try:
        table = json.loads((runtimes_root(cache) / name).read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def remember(cache: str | os.PathLike | None, name: str, key: str, value) -> None:
    """Set one entry of a table, written atomically (two writers: the last one's table wins).

    A cache that cannot be written (read-only) just does not remember: the table is only a memo.
    """
    root = runtimes_root(cache)
    table = read_table(cache, name)
    table[key] = value
    try:
        root.mkdir(parents=True, exist_ok=True)
        with atomic_write(root / name) as f:
            f.write(json.dumps(table, indent=1, sort_keys=True).encode())
    except OSError:
        pass
