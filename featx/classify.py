"""Train, evaluate and apply classifier heads on a store's datasets: the work behind train/evaluate/predict."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score

from .backbones import Backbone
from .bundles import HeadBundle, save_bundle
from .embed import embed_files
from .errors import FeatxError
from .heads import HEADS
from .store import FeatureStore, safe_name


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


@dataclass
class TrainResult:
    head: str
    dataset: str
    store: str
    n_train: int
    n_test: int
    accuracy: float | None
    macro_f1: float | None
    train_seconds: float
    params: dict
    path: str
    test: Metrics | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("test")
        return d


def default_head_path(store: FeatureStore, dataset: str, head: str) -> Path:
    """``<store>/heads/<dataset>-<head>.npz``: next to the vectors it was trained on."""
    return store.path / "heads" / f"{safe_name(dataset)}-{head}.npz"


def _labeled(store: FeatureStore, dataset: str, split: str):
    X, y, _, _ = store.load(dataset, split)
    if y is None:
        raise FeatxError(
            f"dataset {dataset!r} has no labels; embed a folder with class sub-folders or a CSV with a label column."
        )
    return X, y


def train_head(
    store: FeatureStore, dataset: str, head: str = "logreg", out: str | Path | None = None, **params
) -> TrainResult:
    """Fit ``head`` on the dataset's train split, score it on its test split, save the bundle.

    Parameters
    ----------
    store : the feature store holding ``dataset``.
    dataset : dataset name in the store.
    head : one of ``HEADS`` (logreg, ridge, linear-svm, knn).
    out : bundle path; defaults to ``default_head_path``.
    params : passed to the head's constructor (e.g. ``C=0.1`` to skip the search).
    """
    if head not in HEADS:
        raise FeatxError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}.")
    info = store.dataset(dataset)
    if "train" not in info.splits:
        raise FeatxError(f"dataset {dataset!r} has no train split (splits: {', '.join(info.splits) or 'none'}).")
    X, y = _labeled(store, dataset, "train")
    n_classes = len(set(y))
    if n_classes < 2:
        raise FeatxError(
            f"dataset {dataset!r} has a single class ({y[0]!r}) in its train split; a classifier needs at least two."
        )
    estimator = HEADS[head](**params)
    start = time.perf_counter()
    estimator.fit(np.asarray(X), y)
    seconds = time.perf_counter() - start
    test = None
    if "test" in info.splits:
        Xt, yt = _labeled(store, dataset, "test")
        test = score_predictions(yt, estimator.predict(np.asarray(Xt)))
    chosen = {k: v for k, v in vars(estimator).items() if k.endswith("_") and isinstance(v, (int, float))
              and k not in ("n_features_in_",)}
    path = Path(out) if out else default_head_path(store, dataset, head)
    metrics = {"train_seconds": seconds, "n_train": len(y), "test": test.to_dict() if test else None}
    save_bundle(HeadBundle(estimator, head, store.config, dataset, metrics), path)
    return TrainResult(
        head=head,
        dataset=dataset,
        store=str(store.path),
        n_train=len(y),
        n_test=test.n if test else 0,
        accuracy=test.accuracy if test else None,
        macro_f1=test.macro_f1 if test else None,
        train_seconds=round(seconds, 3),
        params={**{k: v for k, v in estimator.get_params().items() if not isinstance(v, tuple)}, **chosen},
        path=str(path),
        test=test,
    )


def evaluate_head(bundle: HeadBundle, store: FeatureStore, dataset: str, split: str = "test") -> Metrics:
    """The bundle's metrics on any dataset split embedded with its backbone configuration."""
    bundle.check_config(store.config)
    X, y = _labeled(store, dataset, split)
    return score_predictions(y, bundle.head.predict(np.asarray(X)))


def predict_files(
    bundle: HeadBundle, paths: Sequence[str], backbone: Backbone, store: FeatureStore, top_k: int = 3
) -> list[dict]:
    """Top-k classes with probabilities for image files or folders, embedding through the cache.

    Raises FeatxError naming every image that cannot be read, before predicting anything.
    """
    if top_k < 1:
        raise FeatxError(f"--top-k must be at least 1, not {top_k}.")
    bundle.check_config(backbone.config)
    X, found, _ = embed_files(paths, backbone, store, strict=True)
    proba = bundle.head.predict_proba(X)
    classes = bundle.classes
    out = []
    for path, p in zip(found, proba):
        order = np.argsort(-p)[:top_k]
        out.append({"path": path, "predictions": [{"label": classes[j], "probability": float(p[j])} for j in order]})
    return out
