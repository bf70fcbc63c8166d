"""float16 stores: half the bytes, their own key, float32 out of load(), refused when values do not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SMALL, run_cli, write_class_folder
from featx.config import BackboneConfig, PreprocessConfig
from featx.errors import StoreError
from featx.store import FeatureStore, Member, open_store, verify_store

DIM = 16


def config(store_dtype="float32") -> BackboneConfig:
    return BackboneConfig(name="fake", weights_sha256="0" * 64, preprocess=PreprocessConfig(32), dim=DIM,
                          store_dtype=store_dtype)


def test_float16_is_its_own_store_and_float32_keys_are_unchanged():
    assert "store_dtype" not in config().to_dict()  # every store made before float16 keeps its key
    assert config("float16").key != config().key
    assert BackboneConfig.from_dict(config("float16").to_dict()) == config("float16")
    with pytest.raises(ValueError, match="store_dtype"):
        config("int8")


def test_float16_round_trip_through_shards_and_compaction(tmp_path):
    X = np.random.default_rng(0).standard_normal((40, DIM)).astype(np.float32) * 3
    ks = [f"k{i:03d}" for i in range(40)]
    half = open_store(config("float16"), tmp_path)
    with half.writing():
        for i in range(0, 40, 7):
            half.add(ks[i:i + 7], X[i:i + 7])
        half.record_dataset("ds", "t", [Member(k, k, "a", "train") for k in ks])
        assert half.compact(ks) == 6
    X2, *_ = half.load("ds")
    assert X2.dtype == np.float32
    np.testing.assert_array_equal(X2, X.astype(np.float16).astype(np.float32))
    assert np.abs(X2 - X).max() <= np.abs(X).max() * 2**-11  # float16's rounding, nothing more
    stored, *_ = half.load("ds", as_stored=True)
    assert isinstance(stored, np.memmap) and stored.dtype == np.float16
    np.testing.assert_array_equal(half.vectors([ks[5], ks[1]]), X2[[5, 1]])
    assert verify_store(half)["ok"]
    reopened = FeatureStore(half.path)
    assert reopened.dtype == np.float16 and reopened.describe()["store_dtype"] == "float16"

    full = open_store(config(), tmp_path)
    with full.writing():
        full.add(ks, X)
    shard = lambda s: (s.path / "shards" / s.shard_files()[0]).stat().st_size  # noqa: E731
    assert shard(half) < 0.55 * shard(full)


def test_values_beyond_float16_are_refused_and_nothing_is_written(tmp_path):
    store = open_store(config("float16"), tmp_path)
    X = np.ones((2, DIM), np.float32)
    X[1, 3] = 1e6
    with store.writing(), pytest.raises(StoreError, match="beyond float16's range.*float32"):
        store.add(["a", "b"], X)
    assert store.n_vectors() == 0 and not store.shard_files()


def test_a_float32_shard_in_a_float16_store_is_reported_as_damage(tmp_path):
    store = open_store(config("float16"), tmp_path)
    with store.writing():
        store.add(["a"], np.ones((1, DIM), np.float32))
    file = store.shard_files()[0]
    np.save(store.path / "shards" / file, np.ones((1, DIM), np.float32))
    assert "not float16" in store.damaged_shards()[0]["problem"]


def test_embed_train_and_search_a_float16_store_from_the_cli(tmp_path):
    folder = write_class_folder(tmp_path / "imgs", per_class=3)
    cache = tmp_path / "cache"
    common = ["--image-size", SMALL, "--workers", 0, "--cache", cache, "--json"]
    half = json.loads(run_cli("embed", folder, "--store-dtype", "float16", *common).output)
    full = json.loads(run_cli("embed", folder, *common).output)
    assert half["store"] != full["store"] and half["n_embedded"] == full["n_embedded"] > 0
    stores = {s["store"]: s for s in json.loads(run_cli("stores", "--cache", cache, "--json").output)}
    assert stores[half["store"]]["store_dtype"] == "float16" and stores[full["store"]]["store_dtype"] == "float32"
    Xh = FeatureStore(half["store"]).load("imgs")[0]
    Xf = FeatureStore(full["store"]).load("imgs")[0]
    np.testing.assert_array_equal(Xh, Xf.astype(np.float16).astype(np.float32))

    plain = run_cli("train", "imgs", "--cache", cache, "--json")  # two stores: the float32 one, with a note
    assert json.loads(plain.stdout)["store"] == full["store"] and "note: dataset 'imgs' is in 2 stores" in plain.stderr
    trained = json.loads(run_cli("train", "imgs", "--store-dtype", "float16", "--cache", cache, "--json").output)
    assert trained["n_train"] > 0
    hits = json.loads(run_cli("search", "imgs", str(next(folder.rglob("*.png"))), "-k", 3, "--store-dtype", "float16",
                              "--cache", cache, "--json").output)
    assert hits[0]["results"][0]["similarity"] > 0.99
