"""Linear heads (logistic regression, linear SVM, ridge) with the scikit-learn estimator contract."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..hardware import single_threaded_blas
from .rows import StandardRows
from .scoring import decision_of, linear_scores, probabilities
from .solvers import (
    Preconditioner, cross_entropy, fit_temperature, holdout_indices, lbfgs, preconditioner_sample,
    ridge_kernel_solutions, ridge_moments, ridge_solutions, squared_hinge,
)

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
ALPHA_GRID = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)
SCALINGS = ("l2", "standard")
GRID_PATIENCE = 2  # grid values in a row scoring below the best before the search stops…
PATIENT_FROM = 1000  # …when it has at least this many held-out rows
CALIBRATION_ROWS = 20000  # training rows a temperature is fitted on when no rows were held out
# Below this many held-out rows their accuracy is too coarse to choose C (2 images at 10 labels: ties went to the
# strongest regularisation), and the L-BFGS heads take FEW_ROWS_C. Random picks of 10 / 100 / 200 labels
# (5 seeds, docs/results/select.md): digits 35.9 / 90.5 / 95.8% → 44.5 / 93.2 / 95.8%, Fashion-MNIST 28.7 / 71.1 /
# 74.8% → 37.5 / 72.8 / 76.6%; at 500 labels (100 held out) the search is as good or better (80.7 against 80.3%).
FEW_HELD_OUT = 100
FEW_ROWS_C = 1.0  # scikit-learn's default C: the grid's best at every size below that on both datasets


class _LinearHead(ClassifierMixin, BaseEstimator):
    """Standardise, choose the regularisation on held-out data, refit on everything; linear scores.

    Subclasses name their regularisation parameter (``_reg``), its grid parameter, and solve one
    fit in ``_solve``; ``_path`` may solve a whole grid at once.
    """

    _reg = "C"
    _grid = "Cs"
    _native_proba = False
    _few_rows_value = None  # the regularisation taken instead of a search on fewer than FEW_HELD_OUT held-out rows

    def fit(self, X, y, rows=None):
        """Fit on X and its labels y; with ``rows`` (indices), on X's rows at ``rows`` only, y holding their labels:
        X is read where it lies, never copied (a fold of a million stored vectors trains without a second copy)."""
        # BLAS single-threaded throughout: the passes over the rows share the cores through on_cores, and
        # the rest is small; a BLAS pool of its own would only wait on a busy core (hardware.on_cores).
        with single_threaded_blas():
            return self._fit(X, y, rows)

    def _fit(self, X, y, rows=None):
        # float16 (a float16 store's memory map) is read as it is: StandardRows converts block by block.
        # Finiteness is checked block by block (StandardRows.fit): scikit-learn's own check of a float16
        # array makes a boolean array of X's size.
        if rows is None:
            X, y = validate_data(self, X, y, dtype=[np.float32, np.float16], ensure_all_finite=False)
        else:
            if isinstance(X, np.ndarray):
                X = validate_data(self, X, dtype=[np.float32, np.float16], ensure_all_finite=False)
            else:  # rows read where they lie (a store's StoredRows): validating would gather every one of them
                self.n_features_in_ = X.shape[1]
            rows, y = np.asarray(rows), np.asarray(y)
            if len(rows) != len(y) or (len(rows) and (rows.min() < 0 or rows.max() >= len(X))):
                raise ValueError(f"rows must hold one index into X's {len(X)} rows for each of the {len(y)} labels.")
        check_classification_targets(y)
        # Codes by a binary search in the sorted classes: np.unique's return_inverse sorts the labels with an
        # index alongside (73 bytes a row for short string labels at its peak, against about 30 here).
        self.classes_ = np.unique(y)
        t = np.searchsorted(self.classes_, y)
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, not {self.scaling!r}.")
        Z = StandardRows.fit(X, l2=self.scaling == "l2", layer_widths=self.layer_widths, block_rows=self.block_rows,
                             index=rows)
        self.mean_, self.scale_ = Z.mean, Z.scale
        k = len(self.classes_)
        value = getattr(self, self._reg)
        if k < 2:
            W, b, self.n_iter_ = np.zeros((Z.d, 1), np.float32), np.zeros(1, np.float32), 1
            chosen, calib = (value if value is not None else 1.0), None
        else:
            ctx = self._prepare(Z)
            if value is None:
                fit_idx, val_idx = holdout_indices(t, self.val_fraction, self.random_state)
            if value is None and len(val_idx) < FEW_HELD_OUT and self._few_rows_value is not None:
                self.search_ = {}  # too few held-out rows to choose on
                chosen, calib, warm = self._few_rows_value, None, None
            elif value is None:
                if self.max_search_samples and len(fit_idx) > self.max_search_samples:
                    # The grid is searched on a sample; C keeps scikit-learn's meaning (Σ loss), so
                    # the refit on all rows regularises less per sample, as more data allows.
                    rng = np.random.default_rng(self.random_state)
                    fit_idx = np.sort(rng.choice(fit_idx, self.max_search_samples, replace=False))
                chosen, fits, Zv, tv = self._search(Z, t, fit_idx, val_idx, k, ctx)
                calib, warm = (Zv, tv, fits[chosen]), _closest_per_sample(fits, chosen, len(fit_idx), Z.n)
            else:
                chosen, calib, warm = value, None, None
            W, b, self.n_iter_ = self._solve(Z, t, k, chosen, warm, ctx)
            if calib is None and not self._native_proba:  # no held-out rows: at most CALIBRATION_ROWS training rows
                rows = np.sort(np.random.default_rng(self.random_state).permutation(Z.n)[:CALIBRATION_ROWS])
                calib = (Z.subset(rows), t[rows], (W, b))
        setattr(self, self._reg + "_", float(chosen))
        self.coef_ = np.ascontiguousarray(W.T, dtype=np.float32)
        self.intercept_ = np.asarray(b, dtype=np.float32)
        self.temperature_ = 1.0
        if not self._native_proba and calib is not None:  # margins made probabilities; a softmax needs none
            Zc, tc, (Wc, bc) = calib
            self.temperature_ = fit_temperature(Zc.scores(Wc, bc), tc)
        return self

    _curvature: float | None = None  # bound on the loss's curvature, for the preconditioner

    def _prepare(self, Z: StandardRows) -> "Preconditioner | None":
        # One eigendecomposition serves the whole grid and the refit: it only has to be roughly right.
        if not self._curvature:
            return None
        sample = preconditioner_sample(Z.n)
        if sample is None:
            return Preconditioner.of_every_row(Z, self._curvature)
        return Preconditioner(Z.take(sample), self._curvature)

    def _search(self, Z: StandardRows, t, fit_idx, val_idx, k, ctx):
        """The grid's value with the best held-out accuracy (ties to the stronger regularisation), the (W, b)
        of every value fitted, and the held-out rows; ``search_`` records each value's accuracy.

        The path runs from the strongest regularisation to the weakest. With PATIENT_FROM held-out rows or
        more it stops once GRID_PATIENCE values in a row score below the best: held-out accuracy rises and
        then falls along the path, and the weakly regularised fits it skips are the slowest (Fashion-MNIST:
        2 of 7 fits). Fewer held-out rows score too coarsely to stop on (digits at 5 a class lost 3 points
        of test accuracy), and their fits are cheap.
        """
        grid = sorted(getattr(self, self._grid))
        strong_first = grid if self._reg == "C" else grid[::-1]
        Zv, tv = Z.subset(val_idx), t[val_idx]
        self.search_, chosen, worse, fits = {}, None, 0, {}
        for v, (W, b, _) in zip(strong_first, self._path(Z, t, fit_idx, k, strong_first, ctx)):
            fits[v] = W, b
            self.search_[float(v)] = accuracy = float(np.mean(Zv.scores(W, b).argmax(1) == tv))
            if chosen is None or accuracy > self.search_[float(chosen)]:
                chosen, worse = v, 0
            else:
                worse += 1
                if worse >= GRID_PATIENCE and len(tv) >= PATIENT_FROM:
                    break
        return chosen, fits, Zv, tv

    def _path(self, Z: StandardRows, t, rows, k, grid, ctx):
        """Fits on ``rows`` of (Z, t) for each value of the grid in turn, each warm-started from the last
        (a generator: the search may stop early)."""
        Z, t = Z.subset(rows), t[rows]
        init = None
        for v in grid:
            W, b, n = self._solve(Z, t, k, v, init, ctx)
            yield W, b, n
            init = (W, b)

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self)
        return linear_scores(validate_data(self, X, dtype=[np.float64, np.float32, np.float16], reset=False), self)

    def decision_function(self, X):
        return decision_of(self._scores(X))

    def predict_proba(self, X):
        return probabilities(self._scores(X), self.temperature_)

    def predict(self, X):
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]


def _closest_per_sample(fits: dict, chosen: float, n_search: int, n_all: int):
    """The grid's solution to warm-start the refit on all rows from: the one regularised most like it per sample.

    C keeps scikit-learn's meaning (C·Σ loss), so the refit at the chosen C on n_all rows regularises each
    sample as the search did at C·n_all/n_search; starting from that solution, not the chosen one, the
    refit on 60,000 Fashion-MNIST rows took fewer L-BFGS passes over the rows.
    """
    target = np.log(chosen * n_all / max(n_search, 1))
    return fits[min(fits, key=lambda v: abs(np.log(v) - target))]


class _LBFGSHead(_LinearHead):
    """A linear head whose loss is minimised by ``_lbfgs``; subclasses give ``_loss`` and ``_curvature``."""

    _few_rows_value = FEW_ROWS_C

    def __init__(self, C=None, Cs=C_GRID, max_iter=200, tol=1e-4, val_fraction=0.2, max_search_samples=5000,
                 scaling="l2", layer_widths=None, block_rows=None, random_state=0):
        self.C = C
        self.block_rows = block_rows
        self.scaling = scaling
        self.layer_widths = layer_widths
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol
        self.val_fraction = val_fraction
        self.max_search_samples = max_search_samples
        self.random_state = random_state

    def _solve(self, Z, t, k, C, init, precond):
        return lbfgs(self._loss(t, k), Z, C, k, precond, init, self.max_iter, self.tol)


class LogisticHead(_LBFGSHead):
    """Multinomial logistic regression on standardised features, full-batch L-BFGS (scipy), float32 products.

    Parameters
    ----------
    C : inverse regularisation strength, as in scikit-learn's LogisticRegression. None chooses it
        from ``Cs`` by accuracy on a held-out ``val_fraction`` of the training data (warm-started
        from the strongest regularisation), then refits on all of it; when that share would hold fewer
        than FEW_HELD_OUT rows (under 500 training rows by default), C is FEW_ROWS_C = 1.0 instead.
    Cs : the grid searched when C is None.
    max_iter : L-BFGS iterations per fit.
    tol : stop when an iteration lowers the mean loss by less than this.
    val_fraction : share of the training data held out for choosing C.
    max_search_samples : the grid is fitted on at most this many training rows (None: all).
    scaling : ``"l2"`` (default) L2-normalises each vector, centres, and divides by one overall
        scale; ``"standard"`` standardises each feature (scikit-learn's StandardScaler). Measured on
        digits at 96 px (seed 0), l2 gave 49.3% / 78.6% / 92.2% test accuracy at 1 / 5 / 50 shots
        per class against 36.6% / 60.1% / 90.6% (C chosen on held-out rows at every size then), and the
        same on all 60,000 Fashion-MNIST vectors (89.95% against 90.00%).
    layer_widths : the widths of a multi-layer recipe's layers (``featx train`` passes them); with
        ``scaling="l2"`` each block is L2-normalised on its own first, so every layer counts alike.
    block_rows : None keeps the standardised training rows in memory up to 1 GiB and streams them from
        X (e.g. a store's memory-mapped shards) in 64 MB blocks beyond that; a number streams blocks of
        that many rows. Streaming gives the same fit (same objective, sums in another order) with no
        copy of X: measured 1M × 1,280 in benchmarks/bench_scale.py.
    random_state : seed of the held-out split.
    """

    _native_proba = True
    _curvature = 0.25  # softmax cross-entropy: p(1 - p) ≤ 1/4
    _loss = staticmethod(cross_entropy)


class LinearSVMHead(_LBFGSHead):
    """One-vs-rest linear SVM (squared hinge, as LinearSVC) on standardised features, L-BFGS (scipy).

    Probabilities are the softmax of the margins at a temperature fitted on held-out data.
    Parameters as LogisticHead.
    """

    _curvature = 2.0  # squared hinge: 2 on the active margins
    _loss = staticmethod(squared_hinge)


class RidgeHead(_LinearHead):
    """Ridge regression onto ±1 class indicators (as RidgeClassifier), solved in closed form.

    The alpha grid shares one pass over the rows (their moments), each value a Cholesky solve; with
    fewer rows than columns the problem is solved as n × n instead (ridge_kernel_solutions), so a few
    labelled images cost a few milliseconds. Probabilities: softmax of the scores at a fitted temperature.

    Parameters
    ----------
    alpha : regularisation strength, as in scikit-learn's Ridge; None chooses it from ``alphas``.
    alphas : the grid searched when alpha is None.
    val_fraction, random_state : the held-out split used to choose alpha.
    max_search_samples : fit the grid on at most this many training rows (None: all; the grid is cheap).
    scaling, layer_widths, block_rows : as LogisticHead's.
    """

    _reg = "alpha"
    _grid = "alphas"

    def __init__(self, alpha=None, alphas=ALPHA_GRID, val_fraction=0.2, max_search_samples=None, scaling="l2",
                 layer_widths=None, block_rows=None, random_state=0):
        self.alpha = alpha
        self.block_rows = block_rows
        self.scaling = scaling
        self.layer_widths = layer_widths
        self.alphas = alphas
        self.val_fraction = val_fraction
        self.max_search_samples = max_search_samples
        self.random_state = random_state

    def _prepare(self, Z) -> dict:
        return {}  # holds the whole training set's moments once the grid search has them

    def _path(self, Z, t, rows, k, grid, ctx):
        if len(rows) < Z.d:  # fewer rows than columns: the n × n problem
            return ridge_kernel_solutions(Z.take(rows), t[rows], k, grid)
        # The moments of the held-out rows are computed too, so the refit on everything costs no pass.
        rest = np.setdiff1d(np.arange(len(t)), rows)
        fit = ridge_moments(Z.subset(rows), t[rows], k)
        ctx["all"] = tuple(a + b for a, b in zip(fit, ridge_moments(Z.subset(rest), t[rest], k)))
        return ridge_solutions(*fit, grid)

    def _solve(self, Z, t, k, alpha, init, ctx):
        if Z.n < Z.d:
            return ridge_kernel_solutions(Z.take(np.arange(Z.n)), t, k, [alpha])[0]
        moments = ctx.get("all") if ctx else None
        return ridge_solutions(*(moments or ridge_moments(Z, t, k)), [alpha])[0]
