"""Linear heads streamed in blocks from a memory map: the same fit as in memory, without a copy of the data."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from featx.heads.linear import LinearSVMHead, LogisticHead, RidgeHead
from featx.heads.rows import StandardRows


def labelled(n=3000, d=48, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 0.6
    y = rng.integers(0, k, n)
    X = (centres[y] + rng.standard_normal((n, d)) + 0.3).astype(np.float32)
    return X, np.array([f"class{c}" for c in y])


@pytest.mark.parametrize("head", [LogisticHead, LinearSVMHead, RidgeHead])
@pytest.mark.parametrize("scaling", ["l2", "standard"])
def test_streamed_fit_matches_the_in_memory_fit(head, scaling):
    X, y = labelled()
    whole = head(scaling=scaling).fit(X, y)
    streamed = head(scaling=scaling, block_rows=257).fit(X, y)  # 12 blocks, the last one short
    reg = "alpha_" if head is RidgeHead else "C_"
    assert getattr(streamed, reg) == getattr(whole, reg)
    np.testing.assert_allclose(streamed.mean_, whole.mean_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(streamed.scale_, whole.scale_, rtol=1e-5)
    scale = np.abs(whole.coef_).max()
    np.testing.assert_allclose(streamed.coef_, whole.coef_, atol=2e-3 * scale)
    np.testing.assert_allclose(streamed.predict_proba(X), whole.predict_proba(X), atol=2e-3)
    assert np.mean(streamed.predict(X) == whole.predict(X)) > 0.995


def test_standard_rows_are_the_same_streamed_or_kept():
    X, _ = labelled(n=1000, d=20)
    kept = StandardRows.fit(X, l2=True, layer_widths=(8, 12))
    streamed = StandardRows.fit(X, l2=True, layer_widths=(8, 12), block_rows=64)
    assert kept.dense is not None and streamed.dense is None
    Z = np.concatenate([b for _, _, b in streamed.blocks_of_rows()])
    np.testing.assert_allclose(Z, kept.dense, atol=1e-5)
    rows = np.array([999, 3, 500])
    np.testing.assert_allclose(streamed.take(rows), kept.dense[rows], atol=1e-5)
    np.testing.assert_allclose(streamed.subset(rows).scores(np.eye(20, 2, dtype=np.float32), np.ones(2)),
                               kept.dense[rows][:, :2] + 1, atol=1e-5)


def test_a_float16_memory_map_trains_without_a_copy_of_it(tmp_path):
    peaks = {}
    LogisticHead(C=1.0).fit(*labelled(n=200, d=64))  # imports and thread start-up out of the measurement
    for n in (20000, 80000):
        X, y = labelled(n=n, d=64)
        np.save(tmp_path / f"{n}.npy", X.astype(np.float16))
        mm = np.load(tmp_path / f"{n}.npy", mmap_mode="r")
        tracemalloc.start()
        head = LogisticHead(C=1.0, block_rows=2048).fit(mm, y)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    as_float32 = 4 * X.size  # 20 MB; the fit's fixed costs (the preconditioner's 4,096-row sample) are a few MB
    assert peaks[80000] < 0.5 * as_float32, f"peak {peaks[80000] / 1e6:.1f} MB training on {as_float32 / 1e6:.0f} MB"
    # What grows with the rows is small per row: the labels, their codes and the held-out scores, never
    # a row of X (256 bytes in float32 here).
    assert (peaks[80000] - peaks[20000]) / 60000 < 64, peaks
    reference = LogisticHead(C=1.0).fit(X.astype(np.float16).astype(np.float32), y)
    assert np.mean(head.predict(X[:2000]) == reference.predict(X[:2000])) > 0.995


@pytest.mark.parametrize("head", [LogisticHead, RidgeHead])
def test_a_fit_on_rows_of_x_equals_the_fit_on_their_copy_and_does_not_copy_x(head):
    """fit(X, y, rows=...) trains on X's rows at ``rows`` (repeats allowed) exactly as on X[rows], and, streamed,
    holds no copy of X: what a fold of a million stored vectors trains with."""
    X, labels = labelled(n=4000, d=48)
    rows = np.random.default_rng(1).choice(len(X), 3000)  # with repeats, as members reading distinct vectors
    copied = head().fit(X[rows], labels[rows])
    read = head().fit(X, labels[rows], rows=rows)
    reg = "alpha_" if head is RidgeHead else "C_"
    assert getattr(read, reg) == getattr(copied, reg)
    np.testing.assert_array_equal(read.coef_, copied.coef_)
    with pytest.raises(ValueError, match="one index into X's 4000 rows for each of the 2 labels"):
        head().fit(X, labels[:2], rows=[0, 4000])

    big, y = labelled(n=60000, d=64)
    half = np.arange(0, 60000, 2)
    LogisticHead(C=1.0).fit(*labelled(n=200, d=64))  # imports and thread start-up out of the measurement
    tracemalloc.start()
    LogisticHead(C=1.0, block_rows=2048).fit(big, y[half], rows=half)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.25 * big.nbytes, f"peak {peak / 1e6:.1f} MB fitting half of {big.nbytes / 1e6:.0f} MB"


def test_out_of_fold_probabilities_read_the_distinct_vectors_through_the_members_rows():
    """Audit's folds: members that share a vector read it through ``rows``, with the same probabilities as from a
    copy of the vectors per member."""
    from featx.audit.oof import out_of_fold_probabilities

    X, labels = labelled(n=600, d=32)
    rows = np.concatenate([np.arange(600), np.arange(0, 600, 7)])  # every 7th image listed twice
    keys = [f"k{r}" for r in rows]
    copied = out_of_fold_probabilities(X[rows], labels[rows], folds=3, groups=keys)
    read = out_of_fold_probabilities(X, labels[rows], folds=3, groups=keys, rows=rows)
    np.testing.assert_array_equal(read.proba, copied.proba)
    knn = out_of_fold_probabilities(X, labels[rows], folds=3, groups=keys, rows=rows, head="knn")
    assert knn.proba.shape == copied.proba.shape  # a head without rows= reads its fold's rows as an array
