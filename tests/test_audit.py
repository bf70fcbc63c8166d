"""`featx audit` as users run it: flipped labels found, leaks across splits, outliers, honest folds, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx.errors import DataError

from conftest import noisy_image, run_cli, write_class_folder


def _digits_manifest(root, n=400, flip=20, seed=0):
    """n digits as PNGs in a CSV manifest (explicit splits), ``flip`` training labels changed; plus a leak
    (one test image also in train, byte for byte), photos with a near-twin across splits,
    a noise image and a blank one. Returns the manifest and the flipped paths."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(digits.target), size=n, replace=False)
    (root / "img").mkdir(parents=True)
    rows, flipped = [], set()
    train_rows = [i for i in range(n) if i % 5]
    to_flip = set(rng.choice(train_rows, size=flip, replace=False).tolist())
    for r, i in enumerate(chosen):
        path = root / "img" / f"{r:04d}.png"
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8), "L").save(path)
        label = int(digits.target[i])
        if r in to_flip:
            label = (label + 1 + int(rng.integers(9))) % 10
            flipped.add(str(path.resolve()))
        rows.append((str(path), str(label), "test" if r % 5 == 0 else "train"))
    test = [row for row in rows if row[2] == "test"]
    exact = root / "img" / "copy-of-test.png"
    exact.write_bytes(open(test[0][0], "rb").read())
    rows.append((str(exact), test[0][1], "train"))
    # photos: twelve 160 px crops of scikit-learn's sample photos, two of them in test; a near-twin of the
    # first test crop (resized to 150 px) sits in train
    from sklearn.datasets import load_sample_images

    crops = [Image.fromarray(photo[y:y + 160, x:x + 160]) for photo in load_sample_images().images
             for y in (0, 200) for x in (0, 200, 400)]
    for c, crop in enumerate(crops):
        crop.save(root / "img" / f"photo{c}.png")
        rows.append((str(root / "img" / f"photo{c}.png"), "photo", "test" if c in (0, 7) else "train"))
    crops[0].resize((150, 150)).save(root / "img" / "twin.png")
    rows.append((str(root / "img" / "twin.png"), "photo", "train"))
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(root / "img" / "noise.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8), "L").save(root / "img" / "blank.png")
    rows += [(str(root / "img" / "noise.png"), "3", "train"), (str(root / "img" / "blank.png"), "5", "train")]
    manifest = root / "digits.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    return manifest, flipped, {"exact": str(exact.resolve()), "twin": str((root / "img" / "twin.png").resolve()),
                               "test0": str(Path(test[0][0]).resolve()),
                               "photo0": str((root / "img" / "photo0.png").resolve())}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    manifest, flipped, special = _digits_manifest(root)
    cache = root / "cache"
    run_cli("embed", manifest, "--image-size", 64, "--crop", "full", "--workers", 0, "--cache", cache)
    printed = run_cli("audit", "digits", "--cache", cache, "--out", root / "report", "--export-csv",
                      root / "reviewed.csv", "--json").output
    return root, cache, manifest, flipped, special, json.loads(printed)


def test_flipped_labels_are_found_and_ranked_first(audited):
    root, _, _, flipped, _, result = audited
    report = json.loads((root / "report" / "report.json").read_text())
    found = [f["path"] for f in report["label_issues"]]
    hits = len(set(found) & flipped)
    # floors well under what this implementation measures here (recall 0.80, precision 0.46, 10 of the top 10)
    assert hits / len(flipped) >= 0.6, (hits, len(found))
    assert hits / len(found) >= 0.35, (hits, len(found))
    top = found[:10]
    assert len(set(top) & flipped) >= 6  # the ranking puts them first
    assert result["summary"]["label_issues"] == len(found) and result["summary"]["classes"] == 11
    # every finding says what the label likely is, and ranks by increasing quality
    quality = [f["quality"] for f in report["label_issues"]]
    assert quality == sorted(quality) and all(f["suggested"] != f["given"] for f in report["label_issues"])
    assert set(report["noise_rate"]) == {*map(str, range(10)), "photo"} and report["confused_pairs"]
    assert (root / "report" / "report.png").stat().st_size > 10_000
    assert "likely label issues" in (root / "report" / "report.md").read_text()


