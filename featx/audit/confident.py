"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021): which given labels are likely wrong.

From out-of-fold probabilities: per-class thresholds (the average self-confidence of each class),
the confident joint of given against likely-true labels, calibrated to the class counts, then
"prune by noise rate": for each pair (given i, true j), the n·Q[i, j] images labelled i with the
largest margin p(j) − p(i) are flagged. Written from the paper (cleanlab, its reference code, is
AGPL-licensed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANKINGS = ("self_confidence", "normalized_margin")


@dataclass(frozen=True)
class LabelIssues:
    """Flagged rows (worst label quality first), suggestions, and what the joint says about each class."""

    rows: np.ndarray  # indices of flagged rows, lowest quality first
    quality: np.ndarray  # label quality score of every row (lower: more likely wrong)
    suggested: np.ndarray  # per row: the most likely other class (index into classes)
    noise_rate: np.ndarray  # per class: estimated share of its given labels that are wrong
    joint: np.ndarray  # calibrated joint Q[given, true], sums to 1
    confident_joint: np.ndarray  # counts C[given, true]


def per_class_thresholds(proba: np.ndarray, given: np.ndarray) -> np.ndarray:
    """t_j: the mean probability of class j over the rows labelled j."""
    m = proba.shape[1]
    return np.array([proba[given == j, j].mean() if np.any(given == j) else 1.0 for j in range(m)])


def confident_joint(proba: np.ndarray, given: np.ndarray) -> np.ndarray:
    """C[i, j]: rows labelled i whose probability of j reaches t_j (the likeliest such j when several do)."""
    m = proba.shape[1]
    above = proba >= per_class_thresholds(proba, given)[None, :]
    masked = np.where(above, proba, -1.0)
    true = masked.argmax(axis=1)
    counted = above.any(axis=1)
    C = np.zeros((m, m), dtype=np.int64)
    np.add.at(C, (given[counted], true[counted]), 1)
    return C


def calibrate(C: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Q: the confident joint with each row rescaled to its class's count, normalised to sum 1."""
    counts = np.bincount(given, minlength=C.shape[0]).astype(float)
    rows = C.sum(axis=1, keepdims=True).astype(float)
    scaled = np.divide(C * counts[:, None], rows, out=np.zeros_like(C, dtype=float), where=rows > 0)
    # a class whose rows all fell below every threshold keeps its count on the diagonal: nothing known against it
    empty = rows[:, 0] == 0
    scaled[empty, empty] = counts[empty]
    return scaled / scaled.sum()


def label_quality(proba: np.ndarray, given: np.ndarray, ranking: str = "self_confidence") -> np.ndarray:
    """Per row: p(given) (``self_confidence``) or p(given) − max other p, mapped to [0, 1] (``normalized_margin``)."""
    own = proba[np.arange(len(given)), given]
    if ranking == "self_confidence":
        return own
    if ranking == "normalized_margin":
        others = proba.copy()
        others[np.arange(len(given)), given] = -np.inf
        return (own - others.max(axis=1) + 1.0) / 2.0
    raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, not {ranking!r}")


def find_label_issues(proba: np.ndarray, given: np.ndarray, ranking: str = "self_confidence") -> LabelIssues:
    """Rows whose given label (an index into the probability columns) confident learning finds likely wrong."""
    proba = np.asarray(proba, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    n, m = proba.shape
    C = confident_joint(proba, given)
    Q = calibrate(C, given)
    flagged = np.zeros(n, dtype=bool)
    for i in range(m):
        rows_i = np.flatnonzero(given == i)
        for j in range(m):
            if i == j:
                continue
            k = int(round(n * Q[i, j]))
            if k == 0 or len(rows_i) == 0:
                continue
            margin = proba[rows_i, j] - proba[rows_i, i]
            flagged[rows_i[np.argsort(-margin, kind="stable")[:k]]] = True
    # the model agreeing with the given label overrules the pruning (as in the paper's implementation)
    flagged &= proba.argmax(axis=1) != given
    quality = label_quality(proba, given, ranking)
    others = proba.copy()
    others[np.arange(n), given] = -np.inf
    rows = np.flatnonzero(flagged)
    rows = rows[np.argsort(quality[rows], kind="stable")]
    per_class = Q.sum(axis=1)
    noise = np.divide(per_class - np.diag(Q), per_class, out=np.zeros(m), where=per_class > 0)
    return LabelIssues(rows, quality, others.argmax(axis=1), noise, Q, C)


def neighbour_agreement(neighbours: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Per row: the share of its nearest other rows (``neighbours``: each row's indices, itself included or
    not, -1 for none) that carry its given label. A label its neighbours do not share is suspect without any
    model (training-free label-noise detection, as in SimiFeat: Zhu, Dong & Liu, ICML 2022)."""
    n = len(given)
    others = np.where(neighbours == np.arange(n)[:, None], -1, neighbours)
    valid = others >= 0
    same = (given[np.maximum(others, 0)] == given[:, None]) & valid
    return same.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def confused_pairs(issues: LabelIssues, classes, top: int = 10) -> list[dict]:
    """The (given, likely true) class pairs with the most confident-joint counts off the diagonal."""
    C = issues.confident_joint
    pairs = [(int(C[i, j]), i, j) for i in range(len(C)) for j in range(len(C)) if i != j and C[i, j] > 0]
    pairs.sort(reverse=True)
    return [{"given": str(classes[i]), "likely": str(classes[j]), "count": c} for c, i, j in pairs[:top]]
