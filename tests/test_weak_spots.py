"""The cheap fixes: each a mistake a clumsy user or a full disk makes, answered with a clear error and no loss."""

from __future__ import annotations

import errno
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from featx.errors import BundleError, ParameterError, StoreError

from conftest import SMALL, run_cli, write_class_folder


def _embed(folder, *args) -> dict:
    return json.loads(run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--json", *args).output)


def test_an_empty_token_is_refused_not_taken_as_no_token(lite0_small):
    from featx.serve import Resources, create_app

    result = run_cli("serve", "--token", "", ok=False)
    assert result.exit_code == 2 and "empty token" in result.output
    with pytest.raises(ParameterError, match="token must not be empty"):
        create_app(Resources(backbone=lite0_small), token="")


def test_port_out_of_range_is_a_usage_error():
    result = run_cli("serve", "--port", 99999, ok=False)
    assert result.exit_code == 2 and "--port" in result.output and "Traceback" not in result.output


def test_train_out_in_a_missing_folder_or_unwritable_place_is_explained(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    _embed(folder)
    missing = run_cli("train", "data", "--out", tmp_path / "no" / "such" / "h.npz", ok=False)
    assert missing.exit_code == 1 and "does not exist" in missing.output and not (tmp_path / "no").exists()
    proc = run_cli("train", "data", "--out", "/proc/x.npz", ok=False)
    assert proc.exit_code == 1 and "cannot write the head" in proc.output and "Traceback" not in proc.output


def test_a_cache_under_a_regular_file_is_explained(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run_cli("embed", "digits", "--cache", tmp_path / "file" / "cache", ok=False)
    assert result.exit_code == 1 and "cannot create the store" in result.output


@pytest.mark.parametrize("meta", [b'{"format": "featx-head"}', b'[1, 2]', b'{"format": "featx-head", "head": 3}'])
def test_malformed_bundle_metadata_is_not_a_bundle(tmp_path, meta):
    from featx.heads import load_bundle

    path = tmp_path / "h.npz"
    np.savez(path, __meta__=np.frombuffer(meta, dtype=np.uint8))
    with pytest.raises(BundleError, match="is not a featx head bundle|unknown head type"):
        load_bundle(path)
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(BundleError, match="is not a featx head bundle"):
        load_bundle(tmp_path / "zip.npz")


def test_one_class_and_disjoint_labels_are_refused_plainly(tmp_path, cache):
    one = write_class_folder(tmp_path / "one", per_class=4, classes={"only": (200, 10, 10)})
    _embed(one)
    result = run_cli("train", "one", ok=False)
    assert result.exit_code == 1 and "single class ('only')" in result.output and "np.str_" not in result.output
    two = write_class_folder(tmp_path / "two", per_class=4)
    other = write_class_folder(tmp_path / "other", per_class=4, classes={"cat": (5, 5, 5), "dog": (250, 250, 0)})
    _embed(two)
    _embed(other)
    head = json.loads(run_cli("train", "two", "--json").output)["path"]
    result = run_cli("evaluate", head, "other", "--split", "train", ok=False)
    assert result.exit_code == 1 and "none of the head's labels" in result.output


def test_a_full_disk_while_writing_keeps_the_store_consistent(tmp_path, lite0_small, monkeypatch):
    import featx.store.store as store_module
    from featx.data import open_source
    from featx.embed import embed_source
    from featx.store import open_store

    folder = write_class_folder(tmp_path / "data", per_class=3)

    def full(path, X):
        raise OSError(errno.ENOSPC, "No space left on device")

    with open_store(lite0_small.config, tmp_path / "cache") as store:
        monkeypatch.setattr(store_module, "write_npy", full)
        with pytest.raises(StoreError, match="No space left on device.*unchanged and consistent"):
            embed_source(open_source(str(folder)), lite0_small, store, workers=0)
        monkeypatch.undo()
        assert store.n_vectors() == 0 and store.damaged_shards() == []
        result = embed_source(open_source(str(folder)), lite0_small, store, workers=0)
        assert result.n_embedded == 6


def test_a_stale_index_never_answers_with_removed_files(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    _embed(folder)
    run_cli("index", "data")
    for f in (folder / "blue").iterdir():
        f.unlink()
    (folder / "blue").rmdir()
    _embed(folder)
    answer = json.loads(run_cli("search", "data", str(folder / "red" / "0.png"), "-k", "3", "--json").output)
    assert [r["path"] for r in answer[0]["results"] if r["path"] == "?"] == []
    assert {r["label"] for r in answer[0]["results"]} == {"red"}


def test_the_service_answers_every_error_in_one_shape(digits_head_cache):
    from fastapi.testclient import TestClient

    from featx.serve import create_app, open_resources

    resources = open_resources(head=str(digits_head_cache / "digits.npz"), cache=str(digits_head_cache))
    with TestClient(create_app(resources)) as client:
        for response in (client.get("/predict"), client.get("/nowhere"), client.delete("/embed")):
            assert response.status_code in (404, 405) and set(response.json()) == {"error"}
    resources.close()
