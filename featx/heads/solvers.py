"""The heads' solvers: preconditioned L-BFGS with hand-written gradients, closed-form ridge, temperature scaling.

All of it is numpy and scipy: one thread pool (the BLAS's), and no torch import in a fit.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.model_selection import train_test_split

from ..hardware import on_cores, single_threaded_blas
from .rows import CACHE_BYTES
from .scoring import softmax


def holdout_indices(y: np.ndarray, val_fraction: float, random_state) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a held-out split of the training data, stratified when every class can afford it."""
    _, counts = np.unique(y, return_counts=True)
    n_val = max(1, int(round(len(y) * val_fraction)))
    stratify = y if counts.min() >= 2 and n_val >= len(counts) and len(y) - n_val >= len(counts) else None
    return train_test_split(np.arange(len(y)), test_size=n_val, random_state=random_state, stratify=stratify)


def fit_temperature(scores: np.ndarray, t: np.ndarray) -> float:
    """The T minimising the log-loss of softmax(scores / T): turns margins into calibrated probabilities."""

    def nll(log_t: float) -> float:
        p = softmax(scores / np.exp(log_t))
        return -np.mean(np.log(p[np.arange(len(t)), t] + 1e-12))

    return float(np.exp(minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded").x))


def row_gram(rows: np.ndarray, tile: int = 256) -> np.ndarray:
    """rows·rowsᵀ (float32), tile by tile of the upper triangle on every core (on_cores), mirrored below.

    Square tiles: pieces of 64 rows, each against all of them, re-read (and the BLAS re-packed) the whole
    matrix per piece: 0.094 s for 1,414 × 3,328 digits against 0.039 s tiled, half the products skipped too.
    """
    n = len(rows)
    starts = range(0, n, tile)
    gram = np.empty((n, n), np.float32)

    def product(ab: tuple[int, int]) -> None:
        a, b = ab
        block = rows[a:a + tile] @ rows[b:b + tile].T
        gram[a:a + tile, b:b + tile] = block
        gram[b:b + tile, a:a + tile] = block.T

    on_cores([(a, b) for a in starts for b in starts if b >= a], product)
    return gram


MADE_KEPT = 8  # a grid's solutions (7 values) whose coordinates a preconditioner keeps for the refit's warm start
PRECONDITIONER_RANK = 256  # leading directions a preconditioner resolves; the rest share their mean eigenvalue


class Preconditioner:
    """A change of variables W = P·W' that makes the regularised problem nearly isotropic.

    P scales each eigendirection of the features' covariance (estimated on ``sample``, some rows of
    Z: ``preconditioner_sample`` picks them) by p = 1/sqrt(c·s + λ), so the Hessian of loss + λ/2‖W‖²
    in W' is close to the identity (c bounds the loss's curvature) and L-BFGS needs tens of iterations
    instead of hundreds. It only has to be roughly right, so nothing here costs more than the solve:

    - float32 throughout;
    - many features: the leading ``rank`` eigenpairs come from a randomized range finder on the
      covariance (a few d×d×rank products, not a d³ eigendecomposition); every other direction gets
      the mean of the remaining eigenvalues;
    - fewer rows than features (``all_rows``: the sample is every training row): the eigenpairs come
      from the n×n Gram matrix and the directions with a zero eigenvalue are dropped. The solution lies
      in the rows' span anyway (the loss's gradient Zᵀ·dS does, and the penalty keeps W there), so W'
      has n rows: 20 labelled images cost a 20×20 eigendecomposition, not a 1,280×1,280 one.
    """

    def __init__(self, sample: np.ndarray, curvature: float, all_rows: bool = False,
                 rank: int = PRECONDITIONER_RANK, seed: int = 0):
        rows = np.ascontiguousarray(sample, dtype=np.float32)
        self.curvature = curvature
        self.rest: float | None = None  # the eigenvalue of the directions V leaves out; None: dropped
        self.V: np.ndarray | None = None  # the directions, d × r; None: rows_ᵀ·B_, never formed (see _decompose)
        self.rows_ = self.B_ = None
        self._span: tuple | None = None  # (rows, their coordinates in V) of the last solve in V's span
        self._made: list = []  # (W, Vᵀ·W) of the Ws forward() made lately: a grid's next solve starts from one
        self._source = None  # the StandardRows whose rows (and subsets) have their coordinates in V for free
        self._decompose(rows, all_rows, rank, seed)

    def _decompose(self, rows: np.ndarray, all_rows: bool, rank: int, seed: int) -> None:
        from scipy.linalg import eigh

        n, d = rows.shape
        if all_rows and n < d:
            # V = rowsᵀ·U/√(n·s) is kept as its two factors: forming it (d × n × n) cost as much as the Gram
            # matrix, and every use of V is a product with a thin matrix (k columns).
            gram = row_gram(rows) / np.float32(n)
            s, U = eigh(gram, driver="evd", check_finite=False)
            keep = s > max(float(s.max()), 1e-30) * 1e-6
            self.s, root = s[keep], np.sqrt(n * s[keep])
            self.rows_, self.B_ = rows, np.ascontiguousarray(U[:, keep] / root)
            self._own_span = np.ascontiguousarray(U[:, keep] * root)  # rows·V = U·√(n·s), without the product
            return
        cov = rows.T @ rows / np.float32(n)
        if d <= 2 * rank:
            s, self.V = eigh(cov, driver="evd", check_finite=False)
            self.s = np.maximum(s, 0.0)
            return
        self.s, self.V = _leading_eigenpairs(cov, rank, seed)
        self.rest = max(0.0, (float(np.trace(cov, dtype=np.float64)) - float(self.s.sum())) / (d - rank))

    @classmethod
    def of_every_row(cls, Z, curvature: float) -> "Preconditioner":
        """The preconditioner of every row of the StandardRows Z. With fewer rows than features, Z's own
        coordinates in V, and those of any subset of its rows, come with it (Z·V = U·√(n·s)): the grid's
        fits on a subset and the refit on Z skip that product."""
        precond = cls(Z.take(np.arange(Z.n)), curvature, all_rows=True)
        if precond.V is None:
            precond._source = Z
        return precond

    def _along(self, X: np.ndarray) -> np.ndarray:
        """V·X."""
        return self.V @ X if self.V is not None else self.rows_.T @ (self.B_ @ X)

    def _onto(self, Y: np.ndarray) -> np.ndarray:
        """Vᵀ·Y."""
        return self.V.T @ Y if self.V is not None else self.B_.T @ (self.rows_ @ Y)

    def scales(self, lam: float) -> tuple[np.ndarray, float]:
        """p for V's directions, and for the others."""
        p = (1.0 / np.sqrt(self.curvature * self.s.astype(np.float64) + lam)).astype(np.float32)
        return p[:, None], (0.0 if self.rest is None else float(1.0 / np.sqrt(self.curvature * self.rest + lam)))

    def span_coordinates(self, rows) -> np.ndarray:
        """Z·V for the StandardRows ``rows``, made once for the same rows: a grid's path solves one subset up
        to seven times. Rows of the preconditioner's own source cost nothing."""
        src = self._source
        if src is not None and rows is src:
            return self._own_span
        if (src is not None and src.index is None and rows.index is not None and rows.X is src.X
                and rows.mean is src.mean and rows.scale is src.scale):
            return self._own_span[rows.index]
        if self._span is None or self._span[0] is not rows:
            self._span = (rows, np.concatenate([self._onto(Z.T).T for _, _, Z in rows.blocks_of_rows()]))
        return self._span[1]

    def n_rows(self, d: int) -> int:
        """Rows of W': V's directions only when the others are dropped."""
        return len(self.s) if self.rest is None else d

    def forward(self, Wp: np.ndarray, lam: float) -> np.ndarray:
        """W = P·W'."""
        p, p0 = self.scales(lam)
        if self.rest is None:
            coordinates = p * Wp
            W = self._along(coordinates)
            self._made[:] = [*self._made[-(MADE_KEPT - 1):], (W, coordinates)]
            return W
        return self._along((p - p0) * self._onto(Wp)) + p0 * Wp

    def adjoint(self, G: np.ndarray, lam: float) -> np.ndarray:
        """Pᵀ·G: a gradient with respect to W carried to W'."""
        p, p0 = self.scales(lam)
        if self.rest is None:
            return p * self._onto(G)
        return self._along((p - p0) * self._onto(G)) + p0 * G

    def inverse(self, W: np.ndarray, lam: float) -> np.ndarray:
        """W' for a given W (its projection on V's span when the other directions are dropped)."""
        p, p0 = self.scales(lam)
        if self.rest is None:
            # Vᵀ·V = I, so a W that forward() made has the coordinates it was made from: no product with V
            # (two passes over the rows' d columns) when a grid's solve warm-starts from the one before.
            made = [c for w, c in self._made if w is W]
            return (made[0] if made else self._onto(W)) / p
        return self._along((1.0 / p - 1.0 / p0) * self._onto(W)) + W / p0


def _leading_eigenpairs(A: np.ndarray, rank: int, seed: int, power: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The ``rank`` largest eigenpairs of a symmetric PSD matrix by a randomized range finder with
    ``power`` subspace iterations (Halko, Martinsson & Tropp 2011), in float32."""
    from scipy.linalg import eigh

    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(A @ rng.standard_normal((A.shape[0], rank + 16)).astype(np.float32))[0]
    for _ in range(power):
        Q = np.linalg.qr(A @ Q)[0]
    s, U = eigh(Q.T @ A @ Q, driver="evd", check_finite=False)
    top = np.argsort(s)[::-1][:rank]
    return np.maximum(s[top], 0.0).astype(np.float32), np.ascontiguousarray(Q @ U[:, top], dtype=np.float32)


def preconditioner_sample(n: int, max_rows: int = 4096, seed: int = 0) -> np.ndarray | None:
    """Which rows of n estimate the preconditioner's covariance: all (None) up to ``max_rows``, else a sample."""
    return None if n <= max_rows else np.random.default_rng(seed).choice(n, max_rows, replace=False)


def lbfgs(loss_and_grad, rows, C, k, precond: Preconditioner, init, max_iter: int, tol: float):
    """Minimise loss(Z·W + b) + ‖W‖² / (2·C·n) by full-batch L-BFGS in preconditioned coordinates.

    That is scikit-learn's objective C·Σ loss + ½‖W‖², divided by C·n. ``rows`` gives Z block by
    block (StandardRows: one block when Z is in memory); ``loss_and_grad(S, a, b)`` returns the summed
    loss of the scores S of rows a:b and its gradient, so a pass over the blocks is exactly the
    full-batch value. Gradients are written out by hand; each pass cuts the rows into cache-sized
    pieces that hardware.on_cores shares out among the cores (BLAS single-threaded meanwhile: one pool
    in the loop, and a busy core costs its share, not a wait); torch is not imported. scipy's L-BFGS-B
    steps; it stops when
    an iteration lowers the mean loss by less than ``tol`` (the loss is of order 0.1–1, so like
    scikit-learn's tol). Returns W (d, k), b (k,) and the iterations taken.
    """
    from scipy.optimize import minimize

    n, d = rows.n, rows.d
    lam = 1.0 / (C * n)
    r = precond.n_rows(d)
    W0, b0 = init if init is not None else (np.zeros((d, k), np.float32), np.zeros(k, np.float32))
    # W' = P⁻¹·W, so a warm start from any earlier solution carries over.
    x0 = np.concatenate([precond.inverse(np.asarray(W0, np.float32), lam).ravel(), np.asarray(b0, np.float32)])
    # With fewer directions than features (the n×n Gram matrix's), the whole solve happens in V's coordinates:
    # the rows become Z·V (n × r, made once) and W becomes V's coefficients (‖W‖ unchanged, V's columns being
    # orthonormal), so a pass reads the n×r coordinates twice instead of Z and V twice each (rank's 5-fold probe
    # on 256 / 512 / 1,414 digits × 1,792 stage columns: 0.39 / 0.88 / 2.78 s → 0.17 / 0.37 / 2.43 s).
    in_span = r < d
    data = [(0, n, precond.span_coordinates(rows))] if in_span else None
    width = r if in_span else d
    p_span = precond.scales(lam)[0] if in_span else None  # P in V's coordinates: a scale per direction

    def piece(item, W: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        start, stop, Z = item
        S = Z @ W
        S += b
        part, dS = loss_and_grad(S, start, stop)
        return part, Z.T @ dS, dS.sum(axis=0, dtype=np.float64)

    def loss_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        Wp = x[:r * k].reshape(r, k).astype(np.float32)
        W = p_span * Wp if in_span else precond.forward(Wp, lam)
        b = x[r * k:].astype(np.float32)
        loss, gW, gb = 0.0, np.zeros((width, k), np.float32), np.zeros(k, np.float64)
        if in_span:
            parts = on_cores(list(cache_sized(data, width)), lambda item: piece(item, W, b))
        else:  # a streamed piece is read by the thread that works on it (StandardRows.map_pieces)
            parts = rows.map_pieces(lambda start, stop, Z: piece((start, stop, Z), W, b))
        for part, g, g_b in parts:
            loss += part
            gW += g
            gb += g_b
        # d/dW' of loss(P·W') + λ/2‖P·W'‖² is Pᵀ·(∇loss + λW)
        G = gW / np.float32(n) + np.float32(lam) * W
        gWp = p_span * G if in_span else precond.adjoint(G, lam)
        value = loss / n + 0.5 * lam * float(np.sum(np.square(W, dtype=np.float64)))
        return value, np.concatenate([gWp.ravel().astype(np.float64), gb / n])

    with single_threaded_blas():  # the pieces run on on_cores' threads: one pool in the loop
        result = minimize(loss_and_gradient, x0.astype(np.float64), jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-5, "maxcor": 10})
    W = precond.forward(result.x[:r * k].reshape(r, k).astype(np.float32), lam)
    return W, result.x[r * k:].astype(np.float32), max(1, int(result.nit))


def cache_sized(blocks, d: int):
    """``(start, stop, Z)`` blocks cut into pieces of about CACHE_BYTES: Z·W and Zᵀ·dS of one piece run
    while it is in cache, so a pass reads the rows from memory once, not twice (60,000 × 1,280: 47 ms a
    pass instead of 80)."""
    step = max(64, CACHE_BYTES // (4 * d))
    for start, stop, Z in blocks:
        for a in range(0, stop - start, step):
            yield start + a, min(stop, start + a + step), Z[a:a + step]


def cross_entropy(t: np.ndarray, k: int):
    """Softmax cross-entropy of the scores of rows a:b against targets t: summed loss and gradient."""
    t = np.asarray(t, dtype=np.int64)

    def loss_and_grad(S, a, b):
        target, rows = t[a:b], np.arange(b - a)
        S -= S.max(axis=1, keepdims=True)
        picked = S[rows, target].astype(np.float64)
        np.exp(S, out=S)
        total = S.sum(axis=1, keepdims=True)
        loss = float(np.sum(np.log(total[:, 0], dtype=np.float64) - picked))
        S /= total
        S[rows, target] -= 1.0
        return loss, S

    return loss_and_grad


def _signed_targets(t: np.ndarray, k: int) -> np.ndarray:
    """±1 class indicators: +1 in each row's target column, −1 elsewhere."""
    Y = -np.ones((len(t), k), np.float32)
    Y[np.arange(len(t)), t] = 1.0
    return Y


def squared_hinge(t: np.ndarray, k: int):
    """One-vs-rest squared hinge of the scores of rows a:b: summed loss and gradient."""
    sign = _signed_targets(np.asarray(t, dtype=np.int64), k)

    def loss_and_grad(S, a, b):
        sign_ab = sign[a:b]
        margin = np.maximum(1.0 - sign_ab * S, 0.0)
        return float(np.sum(np.square(margin, dtype=np.float64))), -2.0 * sign_ab * margin

    return loss_and_grad


def ridge_moments(rows, t, k):
    """Sufficient statistics of a ridge fit on StandardRows: Zᵀ·Z (float32 BLAS per block, summed as
    float64), Σz, Σy, Zᵀ·Y."""
    Y = _signed_targets(t, k)
    gram = np.zeros((rows.d, rows.d))
    zy = np.zeros((rows.d, k))
    zsum = np.zeros(rows.d)
    for a, b, Z in rows.blocks_of_rows():
        gram += Z.T @ Z
        zy += Z.T @ Y[a:b]
        zsum += Z.sum(0, dtype=np.float64)
    return gram, zsum, Y.sum(0, dtype=np.float64), zy, len(t)


def _solve_regularised(G: np.ndarray, R: np.ndarray, alpha: float) -> np.ndarray:
    """(G + alpha·I)⁻¹·R for a symmetric positive semi-definite G (float64)."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    A = G + alpha * np.eye(len(G))
    try:
        return cho_solve(cho_factor(A, check_finite=False), R, check_finite=False)
    except LinAlgError:  # alpha = 0 on a singular G: the least-squares solution
        return np.linalg.lstsq(A, R, rcond=None)[0]


def ridge_solutions(gram, zsum, ysum, zy, n, grid):
    """Centred ridge solutions for every alpha of ``grid`` from the moments (the d × d problem).

    One Cholesky solve per alpha: a grid of 6 costs less than the single eigendecomposition that would
    serve them all (at d = 3,328 a factorisation took 0.38 s, an eigendecomposition 7.5 s).
    """
    z_mean, y_mean = zsum / n, ysum / n
    G = gram - n * np.outer(z_mean, z_mean)
    R = zy - n * np.outer(z_mean, y_mean)
    out = []
    for alpha in grid:
        W = _solve_regularised(G, R, alpha)
        out.append((W.astype(np.float32), (y_mean - z_mean @ W).astype(np.float32), 1))
    return out


def ridge_kernel_solutions(Z: np.ndarray, t: np.ndarray, k: int, grid):
    """ridge_solutions for fewer rows than columns, from the n × n problem: the same coefficients, since
    (Zcᵀ·Zc + αI)⁻¹·Zcᵀ = Zcᵀ·(Zc·Zcᵀ + αI)⁻¹ for the centred rows Zc. 24 images of 3,328 numbers cost a
    24 × 24 solve instead of a 3,328 × 3,328 one (17 s before, for `featx train --head ridge`)."""
    Y = _signed_targets(t, k)
    z_mean, y_mean = Z.mean(0, dtype=np.float64), Y.mean(0, dtype=np.float64)
    Zc = Z - z_mean.astype(np.float32)
    K = row_gram(Zc).astype(np.float64)
    R = Y - y_mean
    out = []
    for alpha in grid:
        W = Zc.T @ _solve_regularised(K, R, alpha).astype(np.float32)
        out.append((W, (y_mean - z_mean @ W).astype(np.float32), 1))
    return out
