"""The heads' solvers: preconditioned L-BFGS with hand-written gradients, closed-form ridge, temperature scaling.

torch is imported inside the functions that run it, so the heads' names and classes load without it.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.model_selection import train_test_split


def holdout_indices(y: np.ndarray, val_fraction: float, random_state) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a held-out split of the training data, stratified when every class can afford it."""
    _, counts = np.unique(y, return_counts=True)
    n_val = max(1, int(round(len(y) * val_fraction)))
    stratify = y if counts.min() >= 2 and n_val >= len(counts) and len(y) - n_val >= len(counts) else None
    return train_test_split(np.arange(len(y)), test_size=n_val, random_state=random_state, stratify=stratify)


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(scores)
    return p / p.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, t: np.ndarray) -> float:
    """The T minimising the log-loss of softmax(scores / T): turns margins into calibrated probabilities."""

    def nll(log_t: float) -> float:
        p = softmax(scores / np.exp(log_t))
        return -np.mean(np.log(p[np.arange(len(t)), t] + 1e-12))

    return float(np.exp(minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded").x))


class Preconditioner:
    """A change of variables W = V·diag(p)·W' that makes the regularised problem nearly isotropic.

    V and s are the eigenvectors and eigenvalues of the features' covariance, estimated on a
    sample of rows. With p = 1/sqrt(c·s + λ), the Hessian of loss + λ/2‖W‖² in W' is close to the
    identity (c bounds the loss's curvature), so L-BFGS needs tens of iterations instead of hundreds.
    """

    def __init__(self, Z: np.ndarray, curvature: float, max_rows: int = 8192, seed: int = 0):
        rows = Z if len(Z) <= max_rows else Z[np.random.default_rng(seed).choice(len(Z), max_rows, replace=False)]
        rows = rows.astype(np.float64)
        self.s, self.V = np.linalg.eigh(rows.T @ rows / len(rows))
        self.s = np.maximum(self.s, 0.0)
        self.curvature = curvature

    def scale(self, lam: float) -> np.ndarray:
        return 1.0 / np.sqrt(self.curvature * self.s + lam)


def lbfgs(loss_and_grad, Z, C, k, precond: Preconditioner, init, max_iter: int, tol: float):
    """Minimise loss(Z·W + b) + ‖W‖² / (2·C·n) by full-batch L-BFGS in preconditioned coordinates.

    That is scikit-learn's objective C·Σ loss + ½‖W‖², divided by C·n. ``loss_and_grad(S)`` returns
    the mean loss of the scores S and its gradient. Gradients are written out by hand (no autograd)
    so the (n, d) product runs in its fast orientation, all in torch so that one thread pool works.
    Returns W (d, k), b (k,) and the iterations taken.
    """
    import torch

    n, d = Z.shape
    lam = 1.0 / (C * n)
    p = torch.from_numpy(precond.scale(lam).astype(np.float32)[:, None])
    V = torch.from_numpy(precond.V.astype(np.float32))
    Zt = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32))
    W0, b0 = init if init is not None else (np.zeros((d, k), np.float32), np.zeros(k, np.float32))
    # W' = diag(1/p)·Vᵀ·W, so a warm start from any earlier solution carries over.
    Wp = (V.T @ torch.from_numpy(np.asarray(W0, np.float32))) / p
    b = torch.from_numpy(np.array(b0, dtype=np.float32))
    # tolerance_change is absolute on the mean loss (order 0.1-1), so 1e-4 is like scikit-learn's tol.
    opt = torch.optim.LBFGS([Wp, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-5, tolerance_change=tol,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure():
        W = V @ (p * Wp)
        loss, dS = loss_and_grad(torch.addmm(b, Zt, W))
        gW = (dS.T @ Zt).T  # this orientation is several times faster than Zᵀ·dS on CPU
        Wp.grad = p * (V.T @ gW) + lam * p * p * Wp
        b.grad = dS.sum(dim=0)
        return loss + 0.5 * lam * float(((p * Wp) ** 2).sum())

    opt.step(closure)
    n_iter = max(1, int(opt.state[opt._params[0]].get("n_iter", 1)))
    return (V @ (p * Wp)).numpy(), b.numpy().copy(), n_iter


def cross_entropy(t: np.ndarray, k: int):
    import torch

    target = torch.from_numpy(t.astype(np.int64))
    rows = torch.arange(len(t))

    def loss_and_grad(S):
        logp = torch.log_softmax(S, dim=1)
        G = torch.exp(logp)
        G[rows, target] -= 1.0
        return float(-logp[rows, target].mean()), G / len(t)

    return loss_and_grad


def squared_hinge(t: np.ndarray, k: int):
    import torch

    sign = -torch.ones((len(t), k))
    sign[torch.arange(len(t)), torch.from_numpy(t.astype(np.int64))] = 1.0

    def loss_and_grad(S):
        margin = torch.clamp(1.0 - sign * S, min=0.0)
        return float((margin * margin).sum()) / len(t), (-2.0 / len(t)) * sign * margin

    return loss_and_grad


def ridge_moments(Z, t, k):
    """Sufficient statistics of a ridge fit: Zᵀ·Z (float32 BLAS, accumulated as float64), Σz, Σy, Zᵀ·Y."""
    import torch

    Y = -np.ones((len(t), k), np.float32)
    Y[np.arange(len(t)), t] = 1.0
    Zt = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32))
    gram = (Zt.T @ Zt).double().numpy()
    zy = (torch.from_numpy(Y).T @ Zt).T.double().numpy()
    return gram, Z.sum(0, dtype=np.float64), Y.sum(0, dtype=np.float64), zy, len(t)


def ridge_solutions(gram, zsum, ysum, zy, n, grid):
    """Centred ridge solutions for every alpha from one eigendecomposition of the centred Gram matrix."""
    z_mean, y_mean = zsum / n, ysum / n
    evals, evecs = np.linalg.eigh(gram - n * np.outer(z_mean, z_mean))
    proj = evecs.T @ (zy - n * np.outer(z_mean, y_mean))
    out = []
    for alpha in grid:
        W = evecs @ (proj / (np.maximum(evals, 0.0) + alpha)[:, None])
        out.append((W.astype(np.float32), (y_mean - z_mean @ W).astype(np.float32), 1))
    return out
