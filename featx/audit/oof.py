"""Out-of-fold predicted probabilities: every row scored by a head trained on the other folds only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..errors import DataError, ParameterError
from ..heads import HEADS
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
                              blocks: tuple[int, ...] | None = None, groups=None, seed: int = 0,
                              progress: Progress | None = None) -> OutOfFold:
    """K-fold (stratified) probabilities of each class for every row, each fold's head fitted on the others.

    ``groups`` (content keys) keep copies of one image in the same fold, so no head has seen a row's
    twin either.
    """
    if head not in HEADS:
        raise ParameterError("head", f"must be one of {', '.join(HEADS)}, not {head!r}.")
    labels = np.asarray(labels).astype(str)
    k, note = choose_folds(labels, folds)
    classes = np.unique(labels)
    proba = np.zeros((len(labels), len(classes)), dtype=np.float32)
    if groups is not None and len(set(groups)) < len(groups):
        n_groups = len(set(groups))
        if n_groups < 2:
            raise DataError(f"the {len(labels)} labelled images are copies of one image: out-of-fold predictions need "
                            "at least two distinct images. Its labels disagree if it has more than one class.")
        if n_groups < k:
            k, note = n_groups, f"{n_groups} folds: the {len(labels)} images hold only {n_groups} distinct ones"
        folds_of = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(X, labels, groups)
    else:
        folds_of = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, labels)
    for train, held in folds_of:
        estimator = HEADS[head](blocks=blocks, random_state=seed).fit(X[train], labels[train])
        columns = np.searchsorted(classes, estimator.classes_)
        proba[np.ix_(held, columns)] = estimator.predict_proba(X[held])
        if progress:
            progress("folds", 1, k)
    return OutOfFold(proba, classes, k, note)
