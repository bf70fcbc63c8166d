"""`featx embed` end to end: incremental, content-addressed, bad files skipped, crash-safe, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx.data.open import open_source
from featx.data.sources import FileListSource
from featx.embed import Embedder, embed_source
from featx.errors import FeatxError
from featx.runtimes import runtime_for
from featx.store import FeatureStore, open_store

from conftest import SMALL, noisy_image, run_cli, write_bad_files, write_class_folder

JSON_KEYS = {"dataset", "store", "backbone", "dim", "n_total", "n_embedded", "n_reused", "n_failed", "seconds",
             "images_per_second"}


def embed_json(*args) -> dict:
    out = run_cli("embed", *args, "--image-size", SMALL, "--json", "--workers", 0).stdout
    return json.loads(out)


def test_embed_folder_then_rerun_reuses_everything(tmp_path, cache):
    folder = write_class_folder(tmp_path / "colours", per_class=5)
    first = embed_json(folder)
    assert JSON_KEYS <= set(first)
    assert (first["dataset"], first["n_total"], first["n_embedded"], first["n_reused"], first["n_failed"]) == (
        "colours", 10, 10, 0, 0)
    again = embed_json(folder)
    assert (again["n_embedded"], again["n_reused"]) == (0, 10)
    assert again["store"] == first["store"]

    store = FeatureStore(first["store"])
    X, y, keys, paths = store.load("colours")
    assert X.shape == (10, 3328) and sorted(set(y)) == ["blue", "red"]
    # the stored vectors are the model's vectors for those files, from the runtime the command chose
    assert first["runtime"]["runtime"] in ("torch", "openvino") and again["runtime"]["how"] == "remembered"
    direct = Embedder(runtime_for(store.config, cache=cache)).embed_inputs([Path(paths[0]).read_bytes()])
    np.testing.assert_allclose(X[0], direct[0], rtol=1e-4, atol=1e-4)


def test_only_added_files_are_embedded_and_copies_are_shared(tmp_path, cache):
    folder = write_class_folder(tmp_path / "a", per_class=3)
    embed_json(folder)
    noisy_image((0, 255, 0), seed=99).save(folder / "red" / "new.png")
    added = embed_json(folder)
    assert (added["n_total"], added["n_embedded"], added["n_reused"]) == (7, 1, 6)

    # The same pictures under other names, in another dataset: nothing new to compute.
    shutil.copytree(folder, tmp_path / "b")
    (tmp_path / "b" / "red" / "0.png").rename(tmp_path / "b" / "red" / "renamed.png")
    other = embed_json(tmp_path / "b")
    assert (other["dataset"], other["n_embedded"], other["n_reused"]) == ("b", 0, 7)
    assert FeatureStore(other["store"]).n_vectors() == 7


def test_bad_files_are_skipped_recorded_and_listed(tmp_path, cache):
    folder = write_class_folder(tmp_path / "mixed", per_class=2)
    reasons = write_bad_files(folder / "red")
    result = run_cli("embed", folder, "--image-size", SMALL, "--workers", 1)
    assert "4 embedded" in result.stdout and "4 failed" in result.stdout
    for name, word in reasons.items():
        assert any(name in line and word in line for line in result.stderr.splitlines()), (name, result.stderr)
    data = embed_json(folder)
    assert (data["n_failed"], data["n_reused"], data["n_embedded"]) == (4, 4, 0)
    assert sorted(Path(f["path"]).name for f in data["failures"]) == sorted(reasons)
    store = FeatureStore(data["store"])
    assert store.dataset("mixed").n_failed == 4 and len(store.failures("mixed")) == 4


def test_odd_image_modes_embed(tmp_path, cache):
    folder = tmp_path / "modes"
    folder.mkdir()
    base = noisy_image((200, 100, 50), seed=1, size=(48, 40))
    base.convert("L").save(folder / "gray.png")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("P").save(folder / "palette.gif")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257)).save(folder / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    base.save(folder / "rotated.jpg", exif=exif)
    data = embed_json(folder)
    assert (data["n_total"], data["n_embedded"], data["n_failed"]) == (6, 6, 0)


def test_csv_manifest_splits_are_kept(tmp_path, cache):
    write_class_folder(tmp_path / "imgs", per_class=2)
    (tmp_path / "m.csv").write_text(
        "path,label,split\nimgs/red/0.png,r,train\nimgs/red/1.png,r,test\nimgs/blue/0.png,b,train\n"
        "imgs/blue/missing.png,b,train\n")
    data = embed_json(tmp_path / "m.csv", "--name", "manifest")
    assert (data["dataset"], data["n_embedded"], data["n_failed"]) == ("manifest", 3, 1)
    assert "No such file" in data["failures"][0]["reason"]
    assert FeatureStore(data["store"]).dataset("manifest").splits == {"train": 2, "test": 1}


def test_digits_builtin_embeds_with_workers(cache):
    from featx.backbones import create_backbone

    backbone = create_backbone("efficientnet_lite0", image_size=32)
    source = open_source("digits")
    source.items = source.items[:150]
    stages = []
    with open_store(backbone.config, cache) as store:
        result = embed_source(source, backbone, store, batch_size=32, workers=2,
                              progress=lambda stage, n, total: stages.append((stage, n, total)))
        assert (result.n_embedded, result.n_failed) == (150, 0)
        assert sum(n for s, n, _ in stages if s == "embed") == 150 and {s for s, *_ in stages} == {"hash", "embed"}
        X, y, *_ = store.load("digits", "train")
        assert 100 < len(X) < 140 and set(y) <= set("0123456789")


def test_stores_lists_datasets(tmp_path, cache):
    embed_json(write_class_folder(tmp_path / "pets", per_class=2))
    listing = json.loads(run_cli("stores", "--json").stdout)
    assert len(listing) == 1 and listing[0]["n_vectors"] == 4 and listing[0]["dim"] == 3328
    assert listing[0]["datasets"][0]["name"] == "pets" and listing[0]["datasets"][0]["n"] == 4
    # labelled, under the key's old spelling too for one release
    assert listing[0]["datasets"][0]["labelled"] is True and listing[0]["datasets"][0]["labeled"] is True
    assert "pets" in run_cli("stores").stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["embed", "/no/such/folder"], "source '/no/such/folder' not found"),
        (["embed", "digits", "--backbone", "nope"], "unknown backbone 'nope'"),
        (["embed", "{empty}"], "no images found"),
        (["embed", "{csv}"], "no 'path' column"),
        (["embed", "digits", "--image-size", "5"], "--image-size must be between"),
        (["embed", "digits", "--precision", "fp8"], "Invalid value for '--precision'"),
        (["embed", "digits", "--workers", "-1"], "--workers must be 0"),
        (["embed", "digits", "--weights", "/no/such.pth"], "weights file '/no/such.pth' does not exist"),
    ],
)
def test_user_mistakes_get_one_line_errors(tmp_path, cache, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("file,label\nx.png,1\n")
    args = [a.format(empty=tmp_path / "empty", csv=tmp_path / "bad.csv") for a in args]
    result = run_cli(*args, ok=False)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert result.output.startswith(("Error:", "Usage:"))


def _count_vectors(store_path: Path) -> int:
    db = store_path / "catalog.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


N_KILLED = 400


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_loses_nothing_committed_and_resumes(tmp_path, sig):
    folder = tmp_path / "many"
    folder.mkdir()
    # Enough images that the run cannot finish between the poll that sees 8 vectors and the signal
    # (that poll can wait up to a second for the writer's catalog lock).
    for i in range(N_KILLED):
        noisy_image((i % 256, 255 - i % 256, 128), seed=i, size=(300, 240)).save(folder / f"{i:03d}.jpg")
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "featx.cli", "embed", str(folder), "--cache", str(cache), "--batch-size", "4",
           "--workers", "1", "--json"]
    # A shell's background job starts with SIGINT ignored, and a child inherits that: restore the
    # default so the child's Python turns SIGINT into KeyboardInterrupt as it does in a terminal.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    store_path = None
    while time.time() < deadline and proc.poll() is None:
        found = list(cache.glob("*/catalog.sqlite")) if cache.exists() else []
        if found and _count_vectors(found[0].parent) >= 8:
            store_path = found[0].parent
            break
        time.sleep(0.05)
    assert store_path is not None and proc.poll() is None, "the run finished before it could be interrupted"
    workers = _children(proc.pid)
    assert workers, "the run had no decoding worker to leave behind"
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    deadline = time.time() + 10  # the workers die with their parent, even one killed with -9
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")], "a decoding worker outlived its parent"

    done_before = _count_vectors(store_path)
    assert 8 <= done_before < N_KILLED
    store = FeatureStore(store_path)
    assert store.n_vectors() == done_before  # readable, and every committed vector is there

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    data = json.loads(rerun.stdout)
    assert (data["n_total"], data["n_failed"]) == (N_KILLED, 0)
    assert data["n_reused"] >= done_before and data["n_reused"] + data["n_embedded"] == N_KILLED
    assert FeatureStore(store_path).n_vectors() == N_KILLED
    files = {p.name for p in (store_path / "shards").iterdir()}
    assert files == {f for (f,) in sqlite3.connect(store_path / "catalog.sqlite").execute("SELECT file FROM shards")}


def test_cpu_embedding_keeps_freed_memory_in_the_heap(lite0_small):
    from featx.hardware import keep_freed_memory

    Embedder(lite0_small)  # applies the allocator setting on CPU
    assert keep_freed_memory() is sys.platform.startswith("linux")


class _DiesInAWorker(FileListSource):
    """Reading item 2 kills the process that reads it, unless it is the test's own process."""

    def __init__(self, paths, parent: int):
        super().__init__(paths)
        self.parent = parent

    def read(self, i):
        if i == 2 and os.getpid() != self.parent:
            os._exit(9)  # as the kernel's OOM killer would end it
        return super().read(i)


