"""Classification metrics on one split: accuracy, macro-F1, per-class recall, the confusion matrix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Metrics:
    """Classification metrics on one split; ``to_dict()`` is what the CLI prints as JSON."""

    n: int
    accuracy: float | None
    macro_f1: float | None
    per_class_recall: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray) -> Metrics:
    """Accuracy, macro-F1, per-class recall and the confusion matrix over every label seen."""
    from sklearn.metrics import confusion_matrix, f1_score, recall_score  # here: predicting needs no scikit-learn

    if len(y_true) == 0:
        return Metrics(0, None, None)
    labels = sorted(set(y_true) | set(y_pred))
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return Metrics(
        n=len(y_true),
        accuracy=float(np.mean(y_true == y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0)),
        per_class_recall={str(c): float(r) for c, r in zip(labels, recall)},
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        labels=[str(c) for c in labels],
    )
