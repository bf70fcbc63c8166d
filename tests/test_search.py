"""FAISS indexes against brute force on seeded data; search and duplicates through the CLI."""

from __future__ import annotations

import os

import json

import numpy as np
import pytest
from PIL import Image

from featx.errors import SearchError as IndexError_
from featx.search.index import build_index, load_index, recall_at_k, save_index
from featx.search.flat import normalize

from conftest import noisy_image, run_cli


def clustered(n=3000, d=32, centres=30, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    return (c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


def brute_force(X, Q, k):
    S = normalize(Q) @ normalize(X).T
    I = np.argsort(-S, axis=1)[:, :k]
    return np.take_along_axis(S, I, 1), I


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_every_kind_agrees_with_brute_force(kind):
    data = clustered(n=3200)
    X, Q = data[:3000], data[3000:]  # queries from the same distribution, outside the collection
    keys = [f"k{i}" for i in range(len(X))]
    vi = build_index(X, keys, kind, n_queries=300)
    D, I = vi.search(Q, 10)
    row_of_id = np.array([int(k[1:]) for k in vi.keys])  # ids follow the order vectors were added
    I = row_of_id[I]
    Dt, It = brute_force(X, Q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, It)])
    if kind == "flat":
        np.testing.assert_array_equal(I, It)
        np.testing.assert_allclose(D, Dt, atol=1e-5)
    else:
        assert recall >= 0.9 and vi.recall_at_10 >= 0.95
        # every score returned is the true cosine of that pair
        np.testing.assert_allclose(D, np.take_along_axis(normalize(Q) @ normalize(X).T, I, 1), atol=1e-5)


def test_a_saved_index_and_the_rows_added_since_answer_as_one():
    from featx.search.dataset_index import LiveIndex

    data = clustered(n=3300)
    X, Q = data[:3000], data[3000:]
    keys = np.array([f"k{i}" for i in range(len(X))])
    saved = build_index(X[:2900], keys[:2900], "hnsw", n_queries=200)
    both = LiveIndex(saved, build_index(X[2900:], keys[2900:], "flat"))
    assert both.n == 3000 and sorted(both.keys) == sorted(keys) and list(both.keys[2900:]) == list(keys[2900:])
    D, I = both.search(Q, 10)
    _, It = brute_force(X, Q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(both.keys[I], keys[It])]) >= 0.9
    assert np.all(np.diff(D, axis=1) <= 1e-6)  # best first across both parts
    D, I = both.search(X[2950:], 1)  # a new row is its own nearest: the new rows are searched exactly
    assert list(both.keys[I[:, 0]]) == list(keys[2950:])
    assert both.search(Q[:3], 150)[1].shape == (3, 150)  # more than the new rows hold
    with pytest.raises(IndexError_, match="between 1 and the collection size"):
        both.search(Q[:1], 3001)


def test_featx_index_says_when_new_vectors_need_a_rebuild_and_rebuilds(shapes, monkeypatch):
    """Adding 100+ vectors retunes the index on (a sample of TUNE_QUERIES of) them; when even its highest effort misses
    the target, it says so."""
    from featx.search import dataset_index

    run_cli("index", "shapes", "--kind", "hnsw")
    more = shapes / "more"
    more.mkdir()
    for i in range(100):
        noisy_image((i, 255 - i, 7 * i % 256), seed=500 + i, size=(48, 40)).save(more / f"{i}.png")
    run_cli("embed", shapes, "--image-size", 128, "--workers", 0)

    asked = []

    def poor_tuning(vi, queries, truth, *, target_recall):  # what a drifted index measures at its highest effort
        asked.append((len(queries), truth.shape))
        vi.recall_at_10 = 0.5

    real = dataset_index.tune_index
    monkeypatch.setattr(dataset_index, "tune_index", poor_tuning)
    monkeypatch.setattr(dataset_index, "TUNE_QUERIES", 40)
    added = run_cli("index", "shapes")
    assert asked == [(40, (40, 10))]  # a sample of the new vectors, with their exact neighbours
    assert "(added)" in added.output and "recall@10 0.500" in added.output
    assert "note: 40 of the new vectors reach recall@10 0.500" in added.output and "--rebuild" in added.output
    monkeypatch.setattr(dataset_index, "tune_index", real)
    rebuilt = json.loads(run_cli("index", "shapes", "--rebuild", "--json").stdout)
    assert (rebuilt["action"], rebuilt["n"], rebuilt["note"]) == ("built", 115, "")


def test_auto_picks_exact_for_small_and_tuned_hnsw_for_large():
    small = build_index(clustered(n=500), [str(i) for i in range(500)], "auto")
    assert small.kind == "flat" and small.recall_at_10 == 1.0
    X = clustered(n=21000, d=16, centres=200)
    big = build_index(X, [str(i) for i in range(len(X))], "auto", n_queries=300)
    assert big.kind == "hnsw" and big.recall_at_10 >= 0.95 and big.params["efSearch"] >= 16
    outside = clustered(n=21300, d=16, centres=200)[21000:]  # same seed: same centres, new points
    in_id_order = normalize(X)[big.keys.astype(int)]
    assert recall_at_k(big, in_id_order, normalize(outside)) >= 0.93


