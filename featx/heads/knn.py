"""The k-nearest-neighbour head: a similarity-weighted vote over exact cosine search (FAISS)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..search.flat import flat_search
from ..store.view import normalize
from .solvers import holdout_indices

K_GRID = (1, 3, 5, 10, 20, 50)


class KNNHead(ClassifierMixin, BaseEstimator):
    """k-nearest-neighbour vote on cosine similarity (FAISS inner product on L2-normalised vectors).

    Each neighbour votes with its similarity. Parameters: ``n_neighbors`` (None chooses it from
    ``k_grid`` on a held-out ``val_fraction``), ``random_state`` for that split, ``layer_widths`` the layer
    widths of a multi-layer recipe (each layer normalised on its own, see ``normalize``).
    """

    def __init__(self, n_neighbors=None, k_grid=K_GRID, val_fraction=0.2, layer_widths=None, random_state=0):
        self.n_neighbors = n_neighbors
        self.layer_widths = layer_widths
        self.k_grid = k_grid
        self.val_fraction = val_fraction
        self.random_state = random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, t = np.unique(y, return_inverse=True)
        self.vectors_ = normalize(X, layer_widths=self.layer_widths)
        self.labels_ = t.astype(np.int64)
        if self.n_neighbors is not None:
            self.n_neighbors_ = int(self.n_neighbors)
        elif len(self.classes_) < 2 or len(t) < 3:
            self.n_neighbors_ = 1
        else:
            fit_idx, val_idx = holdout_indices(t, self.val_fraction, self.random_state)
            grid = [k for k in sorted(self.k_grid) if k <= len(fit_idx)] or [1]
            D, I = flat_search(self.vectors_[fit_idx], self.vectors_[val_idx], max(grid))
            labels = self.labels_[fit_idx][I]
            self.search_ = {}
            for k in grid:
                votes = _votes(D[:, :k], labels[:, :k], len(self.classes_))
                self.search_[k] = float(np.mean(votes.argmax(1) == t[val_idx]))
            self.n_neighbors_ = max(grid, key=lambda k: (self.search_[k], -k))
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        k = min(self.n_neighbors_, len(self.vectors_))
        D, I = flat_search(self.vectors_, normalize(X, layer_widths=self.layer_widths), k)
        votes = _votes(D, self.labels_[I], len(self.classes_))
        return votes / votes.sum(axis=1, keepdims=True)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def _votes(D: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    # Similarity-weighted; the small floor keeps a vote from an orthogonal neighbour above zero.
    weights = np.maximum(D, 0.0) + 1e-6
    votes = np.zeros((len(D), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(D)), D.shape[1]), labels.ravel()), weights.ravel())
    return votes
