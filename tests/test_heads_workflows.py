"""`featx train`, `evaluate`, `predict` and head bundles, driven as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featx.config import BackboneConfig, PreprocessConfig
from featx.errors import BundleError
from featx.heads.bundles import HeadBundle, load_bundle, save_bundle
from featx.heads import HEADS, LogisticHead

from conftest import SMALL, noisy_image, run_cli, write_class_folder

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """A 3-class folder with train/test splits, embedded once at a small size."""
    root = tmp_path_factory.mktemp("colours")
    write_class_folder(root / "data" / "train", per_class=8, classes=COLOURS)
    test = root / "data" / "test"
    for c, (name, rgb) in enumerate(COLOURS.items()):
        (test / name).mkdir(parents=True)
        for i in range(3):
            noisy_image(rgb, seed=5000 + 100 * c + i).save(test / name / f"{i}.png")
    cache = root / "cache"
    run_cli("embed", root / "data", "--name", "colours", "--image-size", SMALL, "--workers", 0, "--cache", cache)
    return root, cache


@pytest.mark.parametrize("head", sorted(HEADS))
def test_train_every_head_reaches_full_accuracy_and_saves(colours, head, tmp_path):
    root, cache = colours
    out = tmp_path / f"{head}.npz"
    data = json.loads(run_cli("train", "colours", "--head", head, "--cache", cache, "--out", out, "--json").stdout)
    assert {"head", "dataset", "store", "n_train", "n_test", "accuracy", "macro_f1", "train_seconds", "params",
            "path"} <= set(data)
    assert (data["head"], data["n_train"], data["n_test"], data["accuracy"]) == (head, 24, 9, 1.0)
    bundle = load_bundle(out)
    assert bundle.classes == ["blue", "green", "red"] and bundle.metrics["test"]["accuracy"] == 1.0

    evaluated = json.loads(run_cli("evaluate", out, "colours", "--split", "train", "--cache", cache, "--json").stdout)
    assert (evaluated["n"], evaluated["accuracy"]) == (24, 1.0)

    preds = json.loads(run_cli("predict", out, root / "data" / "test" / "green", "--top-k", 2, "--cache", cache,
                               "--json").stdout)["results"]
    assert len(preds) == 3 and all(p["predictions"][0]["label"] == "green" for p in preds)
    assert all(len(p["predictions"]) == 2 and p["predictions"][0]["probability"] >= p["predictions"][1]["probability"]
               for p in preds)


def test_train_text_output_and_default_path(colours):
    root, cache = colours
    result = run_cli("train", "colours", "--cache", cache, "--verbose")
    assert "test accuracy 100.00%" in result.stdout and "confusion matrix" in result.stdout
    saved = Path(result.stdout.strip().splitlines()[-1].removeprefix("saved: "))
    assert saved.is_file() and saved.parent.name == "heads" and saved.name == "colours-logreg.npz"


def test_predict_embeds_new_images_once_and_reuses_the_cache(colours, tmp_path):
    root, cache = colours
    head = tmp_path / "h.npz"
    run_cli("train", "colours", "--cache", cache, "--out", head)
    new = tmp_path / "new.png"
    noisy_image(COLOURS["red"], seed=424242).save(new)
    from featx.store import list_stores

    before = list_stores(cache)[0].n_vectors()
    out = json.loads(run_cli("predict", head, new, "--cache", cache, "--json").stdout)["results"]
    assert out[0]["predictions"][0]["label"] == "red"
    assert list_stores(cache)[0].n_vectors() == before + 1
    run_cli("predict", head, new, "--cache", cache)
    assert list_stores(cache)[0].n_vectors() == before + 1


def test_bundles_hold_no_pickle_and_refuse_other_configurations(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 4)).astype(np.float32), np.array(["a", "b", "c"] * 10)
    cfg = BackboneConfig("fake", "0" * 64, PreprocessConfig(32), dim=4)
    head = LogisticHead(C=1.0).fit(X, y)
    path = save_bundle(HeadBundle(head, "logreg", cfg, "ds", {"accuracy": 1.0}), tmp_path / "b.npz")
    with np.load(path, allow_pickle=False) as data:  # would raise if anything needed pickle
        assert "coef_" in data.files
    loaded = load_bundle(path)
    np.testing.assert_array_equal(loaded.head.predict_proba(X), head.predict_proba(X))
    other = BackboneConfig("fake", "1" * 64, PreprocessConfig(32), dim=4)
    with pytest.raises(BundleError, match="trained on vectors of fake.*but the data is fake"):
        loaded.check_config(other)
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary file was renamed, not left behind


def _saved_head(head: str, tmp_path):
    """A head of kind ``head`` fitted on 60 random rows of two layers (4 + 8 columns) and saved: (X, head, path)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 12)).astype(np.float32)
    y = np.array(["a", "b", "c"])[np.argmax(X[:, :3], axis=1)]
    cfg = BackboneConfig("fake", "0" * 64, PreprocessConfig(32), dim=12)
    estimator = HEADS[head](layer_widths=(4, 8)).fit(X, y)
    return X, estimator, save_bundle(HeadBundle(estimator, head, cfg, "ds"), tmp_path / "b.npz")


