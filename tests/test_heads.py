"""Heads: the scikit-learn contract, agreement with scikit-learn's own solvers, separable data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler, normalize
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.heads import HEADS, KNNHead, LinearSVMHead, LogisticHead, MLPHead, RidgeHead
from featx.heads.linear import FEW_ROWS_C


@parametrize_with_checks([LogisticHead(), RidgeHead(), LinearSVMHead(), KNNHead(), MLPHead(hidden=32, max_epochs=20)])
def test_scikit_learn_estimator_contract(estimator, check):
    check(estimator)


def blobs(n_per=40, d=16, classes=("a", "b", "c"), seed=0, spread=0.1):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(classes), d)) * 5
    y = np.repeat(np.array(classes), n_per)
    X = centres[np.repeat(np.arange(len(classes)), n_per)] + rng.standard_normal((len(y), d)) * spread
    return X.astype(np.float32), y


@pytest.mark.parametrize("name", sorted(HEADS))
def test_separable_vectors_are_classified_perfectly(name):
    X, y = blobs()
    Xt, yt = blobs(seed=0, n_per=10)
    head = HEADS[name]().fit(X, y)
    assert head.score(X, y) == 1.0 and head.score(Xt, yt) == 1.0
    proba = head.predict_proba(X)
    assert proba.shape == (len(X), 3) and np.allclose(proba.sum(1), 1)
    assert list(head.classes_[proba.argmax(1)]) == list(head.predict(X))
    if getattr(head, "_few_rows_value", None) is not None:  # 24 held-out rows: too few to choose C on
        assert head.search_ == {} and head.C_ == FEW_ROWS_C
    else:
        assert len(head.search_) >= 3  # the regularisation was chosen on held-out data


def test_logistic_matches_scikit_learn_on_the_same_objective():
    X, y = load_digits(return_X_y=True)
    head = LogisticHead(C=0.05, max_iter=500, tol=1e-9, scaling="standard").fit(X, y)
    Z = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=0.05, max_iter=5000, tol=1e-8).fit(Z, y)
    assert np.mean(head.predict(X) == ref.predict(Z)) > 0.99
    np.testing.assert_allclose(head.coef_, ref.coef_, atol=2e-2)


def test_l2_scaling_solves_logistic_regression_on_normalised_vectors():
    X, y = load_digits(return_X_y=True)
    head = LogisticHead(C=0.05, max_iter=500, tol=1e-9).fit(X, y)
    N = normalize(X)
    Z = (N - N.mean(0)) / np.sqrt(N.var(0).mean())  # one scale for every feature
    ref = LogisticRegression(C=0.05, max_iter=5000, tol=1e-8).fit(Z, y)
    assert head.scaling == "l2"
    assert np.mean(head.predict(X) == ref.predict(Z)) > 0.99
    np.testing.assert_allclose(head.coef_, ref.coef_, atol=2e-2)


def test_l2_scaling_beats_standardising_on_few_examples():
    # Five images per class: per-feature scales from so few rows blow up near-constant pixels.
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(10)])
    test = np.setdiff1d(np.arange(len(y)), train)
    l2 = LogisticHead().fit(X[train], y[train]).score(X[test], y[test])
    standard = LogisticHead(scaling="standard").fit(X[train], y[train]).score(X[test], y[test])
    assert l2 > standard


def test_unknown_scaling_is_named():
    with pytest.raises(ValueError, match="scaling must be one of l2, standard"):
        LogisticHead(scaling="minmax").fit(np.eye(4), [0, 1, 0, 1])


def test_ridge_matches_scikit_learn():
    X, y = load_digits(return_X_y=True)
    head = RidgeHead(alpha=10.0, scaling="standard").fit(X, y)
    Z = StandardScaler().fit_transform(X)
    ref = RidgeClassifier(alpha=10.0).fit(Z, y)
    np.testing.assert_allclose(head.coef_, ref.coef_, atol=1e-4)
    assert np.mean(head.predict(X) == ref.predict(Z)) == 1.0


def test_knn_matches_scikit_learn_cosine_vote():
    X, y = load_digits(return_X_y=True)
    head = KNNHead(n_neighbors=5).fit(X[:1500], y[:1500])
    ref = KNeighborsClassifier(5, metric="cosine").fit(normalize(X[:1500]), y[:1500])
    agree = np.mean(head.predict(X[1500:]) == ref.predict(normalize(X[1500:])))
    assert agree > 0.97  # the vote is similarity-weighted here, uniform there


def test_linear_svm_matches_linear_svc_and_calibrates():
    from sklearn.svm import LinearSVC

    X, y = load_digits(return_X_y=True)
    head = LinearSVMHead().fit(X[:1400], y[:1400])
    scaler = StandardScaler().fit(X[:1400])
    ref = LinearSVC(C=head.C_, max_iter=20000).fit(scaler.transform(X[:1400]), y[:1400])
    Zt = scaler.transform(X[1400:])
    assert head.score(X[1400:], y[1400:]) >= ref.score(Zt, y[1400:]) - 0.01
    assert np.mean(head.predict(X[1400:]) == ref.predict(Zt)) > 0.9
    assert head.temperature_ > 0 and head.predict_proba(X[1400:]).max(1).mean() < 0.999


def embedding_like(n, d=1280, k=10, rank=64, seed=0):
    """Vectors like a backbone's: a few strong directions carry the classes, many weak ones the rest."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d)) / np.sqrt(d) * np.linspace(8, 1, rank)[:, None]
    centres = rng.standard_normal((k, rank))
    y = np.arange(n) % k
    X = (centres[y] + 0.8 * rng.standard_normal((n, rank))) @ basis + 0.05 * rng.standard_normal((n, d))
    return X.astype(np.float32), y


