"""Runtime files under ``<cache>/runtimes`` (or ``$FEATX_RUNTIMES``): converted models, the configurations
they make, auto's choices."""

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
from ..errors import DamagedModelError
from ..store import DEFAULT_CACHE
from ..store.atomic import atomic_write, file_sha256, fsync_dir, safe_name

RUNTIMES_DIR = "runtimes"
RUNTIMES_ENV = "FEATX_RUNTIMES"  # one folder for every cache: convert and measure once per machine
OPENVINO_MODEL = "openvino.xml"  # beside it, openvino.bin
CONFIGS = "configs.json"  # what a request (name, weights, size, recipe…) builds: skips building torch's model
CHOICES = "choices.json"  # auto's measured choice per machine, configuration and batch size
MANIFEST = "manifest.json"  # in a converted model's folder: its configuration, each file's size and SHA-256


def runtimes_root(cache: str | os.PathLike | None) -> Path:
    """Where ``cache``'s runtime files live: ``$FEATX_RUNTIMES`` when set, shared by every cache (a model is
    converted, and auto measures it, once per machine), else ``<cache>/runtimes``.

    Sharing is safe: a converted model's folder is named by its network's key, written whole under a
    temporary name and checked against its manifest on every load; the tables are only memos.
    """
    shared = os.environ.get(RUNTIMES_ENV)
    return Path(shared) if shared else Path(cache or DEFAULT_CACHE) / RUNTIMES_DIR


def model_dir(cache: str | os.PathLike | None, config: BackboneConfig) -> Path:
    """The folder of ``config``'s converted model (int8: its own, calibration included in the key)."""
    return runtimes_root(cache) / f"{safe_name(config.name)}-{config.key[:16]}"


def openvino_model(cache: str | os.PathLike | None, config: BackboneConfig) -> Path | None:
    """The converted model's .xml for ``config``, or None when it has not been converted yet.

    Raises DamagedModelError when the folder is there but its files are not the ones written for
    ``config`` (changed bytes, truncated, missing, or written for another configuration).
    """
    folder = model_dir(cache, config)
    if not folder.exists():
        return None
    problem = model_problem(folder, config)
    if problem:
        raise DamagedModelError(folder, problem)
    return folder / OPENVINO_MODEL


class RepairedModelWarning(UserWarning):
    """A damaged converted model was found and converted again: the vectors are right, the cache was not."""


def model_problem(folder: Path, config: BackboneConfig) -> str | None:
    """What is wrong with a converted model's folder for ``config``, or None when every file is as written.

    The manifest records the configuration and each file's size and SHA-256 (a model is tens of MB:
    hashing it costs a few tens of milliseconds once per process, against vectors silently wrong).
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files, key = manifest["files"], manifest["key"]
    except FileNotFoundError:
        return "it has no manifest: converted by an older featx, or not finished"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its manifest cannot be read: {e}"
    if key != config.key:
        return f"it was converted for configuration {str(key)[:12]}, not {config.key[:12]}"
    if not isinstance(files, dict) or OPENVINO_MODEL not in files:
        return "its manifest lists no model"
    for name, expected in files.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if not isinstance(expected, dict) or size != expected.get("size"):
            return f"{name} has {size} bytes, not {expected.get('size') if isinstance(expected, dict) else '?'}"
        if not path.is_file() or file_sha256(path) != expected.get("sha256"):
            return f"{name}'s checksum differs from the one written"
    return None


def save_openvino_model(cache: str | os.PathLike | None, config: BackboneConfig,
                        write: Callable[[Path], None]) -> Path:
    """Write a model with ``write(path_to_xml)`` into a temporary folder, then rename it into place whole.

    The folder gets a manifest (the configuration, each file's size and SHA-256) that
    :func:`openvino_model` checks on every load. A reader sees the folder complete or not at all; a
    damaged folder already there is moved aside first; when another process got there first, its copy
    stays. Where the cache cannot be written (a read-only store), the model lives in a temporary folder
    for this process only.
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
        _write_manifest(tmp, config)
        _move_aside(final, config)
        try:
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except OSError:
            if openvino_model(cache, config) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / OPENVINO_MODEL


def _write_manifest(folder: Path, config: BackboneConfig) -> None:
    files = {}
    for path in sorted(folder.iterdir()):
        with open(path, "rb+") as f:
            os.fsync(f.fileno())  # durable before the manifest vouches for them
        files[path.name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    with atomic_write(folder / MANIFEST) as f:
        f.write(json.dumps({"key": config.key, "config": config.to_dict(), "files": files}, indent=1).encode())


def _move_aside(final: Path, config: BackboneConfig) -> None:
    """Take a damaged model folder out of the way (a healthy one, another process's, stays)."""
    if not final.exists() or model_problem(final, config) is None:
        return
    aside = final.with_name(f".damaged-{uuid.uuid4().hex[:12]}-{final.name}")
    try:
        os.rename(final, aside)
    except OSError:
        return  # another process moved it first
    shutil.rmtree(aside, ignore_errors=True)


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