@pytest.mark.parametrize("head", ["logreg", "ridge", "linear-svm"])
def test_a_saved_linear_head_predicts_without_scikit_learn_and_answers_as_the_estimator(head, tmp_path):
    """Predicting is numpy only (scikit-learn and scipy cost `featx predict` a second of imports), and the
    loaded head's probabilities, classes and scores are the fitted estimator's, bit for bit."""
    import subprocess
    import sys

    X, estimator, path = _saved_head(head, tmp_path)
    np.save(tmp_path / "X.npy", X)
    script = (
        "import sys, json, numpy as np\n"
        "from featx.heads.bundles import load_bundle\n"
        "from featx.heads.workflows import top_classes\n"
        f"b = load_bundle({str(path)!r}); X = np.load({str(tmp_path / 'X.npy')!r})\n"
        f"np.save({str(tmp_path / 'P.npy')!r}, b.head.predict_proba(X))\n"
        f"np.save({str(tmp_path / 'D.npy')!r}, b.head.decision_function(X))\n"
        "top = top_classes(b, X[:2], 2)\n"
        "print(json.dumps({'top': top, 'loaded': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sklearn', 'scipy', 'torch'))}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["loaded"] == []
    np.testing.assert_array_equal(np.load(tmp_path / "P.npy"), estimator.predict_proba(X))
    np.testing.assert_array_equal(np.load(tmp_path / "D.npy"), estimator.decision_function(X))
    best = [estimator.classes_[np.argsort(-p)[:2]].tolist() for p in estimator.predict_proba(X[:2])]
    assert [[c["label"] for c in row] for row in out["top"]] == best
    loaded = load_bundle(path)
    np.testing.assert_array_equal(loaded.head.predict(X), estimator.predict(X))
    assert loaded.head.get_params()["layer_widths"] == (4, 8)
    with pytest.raises(ValueError, match="12"):
        loaded.head.predict(X[:, :5])


@pytest.mark.parametrize(
    "content,message",
    [(b"garbage", "is not a featx head bundle"), (None, "does not exist")],
)
def test_bad_bundle_files(tmp_path, content, message):
    path = tmp_path / "head.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)
    result = run_cli("evaluate", path, "x", ok=False)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_train_mistakes_are_explained(colours, tmp_path):
    root, cache = colours
    result = run_cli("train", "nope", "--cache", cache, ok=False)
    assert result.exit_code == 1 and "no dataset 'nope'" in result.output
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(6):
        noisy_image((10 * i, 0, 0), seed=i).save(flat / f"{i}.png")
    run_cli("embed", flat, "--image-size", SMALL, "--workers", 0, "--cache", cache)
    result = run_cli("train", "flat", "--cache", cache, ok=False)
    assert result.exit_code == 1 and "has no labels" in result.output
    single = tmp_path / "single"
    write_class_folder(single, per_class=6, classes={"only": (1, 2, 3)})
    run_cli("embed", single, "--image-size", SMALL, "--workers", 0, "--cache", cache)
    result = run_cli("train", "single", "--cache", cache, ok=False)
    assert result.exit_code == 1 and "single class" in result.output


def test_head_from_another_configuration_is_refused(colours, tmp_path):
    root, cache = colours
    head = tmp_path / "h.npz"
    run_cli("train", "colours", "--cache", cache, "--out", head)
    run_cli("embed", root / "data", "--name", "colours", "--image-size", 48, "--workers", 0, "--cache", tmp_path / "c2")
    result = run_cli("evaluate", head, "colours", "--cache", tmp_path / "c2", ok=False)
    assert result.exit_code == 1 and "no store for the head's backbone configuration" in result.output


def test_predict_names_unreadable_images(colours, tmp_path):
    root, cache = colours
    head = tmp_path / "h.npz"
    run_cli("train", "colours", "--cache", cache, "--out", head)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    result = run_cli("predict", head, bad, "--cache", cache, ok=False)
    assert result.exit_code == 1 and "bad.jpg: not an image" in result.output
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, colour in enumerate(("red", "green", "blue")):
        noisy_image(COLOURS[colour], seed=777 + i).save(folder / f"{colour}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    (folder / "text.jpg").write_text("not an image")
    result = run_cli("predict", head, folder, "--cache", cache)
    lines = result.stdout.splitlines()
    predicted = {Path(line.split(": ")[0]).name: line.split(": ")[1].split()[0] for line in lines}
    assert len(lines) == 3 and predicted == {"red.png": "red", "green.png": "green", "blue.png": "blue"}
    assert "skipped 2 image(s)" in result.stderr and "broken.png" in result.stderr and "text.jpg" in result.stderr
    answer = json.loads(run_cli("predict", head, folder, "--cache", cache, "--json").stdout)
    assert len(answer["results"]) == 3 and sorted(Path(f["path"]).name for f in answer["failures"]) == [
        "broken.png", "text.jpg"]
    result = run_cli("predict", head, tmp_path / "missing.jpg", "--cache", cache, ok=False)
    assert result.exit_code == 1 and "does not exist" in result.output


def test_bundles_from_before_the_scaling_option_keep_standardising(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    y = np.array(["a", "b"] * 20)
    head = LogisticHead(C=1.0, scaling="standard").fit(X, y)
    config = BackboneConfig("efficientnet_lite0", "0" * 64, PreprocessConfig(64), dim=6)
    path = save_bundle(HeadBundle(head, "logreg", config, "toy"), tmp_path / "old.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    del meta["params"]["scaling"]  # as written by featx 0.1.0 before the option existed
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    loaded = load_bundle(path)
    assert loaded.head.scaling == "standard"
    np.testing.assert_array_equal(loaded.head.predict(X), head.predict(X))


@pytest.mark.parametrize("head", ["logreg", "mlp"])
def test_a_head_saved_when_layer_widths_were_called_blocks_still_loads_and_answers_alike(head, tmp_path):
    X, estimator, path = _saved_head(head, tmp_path)
    with np.load(path) as data:  # rewrite it as featx wrote it before the rename
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    meta["params"]["blocks"] = meta["params"].pop("layer_widths")
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    loaded = load_bundle(path)
    assert loaded.head.get_params()["layer_widths"] == (4, 8)
    np.testing.assert_array_equal(loaded.head.predict_proba(X), estimator.predict_proba(X))