def test_the_neighbour_check_keeps_the_flags_whose_neighbours_disagree_and_drops_fewer_flipped(audited, tmp_path):
    """With the check (the default), every flagged label is one most of the image's neighbours do not carry,
    the flags are a subset of confident learning's alone, and as many of them are flipped labels."""
    from featx.audit import audit_dataset

    root, cache, _, flipped, _, _ = audited
    checked = json.loads((root / "report" / "report.json").read_text())
    alone = audit_dataset("digits", cache=cache, neighbours=0, out=tmp_path / "alone")
    with_check = {f["path"] for f in checked["label_issues"]}
    without = {f["path"] for f in alone["label_issues"]}
    assert with_check <= without and checked["settings"]["neighbours"] == 10
    assert all(f["neighbours_agreeing"] < 0.5 for f in checked["label_issues"])
    precision = lambda found: len(found & flipped) / max(len(found), 1)  # noqa: E731
    # the grid recipe's flags mostly lack neighbour support already (the check dropped 1 of 19 here on
    # 2026-12-06, a flipped one: 0.778 against 0.789): precision stays within 0.02
    assert precision(with_check) >= precision(without) - 0.02
    assert len(with_check & flipped) >= 0.9 * len(without & flipped)  # recall stays


def test_neighbour_agreement_counts_the_neighbours_that_share_a_label():
    from featx.audit.confident import neighbour_agreement

    given = np.array([0, 0, 1, 1])
    neighbours = np.array([[0, 1, 2], [1, 0, -1], [2, 0, 1], [3, 0, 1]])  # itself first; -1: none
    np.testing.assert_allclose(neighbour_agreement(neighbours, given), [0.5, 1.0, 0.0, 0.0])


def test_leaks_across_splits_and_outliers_are_reported(audited):
    root, _, _, _, special, _ = audited
    report = json.loads((root / "report" / "report.json").read_text())
    exact = [f for f in report["leaks"] if f["kind"] == "exact_leak"]
    assert len(exact) == 1 and sorted(exact[0]["splits"]) == ["test", "train"]
    assert set(exact[0]["paths"]) == {special["exact"], special["test0"]}
    near = [f for f in report["leaks"] if f["kind"] == "near_leak"]
    assert (near[0]["path"], near[0]["train_path"]) == (special["photo0"], special["twin"])  # the most similar
    assert near[0]["similarity"] > 0.97
    # among the digits, the noise and the blank image are the farthest from everything (photos are far too)
    ranked = [f["path"].rsplit("/", 1)[-1] for f in report["outliers"]]
    top = [name for name in ranked if not name.startswith(("photo", "twin"))][:2]
    assert sorted(top) == ["blank.png", "noise.png"], ranked[:16]


def test_the_exported_manifest_feeds_back_without_embedding_again(audited):
    root, cache, _, _, _, result = audited
    rows = list(csv.DictReader(open(root / "reviewed.csv")))
    assert list(rows[0]) == ["path", "label", "split", "suggested_label"] and len(rows) == 416
    suggested = {r["path"]: r["suggested_label"] for r in rows if r["suggested_label"]}
    assert len(suggested) == result["summary"]["label_issues"]
    for r in rows:  # a reviewer accepts every suggestion
        r["label"] = r["suggested_label"] or r["label"]
    with open(root / "accepted.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    again = json.loads(run_cli("embed", root / "accepted.csv", "--image-size", 64, "--crop", "full", "--workers", 0,
                               "--cache", cache, "--json").output)
    assert again["n_embedded"] == 0 and again["n_reused"] == 416


def test_out_of_fold_probabilities_never_come_from_a_head_that_saw_the_row(monkeypatch):
    from featx.audit import oof
    from featx.heads import LogisticHead

    seen = []

    class Recording(LogisticHead):
        def fit(self, X, y):
            seen.append({"fit": {tuple(r) for r in X}})
            return super().fit(X, y)

        def predict_proba(self, X):
            seen[-1]["predict"] = {tuple(r) for r in X}
            return super().predict_proba(X)

    from featx.heads.registry import HEADS

    monkeypatch.setitem(HEADS, "logreg", Recording)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    X[60:] += 2.0
    y = np.array(["a"] * 60 + ["b"] * 60)
    keys = [f"k{i}" for i in range(120)]
    X[1], keys[1] = X[0], keys[0]  # one image twice: both copies must be held out together
    result = oof.out_of_fold_probabilities(X, y, folds=4, groups=keys)
    assert len(seen) == 4 and result.proba.shape == (120, 2)
    for fold in seen:
        assert not fold["fit"] & fold["predict"]
    predicted = set().union(*(f["predict"] for f in seen))
    assert predicted == {tuple(r) for r in X}
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0, atol=1e-5)


