"""The dataset map: computed once, kept beside the store, computed again when the dataset changes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import noisy_image, run_cli, write_class_folder


def test_the_map_is_kept_beside_the_store_and_follows_the_dataset(tmp_path):
    folder = write_class_folder(tmp_path / "photos", per_class=12)
    cache = tmp_path / "cache"
    run_cli("embed", folder, "--image-size", 32, "--workers", 0, "--cache", cache)
    first = json.loads(run_cli("map", "photos", "--cache", cache, "--json").output)
    assert first["computed"] and first["n"] == 24 and first["method"] == "pca50-umap"
    again = json.loads(run_cli("map", "photos", "--cache", cache, "--json").output)
    assert not again["computed"] and again["path"] == first["path"]
    with np.load(first["path"]) as saved:
        points = saved["points"]
        assert points.shape == (24, 2) and points.min() >= 0 and points.max() <= 1
    # a new image in the dataset: the map is made again, with it
    noisy_image((30, 220, 30), seed=77).save(folder / "red" / "new.png")
    run_cli("embed", folder, "--image-size", 32, "--workers", 0, "--cache", cache)
    changed = json.loads(run_cli("map", "photos", "--cache", cache, "--json").output)
    assert changed["computed"] and changed["n"] == 25


def test_a_tiny_dataset_gets_a_pca_map():
    from featx.maps import compute_layout

    layout = compute_layout(np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32))
    assert layout.method == "pca" and layout.points.shape == (5, 2)


def test_umaps_numba_code_is_compiled_once_per_machine_not_per_process():
    """umap's numba functions have numba's on-disk cache turned on before their first call (they compiled
    again in every process, 13–15 s a first map), and what umap marked itself is left as it was."""
    from numba.core.dispatcher import Dispatcher

    from featx.maps.layout import import_umap

    umap = import_umap()
    import umap.umap_

    compiled = umap.umap_.smooth_knn_dist  # one of the functions umap did not mark for the cache
    assert isinstance(compiled, Dispatcher) and type(compiled._cache).__name__ != "NullCache"
    assert import_umap() is umap  # once per process


def test_the_packed_map_round_trips_in_seven_bytes_a_point():
    from featx.serve.packed_map import pack_map, unpack_map

    rng = np.random.default_rng(0)
    points = rng.random((1001, 2)).astype(np.float32)
    labels = [None if i % 10 == 0 else f"class {i % 7}" for i in range(1001)]
    splits = ["train" if i % 3 else None for i in range(1001)]
    data = pack_map("photos", "pca50-umap", points, labels, splits)
    back = unpack_map(data)
    assert len(data) < 7 * 1001 + 200
    assert (back["dataset"], back["method"], back["n"]) == ("photos", "pca50-umap", 1001)
    assert back["labels"] == labels and back["splits"] == splits
    assert np.abs(back["x"] - points[:, 0]).max() <= 0.5 / 65535 + 1e-7
    assert np.abs(back["y"] - points[:, 1]).max() <= 0.5 / 65535 + 1e-7
    assert unpack_map(pack_map("empty", "pca", np.zeros((0, 2)), [], []))["n"] == 0
    with pytest.raises(ValueError, match="not a packed featx map"):
        unpack_map(b"{}" + data)


def test_a_map_beyond_its_sample_places_the_rest_by_transform(tmp_path, monkeypatch):
    """Past FIT_SAMPLE points, PCA and UMAP are fitted on a sample and the other points placed by UMAP's
    transform, reading the store block by block: every point is there, in the unit square, and the method says
    how it was made."""
    from featx.maps import layout

    monkeypatch.setattr(layout, "FIT_SAMPLE", 20)
    monkeypatch.setattr(layout, "BLOCK_ROWS", 7)
    folder = write_class_folder(tmp_path / "photos", per_class=15)
    cache = tmp_path / "cache"
    run_cli("embed", folder, "--image-size", 32, "--workers", 0, "--cache", cache)
    made = json.loads(run_cli("map", "photos", "--cache", cache, "--json").output)
    assert made["computed"] and made["n"] == 30 and made["method"].endswith("fitted on 20, the rest placed by transform)")
    with np.load(made["path"]) as saved:
        points = saved["points"]
    assert points.shape == (30, 2) and np.isfinite(points).all() and points.min() >= 0 and points.max() <= 1
    assert len({tuple(p) for p in points.round(4).tolist()}) > 20  # placed, not piled on one spot
