"""The feature store alone, without a model: shards, catalog, compaction, locking, crash leftovers."""

from __future__ import annotations

import numpy as np
import pytest

from featx.config import BackboneConfig, PreprocessConfig, StoreQuery
from featx.errors import StoreError
from featx.store import FeatureStore, Member, find_dataset, list_stores, open_store

DIM = 8


def config(name="fake", size=32) -> BackboneConfig:
    return BackboneConfig(name=name, weights_sha256="0" * 64, preprocess=PreprocessConfig(size), dim=DIM)


def vectors(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def keys(n, prefix="k"):
    return [f"{prefix}{i:04d}" for i in range(n)]


def fill(store, n, batch=3, split="train", name="ds"):
    ks, X = keys(n), vectors(n)
    with store.writing():
        for i in range(0, n, batch):
            store.add(ks[i : i + batch], X[i : i + batch])
        store.record_dataset(name, "test", [Member(k, f"/p/{k}", str(i % 2), split) for i, k in enumerate(ks)])
        merged = store.compact(ks)
    return ks, X, merged


def test_vectors_round_trip_and_load_is_a_memory_map(tmp_path):
    store = open_store(config(), tmp_path)
    ks, X, merged = fill(store, 10)
    assert merged == 4 and len(list((store.path / "shards").iterdir())) == 1
    X2, y, k2, paths = store.load("ds")
    assert isinstance(X2, np.memmap) and not X2.flags.writeable
    np.testing.assert_array_equal(X2, X)
    assert list(k2) == ks and list(y) == [str(i % 2) for i in range(10)] and paths[0] == "/p/k0000"
    np.testing.assert_array_equal(store.vectors([ks[7], ks[2]]), X[[7, 2]])


def test_split_selection_and_unknown_names(tmp_path):
    store = open_store(config(), tmp_path)
    ks, X = keys(6), vectors(6)
    with store.writing():
        store.add(ks, X)
        store.record_dataset("ds", "t", [Member(k, k, None, "test" if i % 3 == 0 else "train")
                                         for i, k in enumerate(ks)])
    Xt, y, kt, _ = store.load("ds", "test")
    assert y is None and list(kt) == [ks[0], ks[3]]
    np.testing.assert_array_equal(Xt, X[[0, 3]])
    with pytest.raises(StoreError, match="no 'val' split"):
        store.load("ds", "val")
    with pytest.raises(StoreError, match="no dataset 'other'.*Embed it first"):
        store.load("other")


def test_same_key_is_stored_once(tmp_path):
    store = open_store(config(), tmp_path)
    with store.writing():
        store.add(["a", "b", "a"], vectors(3))
        store.add(["b", "c"], vectors(2, seed=1))
    assert store.n_vectors() == 3
    assert store.present(["a", "c", "z"]) == {"a", "c"}


def test_one_writer_at_a_time(tmp_path):
    a = open_store(config(), tmp_path)
    b = FeatureStore(a.path)
    with a.writing():
        with pytest.raises(StoreError, match="another featx process is writing"):
            with b.writing():
                pass
    with b.writing():
        pass
    with pytest.raises(RuntimeError):
        a.add(["x"], vectors(1))


def test_leftovers_of_a_crash_are_removed_and_committed_work_kept(tmp_path):
    store = open_store(config(), tmp_path)
    ks, X, _ = fill(store, 5)
    shards = store.path / "shards"
    (shards / ".tmp-deadbeef.npy").write_bytes(b"half a shard")
    np.save(shards / "renamed-but-never-committed.npy", vectors(2))
    reopened = FeatureStore(store.path)
    with reopened.writing():
        pass
    assert sorted(p.name for p in shards.iterdir()) == sorted(reopened.shard_files())
    np.testing.assert_array_equal(reopened.load("ds")[0], X)


def test_configurations_never_mix(tmp_path):
    a = open_store(config(size=32), tmp_path)
    b = open_store(config(size=64), tmp_path)
    assert a.path != b.path
    with pytest.raises(StoreError, match="holds vectors of"):
        FeatureStore(a.path, config=config(size=64))
    with pytest.raises(StoreError, match="dimension 8"):
        with a.writing():
            a.add(["x"], np.zeros((1, 3), np.float32))


def test_find_dataset_across_stores(tmp_path):
    fill(open_store(config("one"), tmp_path), 3, name="shared")
    fill(open_store(config("two"), tmp_path), 3, name="shared")
    fill(open_store(config("two"), tmp_path), 3, name="only-two")
    assert len(list_stores(tmp_path)) == 2
    assert find_dataset("only-two", tmp_path).config.name == "two"
    assert find_dataset("shared", tmp_path, StoreQuery(backbone="one")).config.name == "one"
    with pytest.raises(StoreError, match="several stores.*backbone=NAME"):
        find_dataset("shared", tmp_path)
    with pytest.raises(StoreError, match="no dataset 'nope'"):
        find_dataset("nope", tmp_path)


def test_gathered_load_when_rows_are_not_contiguous(tmp_path):
    store = open_store(config(), tmp_path)
    ks, X = keys(4), vectors(4)
    with store.writing():
        store.add(ks[:2], X[:2])
        store.add(ks[2:], X[2:])
        store.record_dataset("ds", "t", [Member(k, k, "a", "train") for k in (ks[3], ks[0], ks[3])])
    X2, *_ = store.load("ds")
    assert not isinstance(X2, np.memmap)
    np.testing.assert_array_equal(X2, X[[3, 0, 3]])


def test_a_vector_view_reads_a_datasets_layers_normalised_whole_or_in_blocks(digits_head_cache):
    """The one reader of stored vectors: the chosen layers' columns, each layer normalised on its own, in the
    shards' order; block by block it gives exactly what it gives whole."""
    from featx.store import VectorView, normalize

    with find_dataset("digits", digits_head_cache) as store:
        view = VectorView(store, "digits")
        keys = view.keys()
        assert len(keys) == len(set(keys)) == 1797 and view.layers is None
        assert view.layer_widths and len(view.layer_widths) == len(store.config.layers) and sum(view.layer_widths) == view.dim
        X = view.normalised(keys)
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
        start = 0
        for width in view.layer_widths:  # every layer weighs the same: length 1/sqrt(layers)
            np.testing.assert_allclose(np.linalg.norm(X[:, start:start + width], axis=1),
                                       1 / np.sqrt(len(view.layer_widths)), rtol=1e-4)
            start += width
        np.testing.assert_array_equal(np.concatenate(list(view.normalised_blocks(keys, size=500))), X)
        last = store.config.layers[-1]
        one = VectorView(store, "digits", [last])
        assert one.layers == (last,) and one.layer_widths is None and one.dim == store.config.dim - sum(view.layer_widths[:-1])
        np.testing.assert_array_equal(one.normalised(keys[:7]), normalize(store.vectors(list(keys[:7]))[:, -one.dim:]))
