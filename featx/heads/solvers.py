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

    V and s are the eigenvectors and eigenvalues of the features' covariance, estimated on
    ``sample``, some rows of Z (``preconditioner_sample`` picks them). With p = 1/sqrt(c·s + λ), the Hessian of loss + λ/2‖W‖² in W' is close to the
    identity (c bounds the loss's curvature), so L-BFGS needs tens of iterations instead of hundreds.
    """

    def __init__(self, sample: np.ndarray, curvature: float):
        rows = sample.astype(np.float64)
        self.s, self.V = np.linalg.eigh(rows.T @ rows / len(rows))
        self.s = np.maximum(self.s, 0.0)
        self.curvature = curvature

    def scale(self, lam: float) -> np.ndarray:
        return 1.0 / np.sqrt(self.curvature * self.s + lam)


def preconditioner_sample(n: int, max_rows: int = 8192, seed: int = 0) -> np.ndarray | None:
    """Which rows of n estimate the preconditioner's covariance: all (None) up to ``max_rows``, else a sample."""
    return None if n <= max_rows else np.random.default_rng(seed).choice(n, max_rows, replace=False)


def lbfgs(loss_and_grad, rows, C, k, precond: Preconditioner, init, max_iter: int, tol: float):
    """Minimise loss(Z·W + b) + ‖W‖² / (2·C·n) by full-batch L-BFGS in preconditioned coordinates.

    That is scikit-learn's objective C·Σ loss + ½‖W‖², divided by C·n. ``rows`` gives Z block by
    block (StandardRows: one block when Z is in memory); ``loss_and_grad(S, a, b)`` returns the summed
    loss of the scores S of rows a:b and its gradient, so a pass over the blocks is exactly the
    full-batch value. Gradients are written out by hand (no autograd) so the (n, d) product runs in
    its fast orientation, all in torch so that one thread pool works. Returns W (d, k), b (k,) and
    the iterations taken.
    """
    import torch

    n, d = rows.n, rows.d
    lam = 1.0 / (C * n)
    p = torch.from_numpy(precond.scale(lam).astype(np.float32)[:, None])
    V = torch.from_numpy(precond.V.astype(np.float32))
    W0, b0 = init if init is not None else (np.zeros((d, k), np.float32), np.zeros(k, np.float32))
    # W' = diag(1/p)·Vᵀ·W, so a warm start from any earlier solution carries over.
    Wp = (V.T @ torch.from_numpy(np.asarray(W0, np.float32))) / p
    b = torch.from_numpy(np.array(b0, dtype=np.float32))
    # tolerance_change is absolute on the mean loss (order 0.1-1), so 1e-4 is like scikit-learn's tol.
    opt = torch.optim.LBFGS([Wp, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-5, tolerance_change=tol,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure():
        W = V @ (p * Wp)
        loss, gW, gb = 0.0, torch.zeros(d, k), torch.zeros(k)
        for start, stop, Z in rows.blocks_of_rows():
            Zt = torch.from_numpy(Z)
            part, dS = loss_and_grad(torch.addmm(b, Zt, W), start, stop)
            loss += part
            gW += (dS.T @ Zt).T  # this orientation is several times faster than Zᵀ·dS on CPU
            gb += dS.sum(dim=0)
        Wp.grad = p * (V.T @ (gW / n)) + lam * p * p * Wp
        b.grad = gb / n
        return loss / n + 0.5 * lam * float(((p * Wp) ** 2).sum())

    opt.step(closure)
    n_iter = max(1, int(opt.state[opt._params[0]].get("n_iter", 1)))
    return (V @ (p * Wp)).numpy(), b.numpy().copy(), n_iter


def cross_entropy(t: np.ndarray, k: int):
    """Softmax cross-entropy of the scores of rows a:b against targets t: summed loss and gradient."""
    import torch

    target = torch.from_numpy(t.astype(np.int64))

    def loss_and_grad(S, a, b):
        rows, target_ab = torch.arange(b - a), target[a:b]
        logp = torch.log_softmax(S, dim=1)
        G = torch.exp(logp)
        G[rows, target_ab] -= 1.0
        return float(-logp[rows, target_ab].sum()), G

    return loss_and_grad


def squared_hinge(t: np.ndarray, k: int):
    """One-vs-rest squared hinge of the scores of rows a:b: summed loss and gradient."""
    import torch

    sign = -torch.ones((len(t), k))
    sign[torch.arange(len(t)), torch.from_numpy(t.astype(np.int64))] = 1.0

    def loss_and_grad(S, a, b):
        sign_ab = sign[a:b]
        margin = torch.clamp(1.0 - sign_ab * S, min=0.0)
        return float((margin * margin).sum()), -2.0 * sign_ab * margin

    return loss_and_grad


def ridge_moments(rows, t, k):
    """Sufficient statistics of a ridge fit on StandardRows: Zᵀ·Z (float32 BLAS per block, summed as
    float64), Σz, Σy, Zᵀ·Y."""
    import torch

    Y = -np.ones((len(t), k), np.float32)
    Y[np.arange(len(t)), t] = 1.0
    gram = np.zeros((rows.d, rows.d))
    zy = np.zeros((rows.d, k))
    zsum = np.zeros(rows.d)
    for a, b, Z in rows.blocks_of_rows():
        Zt = torch.from_numpy(Z)
        gram += (Zt.T @ Zt).double().numpy()
        zy += (torch.from_numpy(Y[a:b]).T @ Zt).T.double().numpy()
        zsum += Z.sum(0, dtype=np.float64)
    return gram, zsum, Y.sum(0, dtype=np.float64), zy, len(t)


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