def test_a_decoding_worker_that_dies_ends_the_run_with_an_error_not_a_hang(tmp_path, lite0_small):
    from featx.embed import DecoderPool

    folder = write_class_folder(tmp_path / "a", per_class=3)
    source = _DiesInAWorker(sorted(str(p) for p in folder.rglob("*.png")), os.getpid())
    with DecoderPool(source, 1) as pool:
        with pytest.raises(FeatxError, match="a decoding worker died"):
            list(pool.batches(list(range(6)), lite0_small.config.preprocess, 2))
    with DecoderPool(source, 0) as pool:  # in this process the same items decode
        assert sum(len(idx) for idx, *_ in pool.batches(list(range(6)), lite0_small.config.preprocess, 2)) == 6


def test_cheap_decoding_moves_into_the_consumers_process_and_keeps_the_order(tmp_path, lite0_small):
    """A consumer far slower than the decoding (a forward pass beside tiny images) takes the rest of the batches
    decoded in its own process; every batch still comes once, in order, as in-process decoding gives it."""
    import time

    from featx.data import open_source
    from featx.embed import DecoderPool
    from featx.embed.decoders import JUDGE_AFTER

    source = open_source(str(write_class_folder(tmp_path / "a", per_class=10)))
    pre = lite0_small.config.preprocess
    with DecoderPool(source, 0) as here:
        expected = [(idx, keys) for idx, keys, _, _ in here.batches(list(range(20)), pre, 2)]
    with DecoderPool(source, 1) as pool:
        got = []
        for idx, keys, crops, bad in pool.batches(list(range(20)), pre, 2):
            got.append((idx, keys))
            time.sleep(0.05)  # the forward pass: far longer than decoding two 40×32 PNGs
        assert pool.decoded_here and got == expected and len(got) > JUDGE_AFTER
    with DecoderPool(source, 1) as pool:  # a consumer as quick as the decoding keeps its worker
        list(pool.batches(list(range(20)), pre, 2))
        assert not pool.decoded_here


def test_one_pool_decodes_any_subset_of_its_source_in_the_subsets_numbers(tmp_path, lite0_small):
    from featx.data import SubsetSource, open_source
    from featx.embed import DecoderPool

    source = open_source(str(write_class_folder(tmp_path / "a", per_class=6)))
    pre = lite0_small.config.preprocess
    indices = [9, 2, 7, 4]
    with DecoderPool(SubsetSource(source, indices), 0) as own:
        expected = [(idx, keys) for idx, keys, _, _ in own.batches([0, 1, 2, 3], pre, 3)]
    with DecoderPool(source, 1) as pool:
        shared = pool.subset(indices)
        assert [(idx, keys) for idx, keys, _, _ in shared.batches([0, 1, 2, 3], pre, 3)] == expected
        shared.close()  # the pool is its owner's: still decoding
        assert sum(len(b[0]) for b in pool.batches([0, 1], pre, 2)) == 2
