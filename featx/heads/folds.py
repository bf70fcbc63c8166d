"""Out-of-fold answers: every row scored by a head fitted on the other folds only (rank's probe, audit's labels)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..hardware import Progress

HELD_BYTES = 256 << 20  # a held fold's rows gathered at a time to be scored


def stratified_folds(labels: np.ndarray, folds: int, seed: int, groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held) row indices of ``folds`` stratified folds, shuffled by ``seed``; with ``groups`` (content keys),
    the copies of one image share a fold, so no head has seen a held row's twin either."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None:
        return list(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(labels, labels, groups))
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(labels, labels))


def out_of_fold(X: np.ndarray, labels: np.ndarray, splits, fit: Callable, *, rows: np.ndarray | None = None,
                progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``proba[i, j]``, the probability of ``classes[j]`` for row i from ``fit(X[train], labels[train])`` (a fitted
    head) of the fold that held row i out; and ``classes``, the sorted labels. ``fit`` may carry what one fold
    learnt to the next (rank's probe chooses C on its first fold only).

    With ``rows`` (label i is X's row ``rows[i]``), each fold is fitted as ``fit(X, labels[train], rows[train])``:
    X is never copied whole for a fold (a head that takes ``rows=`` reads them where they lie), and the held fold's
    rows are gathered HELD_BYTES at a time to be scored.
    """
    classes = np.unique(labels)
    proba = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for train, held in splits:
        if rows is None:
            head = fit(X[train], labels[train])
            proba[np.ix_(held, np.searchsorted(classes, head.classes_))] = head.predict_proba(X[held])
        else:
            head = fit(X, labels[train], rows[train])
            columns = np.searchsorted(classes, head.classes_)
            step = max(1, HELD_BYTES // (4 * X.shape[1]))
            for a in range(0, len(held), step):  # the held rows gathered a block at a time, not as one copy
                part = held[a:a + step]
                proba[np.ix_(part, columns)] = head.predict_proba(X[rows[part]])
        if progress:
            progress("folds", 1, len(splits))
    return proba, classes