def logistic_objective(Z, y, W, b, C) -> float:
    """scikit-learn's objective: C·Σ cross-entropy + ½‖W‖²."""
    S = Z.astype(np.float64) @ W.T + b
    S -= S.max(1, keepdims=True)
    logp = S - np.log(np.exp(S).sum(1, keepdims=True))
    return C * -logp[np.arange(len(y)), y].sum() + 0.5 * np.sum(np.square(W, dtype=np.float64))


@pytest.mark.parametrize("n, C", [(2000, 0.05), (2000, 0.01), (30, 0.05), (30, 1.0)])
def test_the_preconditioned_solver_reaches_scikit_learns_optimum_in_high_dimensions(n, C):
    """Many features (the leading eigenpairs, the rest by their mean) and fewer rows than features (the
    Gram matrix's eigenpairs only): both reach the optimum of scikit-learn's objective."""
    X, y = embedding_like(n)
    head = LogisticHead(C=C, max_iter=1000, tol=1e-9, scaling="standard").fit(X, y)
    Z = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=C, max_iter=10000, tol=1e-10).fit(Z, y)
    ours, best = (logistic_objective(Z, y, h.coef_, h.intercept_, C) for h in (head, ref))
    assert ours <= best * (1 + 1e-3)
    assert np.mean(head.predict(X) == ref.predict(Z)) > 0.99