def test_datasets_an_audit_cannot_judge_get_clear_errors(tmp_path):
    from featx.audit.oof import choose_folds

    cache = tmp_path / "cache"
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(6):
        noisy_image((100, 100, 100), seed=i).save(flat / f"{i}.png")
    run_cli("embed", flat, "--image-size", 32, "--workers", 0, "--cache", cache)
    result = run_cli("audit", "flat", "--cache", cache, ok=False)
    assert result.exit_code == 1 and "no labels" in result.output
    one = write_class_folder(tmp_path / "one", per_class=6, classes={"red": (220, 30, 30)})
    run_cli("embed", one, "--image-size", 32, "--workers", 0, "--cache", cache)
    result = run_cli("audit", "one", "--cache", cache, ok=False)
    assert result.exit_code == 1 and "at least two classes" in result.output
    assert choose_folds(np.array(["a"] * 10 + ["b"] * 3), 5) == (3, "5 folds asked for, but class 'b' has only 3 "
                                                                    "images: used 3 folds.")
    with pytest.raises(DataError, match="'b'"):
        choose_folds(np.array(["a"] * 10 + ["b"]), 5)
    small = write_class_folder(tmp_path / "small", per_class=3)
    run_cli("embed", small, "--image-size", 32, "--workers", 0, "--cache", cache)
    result = run_cli("audit", "small", "--cache", cache, "--json")
    assert "used 3 folds" in json.loads(result.stdout)["note"]


def test_confident_learning_on_a_known_joint():
    from featx.audit.confident import calibrate, confident_joint, find_label_issues

    # Three rows labelled 0, one of which the model is sure is class 1; two labelled 1.
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.05, 0.95], [0.2, 0.8], [0.1, 0.9]])
    given = np.array([0, 0, 0, 1, 1])
    # thresholds: class 0: mean(0.9, 0.8, 0.05) = 0.583; class 1: mean(0.8, 0.9) = 0.85
    assert confident_joint(proba, given).tolist() == [[2, 1], [0, 1]]
    Q = calibrate(confident_joint(proba, given), given)
    np.testing.assert_allclose(Q, np.array([[2, 1], [0, 2]]) / 5)
    issues = find_label_issues(proba, given)
    assert issues.rows.tolist() == [2] and issues.suggested[2] == 1
    np.testing.assert_allclose(issues.noise_rate, [1 / 3, 0.0])


def test_outliers_of_a_large_collection_come_from_candidates_reranked_exactly(monkeypatch):
    """Above EXACT_BELOW rows the k-th neighbour is found among candidates from a reduced space, re-ranked
    by exact cosine: the planted outliers still rank first, and nearly every distance is the exact one."""
    from featx.audit import outliers
    from featx.search.flat import normalize

    rng = np.random.default_rng(0)  # like a backbone's vectors: a few strong directions, weak ones beyond
    basis = rng.standard_normal((24, 256)) * np.linspace(3, 1, 24)[:, None]
    latent = rng.standard_normal((20, 24))[rng.integers(0, 20, 4000)] + 0.5 * rng.standard_normal((4000, 24))
    X = latent @ basis + 0.3 * rng.standard_normal((4000, 256))
    X[:8] = rng.standard_normal((8, 256)) * 3  # far from every cluster
    X = normalize(X)
    exact, _ = outliers.find_outliers(X, 5)
    monkeypatch.setattr(outliers, "EXACT_BELOW", 1000)
    monkeypatch.setattr(outliers, "REDUCED_DIMS", 32)
    approx, z = outliers.find_outliers(X, 5)
    assert set(np.argsort(-approx)[:8]) == set(range(8)) == set(np.argsort(-exact)[:8])
    assert np.all(approx >= exact - 1e-5)  # neighbours found among candidates are never nearer than the true ones
    assert np.mean(np.abs(approx - exact) < 1e-5) > 0.95


