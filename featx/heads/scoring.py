"""A linear head's answers from its fitted arrays alone: numpy only, so predicting needs no scikit-learn."""

from __future__ import annotations

import numpy as np

from ..store.view import normalize

BLOCK_BYTES = 64 << 20  # float64 bytes per block of rows scored: a memory map is never copied whole


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(scores)
    return p / p.sum(axis=1, keepdims=True)


def linear_scores(X: np.ndarray, head) -> np.ndarray:
    """N(X) standardised by the head's ``mean_`` and ``scale_``, times ``coef_``ᵀ plus ``intercept_``, in float64
    blocks (N: the head's ``scaling``, each layer ``block`` normalised on its own with ``"l2"``)."""
    W = np.asarray(head.coef_).T.astype(np.float64)
    out = np.empty((len(X), W.shape[1]))
    step = max(1, BLOCK_BYTES // (8 * max(1, X.shape[1])))
    for a in range(0, len(X), step):
        Z = np.asarray(X[a:a + step], dtype=np.float64)
        if head.scaling == "l2":
            Z = normalize(Z, dtype=np.float64, layer_widths=head.layer_widths)
        out[a:a + step] = ((Z - head.mean_) / head.scale_) @ W + head.intercept_
    return out


def decision_of(scores: np.ndarray) -> np.ndarray:
    """Per-class scores as scikit-learn's decision_function gives them: one column for two classes."""
    if scores.shape[1] == 2:
        return scores[:, 1] - scores[:, 0]
    return scores[:, 0] if scores.shape[1] == 1 else scores


def probabilities(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of the scores at the head's temperature (a single class: probability 1)."""
    if scores.shape[1] == 1:
        return np.ones((len(scores), 1))
    return softmax(scores / temperature)


class LinearPredictor:
    """A saved linear head (logreg, ridge, linear-svm) as its arrays and parameters: predict, predict_proba and
    decision_function answer exactly as the fitted estimator does, through the same functions."""

    def __init__(self, params: dict, fitted: dict):
        self._params = dict(params)
        for k, v in {**params, **fitted}.items():
            setattr(self, k, v)

    def get_params(self, deep: bool = True) -> dict:
        return dict(self._params)

    def _checked(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {X.shape[-1] if X.ndim else 0} features, but this head expects "
                             f"{self.coef_.shape[1]}.")
        return X

    def decision_function(self, X) -> np.ndarray:
        return decision_of(linear_scores(self._checked(X), self))

    def predict_proba(self, X) -> np.ndarray:
        return probabilities(linear_scores(self._checked(X), self), self.temperature_)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(linear_scores(self._checked(X), self), axis=1)]
