"""A damaged store: shards truncated or deleted, a corrupt catalog, names that collide, readers racing a merge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from featx.errors import StoreError

from conftest import SMALL, run_cli, write_class_folder


def _embed(folder, *args) -> dict:
    return json.loads(run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--json", *args).output)


@pytest.mark.parametrize("damage", ["truncate", "delete", "fifo"])
def test_a_damaged_shard_is_reported_then_repaired_by_the_next_embed(tmp_path, cache, damage):
    folder = write_class_folder(tmp_path / "data", per_class=4)
    store = Path(_embed(folder)["store"])
    (shard,) = sorted((store / "shards").glob("*.npy"))
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-4000])
    else:
        shard.unlink()
    if damage == "fifo":  # reading it would block for ever
        os.mkfifo(shard)
    train = run_cli("train", "data", ok=False)
    assert train.exit_code == 1 and "is damaged" in train.output and shard.name in train.output
    assert "Traceback" not in train.output
    verify = run_cli("verify", ok=False)
    assert verify.exit_code == 1 and "DAMAGED" in verify.output and shard.name in verify.output
    again = _embed(folder)
    assert (again["n_embedded"], again["n_reused"]) == (8, 0)
    assert "test accuracy" in run_cli("train", "data").output
    assert run_cli("verify").output.count(": ok") == 1


def test_verify_repair_forgets_a_shard_whose_bytes_changed(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    store = Path(_embed(folder)["store"])
    (shard,) = sorted((store / "shards").glob("*.npy"))
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\x7f" * 8  # same size, other values: only the checksum notices
    shard.write_bytes(bytes(data))
    report = json.loads(run_cli("verify", "--repair", "--json").output)
    assert report[0]["repaired"] and "checksum" in report[0]["damaged_shards"][0]["problem"]
    assert report[0]["vectors_forgotten"] == 6
    assert _embed(folder)["n_embedded"] == 6


def test_one_corrupt_catalog_does_not_take_down_the_other_stores(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    _embed(folder)
    other = Path(_embed(folder, "--name", "other", "--precision", "fp32")["store"])
    (other / "catalog.sqlite").write_bytes(b"garbage, not SQLite" * 100)
    for name in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (other / name).unlink(missing_ok=True)
    stores = run_cli("stores")
    assert "warning: skipped" in stores.output and other.name in stores.output and "data" in stores.output
    assert "test accuracy" in run_cli("train", "data").output
    from featx.store import FeatureStore

    with pytest.raises(StoreError, match="is damaged: its catalog cannot be read"):
        FeatureStore(other)


@pytest.mark.parametrize("where", ["middle", "header"])
def test_partial_damage_to_one_catalog_leaves_the_other_stores_working(tmp_path, cache, where):
    """The red team's: garbage written over part of one store's catalog.sqlite."""
    healthy = write_class_folder(tmp_path / "data", per_class=3)
    _embed(healthy)
    damaged = write_class_folder(tmp_path / "many", per_class=150)
    other = Path(_embed(damaged, "--precision", "fp32")["store"])
    catalog = other / "catalog.sqlite"
    size = catalog.stat().st_size
    assert size > 64 * 1024 and not (other / "catalog.sqlite-wal").exists()
    with open(catalog, "r+b") as f:
        f.seek(size // 2 // 4096 * 4096 if where == "middle" else 0)
        f.write(np.random.default_rng(0).integers(0, 256, 4096 if where == "middle" else 100 * 1024,
                                                   dtype=np.uint8).tobytes())
    stores = run_cli("stores")
    assert "warning: skipped" in stores.output and other.name in stores.output and " data " in stores.output
    assert "Traceback" not in stores.output
    assert "test accuracy" in run_cli("train", "data", "--head", "knn").output
    assert _embed(healthy)["n_reused"] == 6
    refused = run_cli("train", "many", ok=False)
    assert refused.exit_code == 1 and other.name in refused.output and "Traceback" not in refused.output
    verify = run_cli("verify", ok=False)
    assert verify.exit_code == 1 and f"{other.name}: DAMAGED" in verify.output and ": ok" in verify.output
    assert run_cli("verify", "--repair", ok=False).exit_code == 1  # nothing but embedding again mends a catalog


def test_dataset_names_never_share_index_or_head_files(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    _embed(folder, "--name", "p q")
    _embed(write_class_folder(tmp_path / "other", per_class=2, classes={"g": (0, 200, 0), "w": (250, 250, 250)}),
           "--name", "p-q")
    paths = {json.loads(run_cli("index", name, "--json").output)["path"] for name in ("p q", "p-q")}
    heads = {json.loads(run_cli("train", name, "--json").output)["path"] for name in ("p q", "p-q")}
    assert len(paths) == 2 and len(heads) == 2
    answer = json.loads(run_cli("search", "p q", str(folder / "red" / "0.png"), "-k", "6", "--json").output)
    assert all(r["label"] in ("red", "blue") for r in answer[0]["results"])
    # An index file copied over another dataset's is refused, not used.
    a, b = sorted(paths)
    Path(b).write_bytes(Path(a).read_bytes())
    name_b = "p-q" if "p-q" in Path(b).name and "p-q-" not in Path(b).name else "p q"
    refused = run_cli("search", name_b, str(folder / "red" / "0.png"), ok=False)
    assert refused.exit_code == 1 and "belongs to dataset" in refused.output


def test_a_reader_racing_a_merge_gets_a_consistent_answer(tmp_path, lite0_small):
    from featx.store import FeatureStore, Member, open_store

    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, lite0_small.dim)).astype(np.float32)
    keys = [f"{i:064x}" for i in range(6)]
    writer = open_store(lite0_small.config, tmp_path)
    with writer.writing():
        for i in range(0, 6, 2):  # three small shards
            writer.add(keys[i:i + 2], X[i:i + 2])
        writer.record_dataset("d", "test", [Member(k, f"p{i}", None, "train") for i, k in enumerate(keys)])
    reader = FeatureStore(writer.path)
    original = reader._shard
    merged = []

    def shard_after_a_merge(shard_id):
        if not merged:  # the writer merges (and unlinks) the shards this reader is about to open
            with writer.writing():
                merged.append(writer.compact(keys))
        return original(shard_id)

    reader._shard = shard_after_a_merge
    loaded, _, got_keys, _ = reader.load("d")
    assert merged == [3] and list(got_keys) == keys
    np.testing.assert_array_equal(np.asarray(loaded), X)


def test_a_name_that_looks_like_another_names_stem_gets_files_of_its_own(tmp_path, cache):
    """The red team's: "p q" is stored as p-q-38c70423, and a dataset may be called p-q-38c70423."""
    from featx.store.atomic import name_stem

    names = ["p q", name_stem("p q"), "..", ".", "a", "a+blocks.4"]
    assert len({name_stem(n) for n in names}) == len(names) and name_stem("digits") == "digits"
    assert all(name_stem(n) not in (".", "..") and "/" not in name_stem(n) for n in names)
    _embed(write_class_folder(tmp_path / "x", per_class=3), "--name", "p q")
    _embed(write_class_folder(tmp_path / "y", per_class=2, classes={"g": (0, 200, 0), "w": (250, 250, 250)}),
           "--name", name_stem("p q"))
    heads = [json.loads(run_cli("train", n, "--head", "knn", "--json").output) for n in ("p q", name_stem("p q"))]
    assert heads[0]["path"] != heads[1]["path"]
    from featx.heads import load_bundle

    assert [load_bundle(h["path"]).dataset for h in heads] == ["p q", name_stem("p q")]


def test_an_audit_report_is_written_inside_the_audit_folder_whatever_the_dataset_is_called(tmp_path, cache):
    _embed(write_class_folder(tmp_path / "x", per_class=6), "--name", "..")
    run_cli("audit", "..", "--json")
    assert not (cache / "report.json").exists() and not (cache / "audit" / "report.json").exists()
    (report,) = (cache / "audit").glob("*/report.json")
    assert json.loads(report.read_text())["dataset"] == ".."