def test_near_leaks_of_a_large_collection_come_from_candidates_and_equal_the_exact_ones(monkeypatch):
    """Above EXACT_BELOW training images, each test image's nearest training image comes from candidates re-ranked
    by exact cosine (all against all took hours at a million): the planted near-twins are the ones found exactly,
    members sharing one vector (``rows``) included, and an exact copy stays an exact leak, not a near one."""
    from featx.audit import leaks, outliers
    from featx.search.flat import normalize

    rng = np.random.default_rng(1)
    basis = rng.standard_normal((24, 256)) * np.linspace(3, 1, 24)[:, None]
    latent = rng.standard_normal((20, 24))[rng.integers(0, 20, 3000)] + 0.5 * rng.standard_normal((3000, 24))
    X = normalize(latent @ basis + 0.3 * rng.standard_normal((3000, 256)))
    splits = np.where(np.arange(3000) % 7 == 0, "test", "train")
    held = np.flatnonzero(splits == "test")
    X[held[:12]] = normalize(X[held[:12] + 1] + 0.004 * rng.standard_normal((12, 256)))  # twins of a training image
    rows = np.concatenate([np.arange(3000), [held[20], 5]])  # a test image listed twice, a training one in test
    keys = [f"k{r}" for r in rows]
    member_splits = np.concatenate([splits, ["test", "test"]])
    args = (X, keys, member_splits, [None] * len(rows), [f"p{i}" for i in range(len(rows))], 0.99)
    exact = leaks.near_leaks(*args, rows=rows)
    monkeypatch.setattr(outliers, "EXACT_BELOW", 500)
    monkeypatch.setattr(outliers, "REDUCED_DIMS", 32)
    searched = []

    def spy(vectors, among, queries, k, seed=0):
        searched.append((len(among), len(queries)))
        return outliers.nearest_among(vectors, among, queries, k, seed)

    monkeypatch.setattr(leaks, "nearest_among", spy)
    approx = leaks.near_leaks(*args, rows=rows)
    assert searched == [(2571, 430)]  # distinct vectors: 2,571 training ones, 429 test ones and one on both sides
    assert {(f["key"], f["train_key"]) for f in exact} >= {(f"k{h}", f"k{h + 1}") for h in held[:12]}
    assert [(f["key"], f["train_key"], f["similarity"]) for f in approx] == \
        [(f["key"], f["train_key"], f["similarity"]) for f in exact]
    assert all(f["key"] != "k5" for f in approx)  # the training image also in test: an exact leak


