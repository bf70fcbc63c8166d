"""Indexes chosen under a memory budget: never over it, the target recall when reachable, the best otherwise."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from conftest import run_cli
from featx.config import BackboneConfig, PreprocessConfig
from featx.errors import ParameterError, SearchError
from featx.search import budget
from featx.search.budget import choose_index, estimate_bytes, parse_bytes
from featx.search.index import index_nbytes, load_index, reranked
from featx.search.flat import flat_search, normalize
from featx.store import Member, open_store

D = 32


def clustered(n=3000, d=D, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d))
    X = centres[rng.integers(0, 40, n)] + 0.35 * rng.standard_normal((n, d))
    return normalize(X.astype(np.float32))


def recall_of(index, order, X, n_queries=300):
    """recall@10 of the built index for vectors of the collection, against exact search (ids → positions)."""
    Q = X[:n_queries]
    _, truth = flat_search(X, Q, 10)
    _, found = index.search(Q, 10)
    found = np.where(found >= 0, order[np.maximum(found, 0)], -1)
    return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())])


def test_sizes_parse_as_people_write_them():
    assert parse_bytes("256MB") == 256_000_000 and parse_bytes("1.5GiB") == int(1.5 * 2**30)
    assert parse_bytes("300 kb") == 300_000 and parse_bytes(4096) == 4096
    for bad in ("lots", "12 parsecs", "0MB", "-5MB"):
        with pytest.raises(ParameterError, match="max_memory"):
            parse_bytes(bad)


@pytest.mark.parametrize("budget", [2_000_000, 300_000, 150_000, 90_000])
def test_the_chosen_index_never_exceeds_its_budget(budget):
    X = clustered()
    index, order, chosen, tried = choose_index(lambda rows: X[rows], len(X), D, budget, target_recall=0.9)
    assert int(faiss.serialize_index(index).nbytes) <= budget
    assert chosen.bytes <= budget and index.ntotal == len(X) and sorted(order) == list(range(len(X)))
    assert all(c.bytes is None or c.bytes <= budget or c.outcome == "over budget" for c in tried)
    assert chosen.outcome.startswith("chosen") and [c.outcome for c in tried].count(chosen.outcome) == 1


def test_a_reachable_target_is_met_by_the_most_faithful_index_that_fits():
    X = clustered()
    # Exact search does not fit; the IVF and scalar-quantised ones do and reach 0.9.
    budget = estimate_bytes("Flat", len(X), D) - 1
    index, order, chosen, tried = choose_index(lambda rows: X[rows], len(X), D, budget, target_recall=0.9)
    assert chosen.factory != "Flat" and chosen.outcome == "chosen"
    assert chosen.recall_at_10 >= 0.9
    assert recall_of(index, order, X) >= 0.85  # measured again on queries it was not tuned on
    assert tried[0].outcome == "over budget (estimated)"


def test_an_unreachable_target_gives_the_best_recall_the_budget_allows(monkeypatch):
    # Re-ranking 32 x 10 of 3,000 vectors reaches any target: here the codes re-rank only their own top 10.
    monkeypatch.setattr(budget, "RERANKS", (1,))
    X = clustered()
    index, order, chosen, tried = choose_index(lambda rows: X[rows], len(X), D, 90_000, target_recall=0.999)
    assert chosen.outcome == "chosen (best the budget allows)" and chosen.recall_at_10 < 0.999
    built = [c for c in tried if c.recall_at_10 is not None]
    assert chosen.recall_at_10 == max(c.recall_at_10 for c in built)


def test_a_budget_below_every_index_says_what_is_needed():
    X = clustered()
    with pytest.raises(SearchError, match=r"fits in 10 kB: the smallest, IVF\d+,PQ\d+(np|x4fs), needs about \d+ kB. Raise max_memory="):
        choose_index(lambda rows: X[rows], len(X), D, 10_000)


def stored_dataset(cache, n=2500):
    """Clustered vectors stored as dataset "ds" in a store of their own under ``cache``: (X, keys)."""
    X = clustered(n=n)
    config = BackboneConfig(name="fake", weights_sha256="0" * 64, preprocess=PreprocessConfig(32), dim=D)
    store = open_store(config, cache)
    keys = [f"{i:064x}" for i in range(len(X))]
    with store.writing():
        store.add(keys, X)
        store.record_dataset("ds", "t", [Member(k, f"/p/{i}", str(i % 3), "train") for i, k in enumerate(keys)])
    return X, keys


def test_featx_index_with_max_memory_end_to_end(tmp_path):
    X, keys = stored_dataset(tmp_path)
    report = json.loads(run_cli("index", "ds", "--cache", tmp_path, "--max-memory", "150KB", "--target-recall", "0.9",
                                "--json").output)
    assert report["bytes"] <= 150_000 and report["kind"].startswith("budget: ")
    assert {c["outcome"] for c in report["choices"]} >= {"over budget (estimated)"}
    hits = json.loads(run_cli("search", "ds", f"id:{keys[7]}", "-k", 5, "--cache", tmp_path, "--json").output)
    assert hits[0]["results"][0]["key"] == keys[7]
    again = json.loads(run_cli("index", "ds", "--cache", tmp_path, "--json").output)  # keeps its budget
    assert again["kind"].startswith("budget: ") and again["params"]["max_memory"] == 150_000
    text = run_cli("index", "ds", "--cache", tmp_path, "--max-memory", "150KB").output
    assert "outcome" in text and "saved:" in text
    refused = run_cli("index", "ds", "--cache", tmp_path, "--max-memory", "150KB", "--kind", "hnsw", ok=False)
    assert refused.exit_code != 0 and "--max-memory" in refused.output


def test_compressed_codes_reranked_from_the_exact_vectors_answer_as_exact_search():
    X = clustered()
    # Under the scalar-quantised index's size: only codes fit, and 4-bit codes get there by re-ranking.
    lists = budget.coarse_lists(len(X))
    cap = estimate_bytes(f"IVF{lists},SQ8", len(X), D) - 1
    index, order, chosen, tried = choose_index(lambda rows: X[rows], len(X), D, cap, target_recall=0.95)
    assert chosen.factory.endswith("x4fs") and chosen.rerank and chosen.outcome == "chosen"
    assert chosen.bytes <= cap and chosen.recall_at_10 >= 0.95
    exact = lambda ids: X[order[ids]]  # noqa: E731  (index ids → positions in X)
    Q = X[:200]
    _, truth = flat_search(X, Q, 10)
    # codes alone, at the tuned effort: re-ranking is what reaches the target
    assert recall_of(index, order, X, n_queries=200) < 0.95
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = ivf.nlist  # every list, and deep enough: every true neighbour is among the candidates
    scores, found = reranked(index, Q, 10, 32, exact)
    assert [set(order[f].tolist()) for f in found] == [set(t.tolist()) for t in truth]
    exact_scores = np.einsum("qd,qkd->qk", Q, X[order[found]])  # the scores are exact, best first
    assert np.allclose(scores, exact_scores, atol=1e-5) and (np.diff(scores, axis=1) <= 1e-7).all()


def test_one_bit_codes_are_chosen_between_the_4_bit_codes_and_keep_their_query_bits(tmp_path):
    """RaBitQ, a bit a dimension re-ranked from the store, is tried after the largest 4-bit codes: under a budget
    they do not fit it reaches the target, and the query bits it was tuned with come back with the saved index."""
    from featx.search.index import VectorIndex, save_index

    X = clustered(n=4000, d=64)
    lists = budget.coarse_lists(len(X))
    factories = [c.factory for c in budget.candidates(len(X), 64)]
    assert factories.index(f"IVF{lists},RaBitQ") == factories.index(f"IVF{lists},PQ32x4fs") + 1
    cap = estimate_bytes(f"IVF{lists},PQ32x4fs", len(X), 64) - 1
    index, order, chosen, tried = choose_index(lambda rows: X[rows], len(X), 64, cap, target_recall=0.95)
    assert chosen.factory == f"IVF{lists},RaBitQ" and chosen.rerank and chosen.recall_at_10 >= 0.95
    assert chosen.bytes <= cap
    vi = VectorIndex(index=index, keys=np.array([str(i) for i in order]), kind="budget",
                     params={"rerank": chosen.rerank})
    save_index(vi, tmp_path / "i.npz")
    loaded = load_index(tmp_path / "i.npz")  # held: the IVF part below lives inside it
    assert faiss.downcast_index(faiss.extract_index_ivf(loaded.index)).qb == budget.RABITQ_QUERY_BITS


def test_featx_search_reranks_a_budget_index_from_the_store(tmp_path):
    X, keys = stored_dataset(tmp_path)
    report = json.loads(run_cli("index", "ds", "--cache", tmp_path, "--max-memory", "140KB", "--json").output)
    assert report["bytes"] <= 140_000 and report["params"]["rerank"] and report["recall_at_10"] >= 0.95
    # the key table (2,500 digests of 32 bytes) is part of what the budget held
    assert report["bytes"] == index_nbytes(load_index(report["path"]).index) + 32 * len(keys)
    # what a single query reads from the store: its re-ranked candidates, whole stored rows of 32 float32
    chosen = next(c for c in report["choices"] if c["outcome"].startswith("chosen"))
    assert 10 <= chosen["store_rows_per_query"] <= 10 * chosen["rerank"]
    assert chosen["store_bytes_per_query"] == int(chosen["store_rows_per_query"] * D * 4)
    assert report["kind"].endswith(("x4fs", "RaBitQ"))  # compressed codes: 4-bit PQ or one bit a dimension
    # The saved index alone cannot answer: it needs the store's vectors, which featx search opens with it.
    bare = load_index(report["path"])
    with pytest.raises(SearchError, match="re-ranks"):
        bare.search(X[:1], 5)
    _, truth = flat_search(X, X[:20], 5)
    hits = json.loads(run_cli("search", "ds", *[f"id:{k}" for k in keys[:20]], "-k", 5, "--cache", tmp_path,
                              "--json").output)
    found = [[keys.index(r["key"]) for r in hit["results"]] for hit in hits]
    assert np.mean([len(set(f) & set(t.tolist())) / 5 for f, t in zip(found, truth)]) >= 0.9
    for i, (hit, f) in enumerate(zip(hits, found)):  # exact cosines from the store, best first
        assert np.allclose([r["similarity"] for r in hit["results"]], X[f] @ X[i], atol=1e-5)


def test_one_tuner_takes_the_least_effort_that_reaches_the_target_and_checks_it_on_every_query():
    from featx.search.index import least_effort

    # recall per setting: on the scanned queries, and on all of them (setting 1 looks enough on the scan only)
    scanned, everything = [0.5, 0.95, 0.97, 0.99], [0.5, 0.93, 0.96, 0.99]
    asked = []

    def recall_at(i, m):
        asked.append((i, m))
        return scanned[i] if m == 250 else everything[i]

    assert least_effort(recall_at, 4, 1000, 0.95, scan=250) == (2, 0.96)  # 1 falls short on all: the next one
    assert asked[:2] == [(0, 250), (1, 250)]
    assert least_effort(lambda i, m: [0.2, 0.4, 0.3][i], 3, 100, 0.95) == (1, 0.4)  # none reaches it: the best


def test_an_index_saved_when_layer_widths_were_called_blocks_still_loads_with_them(tmp_path):
    import io
    import zipfile

    from featx.search.index import build_index, load_index, save_index

    X = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
    path = save_index(build_index(X, [f"k{i}" for i in range(50)], "flat", layer_widths=(4, 8)), tmp_path / "i.npz")
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    meta = json.loads(bytes(np.load(io.BytesIO(members["meta.npy"]))).decode())
    meta["blocks"] = meta.pop("layer_widths")  # as featx wrote it before the rename
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    members["meta.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    assert load_index(path).layer_widths == (4, 8)


def test_the_budget_counts_the_key_table():
    """A budget the codes alone fit but not beside their keys chooses a smaller index, and never exceeds it."""
    X = clustered()
    keys = 32 * len(X)
    free, *_ = choose_index(lambda rows: X[rows], len(X), D, 150_000, target_recall=0.9)[2:]
    assert free.bytes > 150_000 - keys  # the codes chosen without keys would not fit with them
    index, order, chosen, tried = choose_index(lambda rows: X[rows], len(X), D, 150_000, target_recall=0.9,
                                               key_bytes=keys)
    assert chosen.bytes == index_nbytes(index) + keys <= 150_000
    assert chosen.factory != free.factory
    assert all(c.estimated_bytes > keys for c in tried)


def test_projected_one_bit_codes_fit_where_the_full_width_does_not(tmp_path):
    """Under a budget the full width's RaBitQ codes and the keys do not fit together, RaBitQ over fewer dimensions
    (inner-product-preserving projection, randomly rotated) reaches the target, and answers the same when saved."""
    from featx.search.index import VectorIndex, save_index

    X = clustered(n=20000, d=128)
    keys = 32 * len(X)
    lists = budget.coarse_lists(len(X))
    cap = estimate_bytes(f"IVF{lists},RaBitQ", len(X), 128) + keys - 1
    index, order, chosen, tried = choose_index(lambda rows: X[rows], len(X), 128, cap, target_recall=0.95,
                                               key_bytes=keys)
    assert chosen.factory == f"PCAR96,IVF{lists},RaBitQ" and chosen.recall_at_10 >= 0.95 and chosen.bytes <= cap
    vi = VectorIndex(index=index, keys=np.array([f"{i:064x}" for i in order]), kind="budget",
                     params={"rerank": chosen.rerank, "search": chosen.search})
    vi.exact = lambda ids: X[order[ids]]
    save_index(vi, tmp_path / "i.npz")
    loaded = load_index(tmp_path / "i.npz")
    loaded.exact = vi.exact
    assert loaded.keys.nbytes == keys and loaded.nbytes() == index_nbytes(index) + keys
    D1, I1 = vi.search(X[:50], 10)
    D2, I2 = loaded.search(X[:50], 10)
    assert (I1 == I2).all() and np.allclose(D1, D2)


def test_the_projection_keeps_inner_products_not_distances_from_the_mean():
    """Projected to all its dimensions the map is a rotation: inner products are kept exactly. FAISS's PCA would
    subtract the mean first and shift every inner product by a term of its own."""
    X = clustered(n=2000, d=D) + 0.5  # far from centred: a mean-subtracting PCA would change every score
    projection = budget.inner_product_projection(X, D)
    A = faiss.vector_to_array(projection.A).reshape(D, D)
    assert np.allclose((X[:20] @ A.T) @ (X[:50] @ A.T).T, X[:20] @ X[:50].T, atol=1e-4)
    half = budget.inner_product_projection(X, D // 2)
    Y = half.apply(X)
    assert Y.shape == (len(X), D // 2)
    # the kept half holds most of the second moment
    assert (Y ** 2).sum() > 0.9 * (X ** 2).sum()
