"""The cheap fixes: each a mistake a clumsy user or a full disk makes, answered with a clear error and no loss."""

from __future__ import annotations

import errno
import gc
import json
import os
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from featx.errors import BundleError, ParameterError, StoreError
from featx.runtimes import TorchRuntime

from conftest import SMALL, noisy_image, run_cli, write_class_folder


def _embed(folder, *args) -> dict:
    return json.loads(run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--json", *args).output)


def test_an_empty_token_is_refused_not_taken_as_no_token(lite0_small):
    from featx.serve import Resources, create_app

    result = run_cli("serve", "--token", "", ok=False)
    assert result.exit_code == 2 and "empty token" in result.output
    with pytest.raises(ParameterError, match="token must not be empty"):
        create_app(Resources(runtime=TorchRuntime(lite0_small)), token="")


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_featx_token_variable_is_refused_too(monkeypatch, value):
    monkeypatch.setenv("FEATX_TOKEN", value)
    result = run_cli("serve", ok=False)
    assert result.exit_code == 2 and "empty token" in result.output and "Traceback" not in result.output


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
    import featx.store.writer as writer_module
    from featx.data import open_source
    from featx.embed import embed_source
    from featx.store import open_store

    folder = write_class_folder(tmp_path / "data", per_class=3)

    def full(path, X):
        raise OSError(errno.ENOSPC, "No space left on device")

    with open_store(lite0_small.config, tmp_path / "cache") as store:
        monkeypatch.setattr(writer_module, "write_npy", full)
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
        multipart = {"content-type": "multipart/form-data; boundary=abc"}
        chunked = client.post("/predict", content=(b"x" * 2**20 for _ in range(30)), headers=multipart)
        assert chunked.status_code == 413 and set(chunked.json()) == {"error"}
        parts = b"".join(b'--abc\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(1200))
        for response in (client.post("/predict", content=parts + b"--abc--\r\n", headers=multipart),
                         client.post("/predict", content=b"xx", headers={"content-type": "multipart/form-data"})):
            assert response.status_code == 400 and set(response.json()) == {"error"}
    resources.close()


@contextmanager
def read_only_view(folder: Path):
    """``folder`` as a user without write access sees it: a read-only bind mount (root), or chmod (others)."""
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield folder
        finally:
            for p in reversed(paths):
                p.chmod(modes[p])
        return
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", folder, view], capture_output=True).returncode != 0:
        pytest.skip("this machine cannot make a read-only mount")
    try:
        if os.access(view, os.W_OK):
            pytest.skip("the bind mount came up writable")
        yield view
    finally:
        gc.collect()  # a failed command's traceback can keep a shard's file open until the next collection
        subprocess.run(["umount", view], check=True)


def test_a_read_only_cache_can_still_be_read(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    _embed(folder)
    with read_only_view(cache) as view:
        listing = run_cli("stores", "--cache", view)
        assert "data" in listing.output and "warning" not in listing.output
        trained = json.loads(run_cli("train", "data", "--cache", view, "--out", tmp_path / "h.npz", "--json").output)
        assert trained["n_train"] > 0 and (tmp_path / "h.npz").is_file()
        answer = json.loads(run_cli("search", "data", folder / "red" / "0.png", "-k", 2, "--cache", view,
                                    "--json").output)
        assert answer[0]["results"][0]["label"] == "red"
        new = tmp_path / "new.png"
        noisy_image((30, 30, 220), seed=4242).save(new)
        predicted = json.loads(run_cli("predict", tmp_path / "h.npz", new, "--cache", view, "--json").output)
        assert predicted["results"][0]["predictions"][0]["label"] == "blue"
        for args in (("train", "data"), ("index", "data"), ("embed", folder, "--image-size", SMALL, "--workers", 0)):
            result = run_cli(*args, "--cache", view, ok=False)
            assert result.exit_code == 1 and "read-only" in result.output and "Traceback" not in result.output


def test_file_names_with_control_characters_cannot_forge_output_lines(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    forged = folder / "red" / "x\nError: forged\x1b[2J.png"
    noisy_image((220, 30, 30), seed=99).save(forged, "PNG")
    (folder / "blue" / "bad\nwarning: forged.jpg").write_text("not an image")
    embedded = run_cli("embed", folder, "--image-size", SMALL, "--workers", 0)
    searched = run_cli("search", "data", forged, "-k", 7)
    for output in (embedded.output, searched.output):
        assert not any(line.startswith(("Error: forged", "warning: forged")) for line in output.splitlines())
        assert "\x1b" not in output
    assert "bad\\nwarning: forged.jpg" in embedded.output and "x\\nError: forged\\x1b[2J.png" in searched.output


def test_labels_and_dataset_names_with_control_characters_cannot_forge_output_lines(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=8, classes={"x\nFORGED\x1b[2J": (220, 30, 30),
                                                                         "blue": (30, 30, 220)})
    name = "d\nError: forged"
    embedded = run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--name", name)
    trained = run_cli("train", name, "--verbose")
    for output in (embedded.output, trained.output):
        assert not any(line.startswith(("FORGED", "Error: forged")) for line in output.splitlines()), output
        assert "\x1b" not in output
    assert "x\\nFORGED\\x1b[2J" in trained.output and "d\\nError: forged" in trained.output


def test_two_trainings_writing_one_head_file_at_once_both_succeed(tmp_path, cache):
    import sys

    folder = write_class_folder(tmp_path / "data", per_class=3)
    _embed(folder)
    out = tmp_path / "same.npz"
    command = [sys.executable, "-m", "featx", "train", "data", "--out", str(out)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [(p.wait(timeout=120), p.stdout.read()) for p in runs]
    assert all(rc == 0 for rc, _ in outputs), outputs
    from featx.heads import load_bundle

    assert load_bundle(out).classes == ["blue", "red"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.parametrize("args", [("finetune", "digits", "--epochs", 0), ("finetune", "digits", "--shots", 0),
                                  ("compare", "digits", "--shots", 0), ("compare", "digits", "--epochs", 0)])
def test_zero_is_invalid_not_the_default(args):
    result = run_cli(*args, ok=False)
    assert result.exit_code in (1, 2) and f"{args[2]}" in result.output and "Traceback" not in result.output
    assert "0" in result.output


def test_an_empty_featx_cache_means_the_default_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATX_CACHE", "")
    (tmp_path / "stray-store").mkdir()
    result = run_cli("stores")
    assert "under cache" in result.output


def _audit_resources(tmp_path, report):
    from types import SimpleNamespace

    store = tmp_path / "cache" / "store"
    store.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "report.json"
    if report == "fifo":
        os.mkfifo(path)
    else:
        path.write_text(json.dumps(report))
    return SimpleNamespace(audit_report=str(path), dataset="p q", store=SimpleNamespace(path=store))


@pytest.mark.parametrize("report, status", [
    (None, 409), ([1, 2], 409), ("fifo", 409),
    ({"dataset": "p-q-38c70423", "store": "STORE"}, 409),  # another dataset's report in this one's place
    ({"dataset": "p q", "store": "STORE", "label_issues": 3, "summary": [], "leaks": [None]}, 200),
])
def test_audit_reports_of_the_wrong_shape_or_dataset_are_refused_not_500(tmp_path, report, status):
    from featx.serve.errors import ServiceError
    from featx.serve.thumbnails import audit_findings

    if isinstance(report, dict):
        report["store"] = os.path.relpath(tmp_path / "cache" / "store")  # spelled another way than the service's
    resources = _audit_resources(tmp_path, report)
    if status == 200:
        answer = audit_findings(resources, 5)
        assert answer["label_issues"] == [] and answer["summary"] == {} and answer["near_leaks"] == []
    else:
        with pytest.raises(ServiceError) as caught:
            audit_findings(resources, 5)
        assert caught.value.status == status


def test_a_bug_in_the_service_answers_in_the_json_error_shape(lite0_small):
    from fastapi.testclient import TestClient

    from featx.serve import Resources, create_app

    def boom():
        raise RuntimeError("a bug")

    app = create_app(Resources(runtime=TorchRuntime(lite0_small)))
    with TestClient(app, raise_server_exceptions=False) as client:
        app.router.add_api_route("/boom", boom)
        response = client.get("/boom")
    assert response.status_code == 500 and response.json()["error"].startswith("internal error (RuntimeError)")


@contextmanager
def _mounted(target: Path, *options: str):
    """``mount`` as root (a small tmpfs, a read-only bind); skips where this machine will not mount."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _fill_to_the_brim(cache: Path, tmp_path: Path) -> None:
    small = write_class_folder(tmp_path / "small", per_class=10)
    larger = write_class_folder(tmp_path / "larger", per_class=40, classes={"g": (0, 200, 0), "w": (250, 250, 250)})
    for folder in (small, larger):
        # final layer only: the disk's size is measured for 1,280-dimensional vectors
        run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--runtime", "torch", "--layers", "final",
                "--cache", cache, ok=False)


def test_a_full_disk_is_explained_by_every_command_that_writes(tmp_path):
    with _mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=600k", "tmpfs") as disk:
        cache = disk / "c"
        _fill_to_the_brim(cache, tmp_path)
        for command in (["index", "small"], ["audit", "small"]):
            result = run_cli(*command, "--cache", cache, ok=False)
            assert result.exit_code == 1 and "No space left on device" in result.output, result.output
            assert "Traceback" not in result.output
        assert "test accuracy" in run_cli("train", "small", "--head", "knn", "--cache", cache, "--out",
                                          tmp_path / "h.npz").output  # the store itself is whole


def test_a_read_only_cache_is_explained_and_map_does_not_claim_to_save(tmp_path):
    cache = tmp_path / "c"
    run_cli("embed", write_class_folder(tmp_path / "small", per_class=10), "--image-size", SMALL, "--workers", 0,
            "--runtime", "torch", "--cache", cache)
    with _mounted(tmp_path / "ro", "--bind", str(cache)) as ro:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        for command in (["audit", "small"], ["map", "small"]):
            result = run_cli(*command, "--cache", ro, ok=False)
            assert result.exit_code == 1 and "read-only" in result.output.lower(), result.output
            assert "saved:" not in result.output and "Traceback" not in result.output


def test_audit_of_identical_images_and_rank_of_one_class_are_explained(tmp_path, cache):
    from PIL import Image

    same = tmp_path / "same"
    for label in ("a", "b"):
        (same / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (32, 32), (100, 100, 100)).save(same / label / f"{i}.png")
    _embed(same)
    audit = run_cli("audit", "same", ok=False)
    assert audit.exit_code == 1 and "copies of one image" in audit.output and "Traceback" not in audit.output
    one = write_class_folder(tmp_path / "one", per_class=6, classes={"x": (200, 0, 0)})
    rank = run_cli("rank", one, ok=False)
    assert rank.exit_code == 1 and "single class" in rank.output


def test_a_thumbnail_is_made_only_from_the_image_its_key_names(tmp_path):
    from featx.data.hashing import content_hash
    from featx.data.thumbnails import Thumbnails

    path = tmp_path / "a.png"
    noisy_image((200, 0, 0), seed=1).save(path)
    key = content_hash(path.read_bytes())
    assert Thumbnails().jpeg(str(path), key=key) is not None
    noisy_image((0, 0, 200), seed=2).save(path)  # the file was replaced after it was embedded
    assert Thumbnails().jpeg(str(path), key=key) is None
    digits = Thumbnails()
    from featx.data import open_source

    source = open_source("digits")
    assert digits.jpeg(source.items[3].path, key=source.content_hash(3)) is not None


@pytest.mark.parametrize("damage", ["nan", "shape", "type"])
def test_a_head_bundle_with_bad_arrays_is_refused_when_loaded(tmp_path, cache, damage):
    folder = write_class_folder(tmp_path / "data", per_class=4)
    _embed(folder)
    head = Path(json.loads(run_cli("train", "data", "--json").output)["path"])
    with np.load(head, allow_pickle=False) as saved:
        arrays = dict(saved)
    if damage == "nan":
        arrays["coef_"] = np.full_like(arrays["coef_"], np.nan)
    elif damage == "shape":
        arrays["coef_"] = arrays["coef_"][:, :7]
    else:
        arrays["mean_"] = np.array(["a", "b"])
    np.savez(head, **arrays)
    result = run_cli("predict", head, folder / "red" / "0.png", ok=False)
    assert result.exit_code == 1 and "damaged" in result.output and "Traceback" not in result.output
    assert "nan%" not in result.output


def test_a_truncated_map_is_computed_again(tmp_path, cache):
    from featx.maps import dataset_map, map_path
    from featx.store import find_dataset

    _embed(write_class_folder(tmp_path / "data", per_class=4))
    run_cli("map", "data")
    with find_dataset("data", cache) as store:
        path = map_path(store, "data")
        path.write_bytes(path.read_bytes()[:100])
        layout, computed = dataset_map(store, "data")
    assert computed and layout.points.shape == (8, 2)
