"""A small non-linear head: one hidden layer on the standardised vectors, stopped early on held-out data."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..store.view import normalize
from .linear import SCALINGS
from .rows import BLOCK_BYTES, StandardRows
from .scoring import decision_of, softmax
from .solvers import holdout_indices


class MLPHead(ClassifierMixin, BaseEstimator):
    """One hidden ReLU layer and a softmax, trained with AdamW on minibatches; scikit-learn's contract.

    The vectors are standardised as LogisticHead standardises them (each layer block L2-normalised,
    then centred and scaled). Training holds out ``val_fraction`` of the rows, stratified, and keeps
    the weights of the epoch with the best held-out accuracy, stopping ``patience`` epochs after it.
    The forward and backward passes run in torch (imported when ``fit`` runs; in bfloat16 where the CPU
    computes it natively, as featx's embedding does); prediction is plain numpy on the saved weights,
    so a bundle needs no torch to predict. The standardised training rows are held in memory
    (60,000 × 1,792: 430 MB), unlike the linear heads, which can stream them.

    Parameters
    ----------
    hidden : units of the hidden layer.
    dropout : share of the hidden units dropped at each training step.
    alpha : AdamW's weight decay.
    learning_rate : AdamW's step size.
    batch_size : rows a step, at most; an epoch takes at least 8 steps (small datasets get smaller batches).
    max_epochs : passes over the training rows at most.
    patience : epochs without a better held-out accuracy before training stops.
    val_fraction : share of the rows held out for early stopping (none below 20 rows: max_epochs then).
    scaling, layer_widths : as LogisticHead's.
    random_state : seed of the held-out split, the initial weights and the minibatch order.
    """

    def __init__(self, hidden=512, dropout=0.5, alpha=1e-4, learning_rate=1e-3, batch_size=1024, max_epochs=40,
                 patience=4, val_fraction=0.1, scaling="l2", layer_widths=None, random_state=0):
        self.hidden = hidden
        self.dropout = dropout
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.scaling = scaling
        self.layer_widths = layer_widths
        self.random_state = random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float16])
        check_classification_targets(y)
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, not {self.scaling!r}.")
        self.classes_ = np.unique(y)
        t = np.searchsorted(self.classes_, y)
        Z = StandardRows.fit(X, l2=self.scaling == "l2", layer_widths=self.layer_widths)
        self.mean_, self.scale_ = Z.mean, Z.scale
        k, d = len(self.classes_), Z.d
        if k < 2:
            self.hidden_coef_ = np.zeros((1, d), np.float32)
            self.hidden_intercept_ = np.zeros(1, np.float32)
            self.coef_, self.intercept_ = np.zeros((1, 1), np.float32), np.zeros(1, np.float32)
            self.n_epochs_, self.best_epoch_, self.search_ = 0, 0, {}
            return self
        rows = Z.dense if Z.dense is not None else Z.take(np.arange(Z.n))
        if self.val_fraction and len(t) >= 20:
            fit_idx, val_idx = holdout_indices(t, self.val_fraction, self.random_state)
        else:
            fit_idx, val_idx = np.arange(len(t)), np.arange(0)
        self.search_ = {}  # held-out accuracy after each epoch: the epoch kept is chosen on it
        (self.hidden_coef_, self.hidden_intercept_, self.coef_, self.intercept_), self.n_epochs_, \
            self.best_epoch_ = _train(rows, t, k, np.sort(fit_idx), np.sort(val_idx), self)
        return self

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32, np.float16], reset=False)
        out = np.empty((len(X), self.coef_.shape[0]), np.float32)
        step = max(1, BLOCK_BYTES // (4 * max(X.shape[1], self.hidden)))  # a memory map is never copied whole
        for a in range(0, len(X), step):
            Z = np.asarray(X[a:a + step], dtype=np.float32)
            if self.scaling == "l2":
                Z = normalize(Z, layer_widths=self.layer_widths)
            H = ((Z - self.mean_) / self.scale_) @ self.hidden_coef_.T + self.hidden_intercept_
            np.maximum(H, 0.0, out=H)
            out[a:a + step] = H @ self.coef_.T + self.intercept_
        return out

    def predict_proba(self, X):
        scores = self._scores(X)
        return np.ones((len(scores), 1)) if scores.shape[1] == 1 else softmax(scores.astype(np.float64))

    def decision_function(self, X):
        return decision_of(self._scores(X))

    def predict(self, X):
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]


def _train(Z: np.ndarray, t: np.ndarray, k: int, fit_idx: np.ndarray, val_idx: np.ndarray, head: MLPHead):
    """AdamW on minibatches of ``Z[fit_idx]``; the weights of the best held-out epoch, the epochs run, and which
    was best. Weights come back as numpy arrays in Linear's layout ((out, in) and (out,))."""
    import torch

    from ..hardware import compute_threads, cpu_has_native_bf16

    torch.set_num_threads(compute_threads())
    # The initial weights and dropout draw from torch's global generator: seeded here, the caller's state kept
    with torch.random.fork_rng():
        torch.manual_seed(int(head.random_state or 0))
        return _epochs(torch, Z, t, k, fit_idx, val_idx, head, cpu_has_native_bf16())


def _epochs(torch, Z, t, k, fit_idx, val_idx, head: MLPHead, bf16: bool):
    generator = torch.Generator().manual_seed(int(head.random_state or 0))
    model = torch.nn.Sequential(torch.nn.Linear(Z.shape[1], head.hidden), torch.nn.ReLU(),
                                torch.nn.Dropout(head.dropout), torch.nn.Linear(head.hidden, k))
    optimiser = torch.optim.AdamW(model.parameters(), lr=head.learning_rate, weight_decay=head.alpha)
    X_fit, t_fit = torch.from_numpy(np.ascontiguousarray(Z[fit_idx])), torch.from_numpy(t[fit_idx].astype(np.int64))
    X_val, t_val = torch.from_numpy(np.ascontiguousarray(Z[val_idx])), torch.from_numpy(t[val_idx].astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()
    best, best_epoch, best_state, epoch = -1.0, 0, None, 0
    # at least 8 steps an epoch: 1,131 digits in one batch of 1,024 would learn a step an epoch
    batch_size = max(1, min(head.batch_size, len(X_fit) // 8))
    for epoch in range(1, head.max_epochs + 1):
        model.train()
        for batch in torch.randperm(len(X_fit), generator=generator).split(batch_size):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(X_fit[batch]), t_fit[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if not len(val_idx):
            continue
        model.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            accuracy = float((model(X_val).argmax(1) == t_val).float().mean())
        head.search_[epoch] = accuracy
        if accuracy > best:
            best, best_epoch = accuracy, epoch
            best_state = [p.detach().clone() for p in model.parameters()]
        elif epoch - best_epoch >= head.patience:
            break
    if best_state is not None:
        with torch.no_grad():
            for p, saved in zip(model.parameters(), best_state):
                p.copy_(saved)
    else:
        best_epoch = epoch
    weights = tuple(np.ascontiguousarray(p.detach().numpy(), dtype=np.float32) for p in model.parameters())
    return weights, epoch, best_epoch