def test_the_row_span_preconditioner_gives_any_subsets_coordinates_without_forming_its_directions():
    """Fewer rows than features: V = Zᵀ·B is never formed; the coordinates of a subset of Z's rows (the grid
    search's fit rows) are read off the eigenvectors, and equal the product with V written out."""
    from featx.heads.rows import StandardRows
    from featx.heads.solvers import Preconditioner

    X, _ = embedding_like(60, d=300)
    Z = StandardRows.fit(X, l2=True)
    precond = Preconditioner.of_every_row(Z, 0.25)
    assert precond.V is None
    V = precond.rows_.T @ precond.B_
    np.testing.assert_allclose(V.T @ V, np.eye(V.shape[1]), atol=1e-3)  # orthonormal directions
    subset = Z.subset(np.arange(5, 50, 2))
    np.testing.assert_allclose(precond.span_coordinates(subset), subset.dense @ V, atol=1e-3)
    other = StandardRows.fit(embedding_like(20, d=300, seed=1)[0], l2=True)  # rows of another source: a product
    np.testing.assert_allclose(precond.span_coordinates(other), other.dense @ V, atol=1e-3)
    W = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    np.testing.assert_allclose(precond.inverse(W, 0.01), (V.T @ W) / precond.scales(0.01)[0], rtol=1e-3, atol=1e-3)
    # A W that forward() made goes back to the coordinates it came from without a product, as a copy does with one.
    Wp = np.random.default_rng(1).standard_normal((precond.n_rows(300), 4)).astype(np.float32)
    made = precond.forward(Wp, 0.01)
    np.testing.assert_allclose(precond.inverse(made, 0.01), Wp, rtol=1e-5)
    np.testing.assert_allclose(precond.inverse(made.copy(), 0.01), Wp, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("n", [1, 255, 256, 600])
def test_the_tiled_gram_matrix_equals_the_product(n):
    from featx.heads.solvers import row_gram

    rows = np.random.default_rng(n).standard_normal((n, 40)).astype(np.float32)
    np.testing.assert_allclose(row_gram(rows, tile=256), rows @ rows.T, rtol=1e-4, atol=1e-4)


def test_a_fit_runs_one_pool_of_the_threads_set_at_start_up(monkeypatch):
    """set_threads once; inside a fit every BLAS pool is at one thread while featx's own pool (on_cores)
    runs the passes with that many threads; afterwards the BLAS pools are as they were."""
    from threadpoolctl import threadpool_info

    from featx import hardware
    from featx.hardware import available_cores, compute_threads, set_threads

    monkeypatch.setattr(hardware, "_THREADS", None)
    assert set_threads() == compute_threads() == available_cores()
    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    seen = []
    on_cores = hardware.on_cores

    def counting(pieces, work):
        seen.append(({i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"},
                     min(compute_threads(), len(pieces) // 4)))
        return on_cores(pieces, work)

    import featx.heads.rows as rows
    import featx.heads.solvers as solvers

    monkeypatch.setattr(solvers, "on_cores", counting)
    monkeypatch.setattr(rows, "on_cores", counting)  # the passes over the rows (StandardRows.map_pieces)
    X, y = embedding_like(12000, d=512)
    LogisticHead().fit(X, y)
    assert seen and all(set(blas.values()) == {1} and len(blas) >= 2 for blas, _ in seen)  # numpy's and scipy's
    assert max(threads for _, threads in seen) == available_cores()
    assert {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
            if i["filepath"] in before} == before


def test_a_fit_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from featx.heads import LogisticHead, LinearSVMHead, RidgeHead; "
            "X = np.random.default_rng(0).standard_normal((200, 64)).astype('float32'); y = np.arange(200) % 3; "
            "[h().fit(X, y) for h in (LogisticHead, LinearSVMHead, RidgeHead)]; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_grid_stops_past_its_best_and_chooses_what_the_whole_grid_chooses(monkeypatch):
    """With enough held-out rows the C search stops two values past the best one; the whole grid (the
    stop turned off) chooses the same C and the same head. Few held-out rows search the whole grid."""
    from featx.heads import linear

    X, y = embedding_like(12000, seed=3)
    X += 1.5 * np.random.default_rng(4).standard_normal(X.shape).astype(np.float32) / np.sqrt(X.shape[1])
    stopped = LogisticHead().fit(X, y)
    assert 3 <= len(stopped.search_) < len(linear.C_GRID), stopped.search_
    monkeypatch.setattr(linear, "PATIENT_FROM", 10**9)
    whole = LogisticHead().fit(X, y)
    assert len(whole.search_) == len(linear.C_GRID)
    assert whole.C_ == stopped.C_ == max(whole.search_, key=lambda c: (whole.search_[c], -c))
    np.testing.assert_allclose(stopped.coef_, whole.coef_, atol=1e-6)
    monkeypatch.undo()
    few = LogisticHead().fit(X[:600], y[:600])  # 120 held-out rows
    assert len(few.search_) == len(linear.C_GRID)


@pytest.mark.parametrize("head", [LogisticHead, LinearSVMHead])
def test_too_few_held_out_rows_to_choose_on_take_c_of_one(head):
    """Under FEW_HELD_OUT held-out rows (2 images at 10 labels) held-out accuracy cannot choose C: the head takes
    FEW_ROWS_C without a search, and fits as with that C given; with enough held-out rows it searches again."""
    from featx.heads import linear

    X, y = embedding_like(200, seed=5)
    few = head().fit(X, y)  # 40 held-out rows
    assert few.search_ == {} and few.C_ == linear.FEW_ROWS_C
    np.testing.assert_allclose(few.coef_, head(C=linear.FEW_ROWS_C).fit(X, y).coef_, atol=1e-6)
    assert len(head().fit(*embedding_like(600, seed=5)).search_) >= 3  # 120 held-out rows


def test_the_mlp_separates_what_no_linear_head_can():
    # Two classes in the XOR pattern of two noisy features: no hyperplane splits them, one hidden layer does.
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 2, (800, 2))
    X = np.hstack([corners * 2.0 - 1.0 + 0.15 * rng.standard_normal((800, 2)), rng.standard_normal((800, 6)) * 0.1])
    y = np.where(corners[:, 0] == corners[:, 1], "same", "different")
    train, test = slice(0, 600), slice(600, None)
    mlp = MLPHead(hidden=64, scaling="standard", learning_rate=1e-2, max_epochs=60, patience=10).fit(X[train], y[train])
    linear = LogisticHead(scaling="standard").fit(X[train], y[train])
    assert np.mean(mlp.predict(X[test]) == y[test]) > 0.95
    assert np.mean(linear.predict(X[test]) == y[test]) < 0.7
    # early stopping kept the best held-out epoch, and the same seed gives the same head
    assert 1 <= mlp.best_epoch_ <= mlp.n_epochs_ <= 60
    again = MLPHead(hidden=64, scaling="standard", learning_rate=1e-2, max_epochs=60, patience=10).fit(X[train], y[train])
    assert np.array_equal(again.coef_, mlp.coef_)
    P = mlp.predict_proba(X[test])
    assert P.shape == (200, 2) and np.allclose(P.sum(1), 1.0) and list(mlp.classes_) == ["different", "same"]


def test_ridge_with_fewer_rows_than_columns_solves_the_small_problem_with_the_same_coefficients():
    from featx.heads.solvers import ridge_kernel_solutions, ridge_solutions

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(30, 400)).astype(np.float32)
    t = rng.integers(0, 3, 30)
    Y = -np.ones((30, 3)); Y[np.arange(30), t] = 1.0
    moments = (Z.T.astype(np.float64) @ Z, Z.sum(0, dtype=np.float64), Y.sum(0), Z.T.astype(np.float64) @ Y, 30)
    for (W, b, _), (Wk, bk, _) in zip(ridge_solutions(*moments, [0.1, 10.0]),
                                      ridge_kernel_solutions(Z, t, 3, [0.1, 10.0])):
        np.testing.assert_allclose(Wk, W, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(bk, b, rtol=1e-3, atol=1e-5)
    # the head takes that path on wide data and still matches scikit-learn's Ridge on the same rows
    X, y = load_digits(return_X_y=True)
    wide = np.hstack([X, X ** 2, np.sqrt(X), X[:, ::-1] * X])[:150]  # 150 rows, 256 columns
    head = RidgeHead(alpha=10.0, scaling="standard").fit(wide, y[:150])
    ref = RidgeClassifier(alpha=10.0).fit(StandardScaler().fit_transform(wide), y[:150])
    assert wide.shape[0] < wide.shape[1]
    np.testing.assert_allclose(head.coef_, ref.coef_, atol=1e-4)
