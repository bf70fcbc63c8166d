"""Out-of-fold predicted probabilities: every row scored by a head trained on the other folds only."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
from ..errors import DataError, ParameterError
from ..heads.folds import out_of_fold, stratified_folds
from ..heads.registry import HEAD_NAMES
from ..hardware import Progress


@dataclass(frozen=True)
class OutOfFold:
    """``proba[i, j]``: the probability of ``classes[j]`` for row i, from a head that never saw row i."""

    proba: np.ndarray
    classes: np.ndarray
    folds: int
    note: str | None = None  # why fewer folds were used than asked for


def choose_folds(labels: np.ndarray, folds: int) -> tuple[int, str | None]:
    """``folds``, or fewer when the smallest class has fewer images (with a note); DataError when impossible."""
    if folds < 2:
        raise ParameterError("folds", f"must be at least 2, not {folds}.")
    names, counts = np.unique(labels, return_counts=True)
    if len(names) == 0:
        raise DataError("the dataset has no labelled images to audit.")
    if len(names) == 1:
        raise DataError(f"every image has the label {str(names[0])!r}: an audit of labels needs at least two classes.")
    lonely = [repr(str(n)) for n, c in zip(names, counts) if c < 2]
    if lonely:
        raise DataError(f"class(es) {', '.join(lonely)} have a single image: no head that has not seen it can "
                        "judge its label. Add images or leave the class out.")
    smallest = int(counts.min())
    if smallest < folds:
        small = str(names[counts.argmin()])
        return smallest, (f"{folds} folds asked for, but class {small!r} has only {smallest} images: "
                          f"used {smallest} folds.")
    return folds, None


def out_of_fold_probabilities(X: np.ndarray, labels, *, folds: int = 5, head: str = "logreg",
                              layer_widths: tuple[int, ...] | None = None, groups=None, seed: int = 0,
                              rows: np.ndarray | None = None, progress: Progress | None = None) -> OutOfFold:
    """K-fold (stratified) probabilities of each class for every labelled row, each fold's head fitted on the others.

    ``groups`` (content keys) keep copies of one image in the same fold, so no head has seen a row's
    twin either. ``rows``: label i belongs to X's row ``rows[i]`` (default: X's rows in order); the folds
    read X through them instead of copying it (the linear heads fit on rows where they lie).
    """
    if head not in HEAD_NAMES:
        raise ParameterError("head", f"must be one of {', '.join(HEAD_NAMES)}, not {head!r}.")
    labels = np.asarray(labels).astype(str)
    k, note = choose_folds(labels, folds)
    grouped = groups is not None and len(set(groups)) < len(groups)
    if grouped:
        n_groups = len(set(groups))
        if n_groups < 2:
            raise DataError(f"the {len(labels)} labelled images are copies of one image: out-of-fold predictions need "
                            "at least two distinct images. Its labels disagree if it has more than one class.")
        if n_groups < k:
            k, note = n_groups, f"{n_groups} folds: the {len(labels)} images hold only {n_groups} distinct ones"
    from ..heads.registry import HEADS

    reads_rows = "rows" in inspect.signature(HEADS[head].fit).parameters  # the linear heads do

    def fit(X_all, labels_fold, rows_fold=None):
        estimator = HEADS[head](layer_widths=layer_widths, random_state=seed)
        if rows_fold is None:
            return estimator.fit(X_all, labels_fold)
        if reads_rows:
            return estimator.fit(X_all, labels_fold, rows=rows_fold)
        return estimator.fit(X_all[rows_fold], labels_fold)  # a head that reads only arrays of its rows

    splits = stratified_folds(labels, k, seed, groups if grouped else None)
    proba, classes = out_of_fold(X, labels, splits, fit, rows=None if rows is None else np.asarray(rows),
                                 progress=progress)
    return OutOfFold(proba, classes, k, note)