def test_save_load_round_trip_and_corrupt_file(tmp_path):
    X = clustered(n=400)
    vi = build_index(X, [f"k{i}" for i in range(400)], "hnsw", n_queries=100)
    path = save_index(vi, tmp_path / "i.npz")
    back = load_index(path)
    assert back.kind == "hnsw" and back.params == vi.params and sorted(back.keys) == sorted(vi.keys)
    np.testing.assert_array_equal(back.search(X[:5], 3)[1], vi.search(X[:5], 3)[1])
    _, I = back.search(X[:5], 1)  # ids map back to the right keys
    assert list(back.keys[I[:, 0]]) == ["k0", "k1", "k2", "k3", "k4"]
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(IndexError_, match="not a readable featx index"):
        load_index(tmp_path / "bad.npz")
    with pytest.raises(IndexError_, match="k must be between 1 and"):
        back.search(X[:1], 401)


@pytest.fixture
def shapes(tmp_path, cache):
    """Tiles of scikit-learn's sample photos, plus re-encoded, resized and cropped copies of one."""
    from sklearn.datasets import load_sample_images

    folder = tmp_path / "shapes"
    folder.mkdir()
    photos = load_sample_images().images
    for i in range(12):
        photo = photos[i % 2]
        y, x = 40 + 120 * ((i // 2) // 3), 40 + 180 * ((i // 2) % 3)
        Image.fromarray(photo[y : y + 150, x : x + 150]).save(folder / f"img{i:02d}.png")
    original = Image.open(folder / "img00.png").convert("RGB")
    original.save(folder / "copy_q60.jpg", quality=60)
    original.resize((110, 110)).save(folder / "copy_small.png")
    original.crop((6, 6, 144, 144)).save(folder / "copy_crop.png")
    run_cli("embed", folder, "--image-size", 128, "--workers", 0)
    return folder


def test_search_by_id_and_by_file(shapes, tmp_path):
    out = json.loads(run_cli("search", "shapes", shapes / "img03.png", "-k", 3, "--json").stdout)
    assert out[0]["results"][0]["path"].endswith("img03.png") and out[0]["results"][0]["similarity"] > 0.999
    assert [r["rank"] for r in out[0]["results"]] == [1, 2, 3]
    assert all(r["score"] == r["similarity"] for r in out[0]["results"])  # the old name, kept for one release
    key = out[0]["results"][0]["key"]
    by_id = json.loads(run_cli("search", "shapes", f"id:{key[:12]}", "-k", 2, "--json").stdout)
    assert by_id[0]["results"][0]["key"] == key
    text = run_cli("search", "shapes", f"id:{key}", "-k", 2)
    assert "exact search" in text.stderr and "img03.png" in text.stdout


def test_index_then_search_and_incremental_add(shapes, tmp_path):
    first = json.loads(run_cli("index", "shapes", "--json").stdout)
    assert (first["kind"], first["n"], first["dim"], first["recall_at_10"]) == ("flat", 15, 3328, 1.0)
    assert {"dataset", "build_seconds", "bytes", "params", "path"} <= set(first)
    noisy_image((1, 2, 3), seed=777, size=(96, 80)).save(shapes / "new.png")
    run_cli("embed", shapes, "--image-size", 128, "--workers", 0)
    # before the index holds it, the new image is searched exactly beside the index, and found
    stale = run_cli("search", "shapes", shapes / "new.png", "-k", 1)
    assert "1 vectors added since the index was built are searched exactly" in stale.stderr
    assert "new.png" in stale.stdout
    before = json.loads(run_cli("search", "shapes", shapes / "new.png", shapes / "img03.png", "-k", 5,
                                "--json").stdout)
    again = json.loads(run_cli("index", "shapes", "--json").stdout)
    assert (again["n"], again["action"]) == (16, "added")
    found = json.loads(run_cli("search", "shapes", shapes / "new.png", shapes / "img03.png", "-k", 5,
                               "--json").stdout)
    assert found[0]["results"][0]["path"].endswith("new.png")
    assert [[(r["key"], round(r["similarity"], 4)) for r in q["results"]] for q in before] == \
        [[(r["key"], round(r["similarity"], 4)) for r in q["results"]] for q in found]  # the same answers


def test_removed_images_stay_out_of_answers_without_a_rebuild(shapes):
    """Files removed from a folder since its index was built: `featx search` answers from the saved index
    without them (not by exact search), and `featx index` keeps the index, saying so, instead of rebuilding."""
    run_cli("index", "shapes", "--json")
    every = json.loads(run_cli("search", "shapes", shapes / "img03.png", "-k", 15, "--json").stdout)[0]["results"]
    gone = [r for r in every if r["path"].endswith(("img05.png", "copy_small.png"))]
    for r in gone:
        os.remove(r["path"])
    run_cli("embed", shapes, "--image-size", 128, "--workers", 0)
    after = run_cli("search", "shapes", shapes / "img03.png", "-k", 13, "--json")
    results = json.loads(after.stdout)[0]["results"]
    assert "exact search" not in after.stderr
    assert [r["key"] for r in results] == [r["key"] for r in every if r not in gone]  # the others, in order
    kept = json.loads(run_cli("index", "shapes", "--json").stdout)
    assert kept["action"] == "unchanged" and kept["n"] == 15 and "2 vectors no longer in 'shapes'" in kept["note"]
    again = json.loads(run_cli("search", "shapes", shapes / "img03.png", "-k", 13, "--json").stdout)[0]["results"]
    assert [r["key"] for r in again] == [r["key"] for r in results]
    assert run_cli("search", "shapes", shapes / "img03.png", "-k", 14, ok=False).exit_code != 0  # 13 are left
    groups = json.loads(run_cli("duplicates", "shapes", "--json").stdout)
    paths = [i["path"] for g in groups for i in g["items"]]
    assert any(p.endswith("copy_q60.jpg") for p in paths) and not any(p.endswith("copy_small.png") for p in paths)
    rebuilt = json.loads(run_cli("index", "shapes", "--rebuild", "--json").stdout)
    assert (rebuilt["action"], rebuilt["n"]) == ("built", 13)


def test_a_saved_index_leaves_removed_rows_out_of_its_answers():
    """LiveIndex asks the saved index for as many more as it holds removed rows and drops them: the answers are
    the exact ones over the rows left (for an exact index), also for a query that is a removed row itself."""
    from featx.search.dataset_index import LiveIndex

    X = clustered(n=500)
    keys = np.array([f"k{i}" for i in range(len(X))])
    removed = np.arange(0, 500, 9)
    live = LiveIndex(build_index(X, keys, "flat"), None, removed)
    left = np.setdiff1d(np.arange(500), removed)
    assert live.n == len(left)
    D, I = live.search(X[:40], 10)
    Dt, It = brute_force(X[left], X[:40], 10)
    assert (live.keys[I] == keys[left][It]).all()
    np.testing.assert_allclose(D, Dt, atol=1e-5)
    assert not np.isin(I, removed).any()


def test_duplicates_finds_the_copies(shapes):
    groups = json.loads(run_cli("duplicates", "shapes", "--threshold", "0.9", "--json").stdout)
    names = [sorted(i["path"].rsplit("/", 1)[-1] for i in g["items"]) for g in groups]
    assert ["copy_crop.png", "copy_q60.jpg", "copy_small.png", "img00.png"] in names
    assert all(0.9 <= g["min_similarity"] == g["min_score"] <= 1.0 for g in groups)
    assert all("img05.png" not in n for n in names)


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "nope", "id:abc"], "no dataset 'nope'"),
        (["search", "shapes", "id:0123456789abcdef"], "is not a sample of this dataset"),
        (["search", "shapes", "id:x", "-k", "0"], "-k must be between 1"),
        (["search", "shapes", "id:x", "-k", "999"], "-k must be between 1"),
        (["search", "shapes", "{bad}"], "bad.jpg: not an image"),
        (["index", "shapes", "--kind", "lsh"], "Invalid value for '--kind'"),
        (["duplicates", "shapes", "--threshold", "2"], "--threshold must be in"),
    ],
)
def test_search_mistakes_are_explained(shapes, tmp_path, args, message):
    (tmp_path / "bad.jpg").write_text("nope")
    args = [a.format(bad=tmp_path / "bad.jpg") for a in args]
    result = run_cli(*args, ok=False)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_flat_search_on_arrays_matches_brute_force():
    from featx.search.flat import flat_search

    data = clustered(n=600)
    D, I = flat_search(normalize(data[:500]), normalize(data[500:]), 5)
    Dt, It = brute_force(data[:500], data[500:], 5)
    np.testing.assert_array_equal(I, It)
    np.testing.assert_allclose(D, Dt, atol=1e-5)


def test_index_from_another_configuration_is_refused(shapes, tmp_path):
    import shutil

    from featx.store import list_stores

    run_cli("index", "shapes")
    run_cli("embed", shapes, "--image-size", 96, "--workers", 0)
    stores = {s.config.preprocess.input_size: s for s in list_stores(os.environ["FEATX_CACHE"])}
    src = next(stores[128].path.glob("indexes/*.npz"))
    (stores[96].path / "indexes").mkdir()
    shutil.copy(src, stores[96].path / "indexes" / src.name)
    result = run_cli("search", "shapes", "id:x", "--image-size", 96, ok=False)
    assert result.exit_code == 1 and "built for another backbone configuration" in result.output