def test_a_large_collection_is_audited_from_the_store_without_a_copy(audited, monkeypatch, tmp_path):
    """Past COPY_BYTES the audit reads the distinct vectors where they lie (StoredRows): no stage reads more
    than a block of them at once, nothing normalises them all, and the report is the one the copy gives."""
    from featx.audit import outliers, runner
    from featx.heads import folds, rows
    from featx.store import view

    _, cache, _, _, _, _ = audited
    # every stage at its large-collection setting, on this small dataset: streamed heads, bounded blocks
    monkeypatch.setattr(rows, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(rows, "BLOCK_BYTES", 64 * 1280 * 4)
    monkeypatch.setattr(folds, "HELD_BYTES", 32 * 1280 * 4)
    monkeypatch.setattr(outliers, "EXACT_BELOW", 100)
    monkeypatch.setattr(outliers, "RERANK_BYTES", 16 * 32 * 1280 * 4)
    copied = runner.audit_dataset("digits", cache=cache, out=tmp_path / "copy")
    reads, whole = [], []
    read = view.StoredRows.__getitem__
    monkeypatch.setattr(view.StoredRows, "__getitem__", lambda self, i: reads.append(np.size(i)) or read(self, i))
    normalised = view.VectorView.normalised
    monkeypatch.setattr(view.VectorView, "normalised", lambda self, keys: whole.append(len(keys)) or normalised(self, keys))
    monkeypatch.setattr(runner, "COPY_BYTES", 0)
    streamed = runner.audit_dataset("digits", cache=cache, out=tmp_path / "streamed")
    n = streamed["summary"]["distinct"]
    # blocks as the knobs bound them (re-ranking gathers at least 64 queries' 32 candidates), never all rows normalised
    assert reads and max(reads) <= 64 * 32 and not [k for k in whole if k >= n // 2]
    for part in ("label_issues", "leaks", "outliers"):  # the same findings; two of equal quality (to 1e-5) may swap
        assert sorted(f.get("key") for f in streamed[part]) == sorted(f.get("key") for f in copied[part])
    # 320 rows a fold take C = 1 (few held-out rows): a weakly regularised fit stops, at its tolerance, a little
    # elsewhere when its sums run in another order, so the smallest probabilities differ in their second digit
    assert np.allclose(sorted(f["quality"] for f in streamed["label_issues"]),
                       sorted(f["quality"] for f in copied["label_issues"]), atol=0.02)
    assert np.allclose([f["distance"] for f in streamed["outliers"]], [f["distance"] for f in copied["outliers"]],
                       atol=1e-5)


def test_normalised_rows_read_as_the_normalised_copy(tmp_path):
    """Indexing StoredRows (a slice, positions, a 2-D array of them, a mask) gives the normalised copy's rows."""
    from featx.config import BackboneConfig, PreprocessConfig
    from featx.store import Member, open_store
    from featx.store.view import VectorView

    config = BackboneConfig(name="fake", weights_sha256="0" * 64, preprocess=PreprocessConfig(32), dim=24,
                            layers=("a", "final"), layer_dims=(8, 16))
    X = np.random.default_rng(0).standard_normal((50, 24)).astype(np.float32) * 3
    keys = [f"{i:064x}" for i in range(50)]
    with open_store(config, tmp_path) as store:
        with store.writing():
            store.add(keys[:30], X[:30])
            store.record_dataset("ds", "t", [Member(k, f"/p/{i}", "x", "train") for i, k in enumerate(keys[:30])])
        with store.writing():  # a second shard
            store.add(keys[30:], X[30:])
            store.record_dataset("ds", "t", [Member(k, f"/p/{i}", "x", "train") for i, k in enumerate(keys)])
        view = VectorView(store, "ds")
        order = keys[::-1]
        copy, rows = view.normalised(order), view.rows(order)
        assert rows.shape == copy.shape and len(rows) == 50
        for index in (slice(3, 40, 2), np.array([49, 0, 31, 30]), np.array([[1, 2], [45, 3]]), np.arange(50) % 3 == 0):
            assert np.array_equal(rows[index], copy[index])
        assert np.allclose(np.linalg.norm(rows[:5], axis=1), 1.0, atol=1e-6)
        for whole in (np.asarray, list, lambda r: r[3]):  # never all of them at once, nor one by one
            with pytest.raises(TypeError, match="a block at a time"):
                whole(rows)


def test_an_audit_of_a_final_layer_store_says_the_default_recipe_would_audit_better(tmp_path, audited):
    _, _, _, _, _, result = audited
    assert result["recipe_note"] is None  # the default recipe: every stage over a 2×2 grid
    folder = write_class_folder(tmp_path / "few", per_class=8, classes={
        "red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 40)})
    cache = tmp_path / "cache"
    run_cli("embed", folder, "--image-size", 32, "--layers", "final", "--workers", 0, "--cache", cache)
    printed = run_cli("audit", "few", "--cache", cache, "--out", tmp_path / "report")
    assert "note: 'few' is stored with the final layer only" in printed.stderr
    assert "layers=grid" in (tmp_path / "report" / "report.md").read_text()


def test_an_audit_of_a_folder_not_yet_embedded_embeds_it_first_and_says_so(tmp_path):
    folder = write_class_folder(tmp_path / "fresh", per_class=8, classes={
        "red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 40)})
    cache = tmp_path / "cache"
    first = run_cli("audit", folder, "--image-size", 32, "--cache", cache, "--out", tmp_path / "r1")
    assert "note: " in first.stderr and "was in no store: embedded it first (24 images" in first.stderr
    assert "fresh: 24 images, 3 classes" in first.stdout
    report = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert report["embedded"]["n_embedded"] == 24 and report["embedded"]["dataset"] == "fresh"
    assert report["layers"][-1] == "final" and len(report["layers"]) > 1  # the default recipe: every stage
    # now it is stored: the folder's name audits it, and nothing is embedded again
    again = json.loads(run_cli("audit", "fresh", "--image-size", 32, "--cache", cache, "--out", tmp_path / "r2",
                               "--json").stdout)
    assert again["embedded"] is None and again["summary"]["images"] == 24
    # a name that is neither stored nor a source keeps the store's own error
    result = run_cli("audit", "no-such-thing", "--cache", cache, ok=False)
    assert result.exit_code == 1 and "no dataset 'no-such-thing'" in result.output
