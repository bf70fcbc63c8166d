"""Train, evaluate and apply classifier heads on a store's datasets: the work behind train/evaluate/predict."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..embed import embed_files
from ..errors import BundleError, DataError, ImageError, ParameterError
from ..store import FeatureStore, open_store, store_for_config
from ..store.columns import select_layers
from ..store.paths import head_path
from .bundles import HeadBundle, load_bundle, save_bundle
from .metrics import Metrics, score_predictions
from .registry import HEAD_NAMES


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
    layers: list[str] = field(default_factory=list)
    test: Metrics | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("test")
        return d


def _labelled(store: FeatureStore, dataset: str, split: str, as_stored: bool = False):
    X, y, _, _ = store.load(dataset, split, as_stored=as_stored)
    if y is None:
        raise DataError(
            f"dataset {dataset!r} has no labels; embed a folder with class sub-folders or a CSV with a label column."
        )
    return X, y


def train_head(
    store: FeatureStore, dataset: str, head: str = "logreg", out: str | Path | None = None, *,
    use_layers: str | Sequence[str] | None = None, **params
) -> TrainResult:
    """Fit ``head`` on the dataset's train split, score it on its test split, save the bundle.

    Parameters
    ----------
    store : the feature store holding ``dataset``.
    dataset : dataset name in the store.
    head : one of ``HEADS`` (logreg, ridge, linear-svm, knn).
    out : bundle path; defaults to ``store.paths.head_path``.
    use_layers : the recipe's layers to train on (a comma list or names; default all). Several layers
        are normalised block by block (the head's ``blocks``), so each counts alike.
    params : passed to the head's constructor (e.g. ``C=0.1`` to skip the search).
    """
    if head not in HEAD_NAMES:
        raise ParameterError("head", f"must be one of {', '.join(HEAD_NAMES)}, not {head!r}.")
    selection = select_layers(store.config, use_layers)
    info = store.dataset(dataset)
    if "train" not in info.splits:
        raise DataError(f"dataset {dataset!r} has no train split (splits: {', '.join(info.splits) or 'none'}).")
    # As stored: a float16 store's memory map goes to the head as it is (heads convert block by block).
    X, y = _labelled(store, dataset, "train", as_stored=True)
    n_classes = len(set(y))
    if n_classes < 2:
        raise DataError(
            f"dataset {dataset!r} has a single class ({str(y[0])!r}) in its train split; a classifier needs at least two."
        )
    # Where the head goes is checked before the fit: a wrong --out fails at once, not after training.
    layers = None if use_layers is None else selection.layers
    path = Path(out) if out else head_path(store, dataset, head, layers)
    if out is None and store.read_only:
        raise BundleError(f"store {str(store.path)!r} is read-only here, so the head cannot be saved beside it: "
                          "pass out=FILE.", params=("out",))
    if out is None:
        path.parent.mkdir(exist_ok=True)
    elif not path.parent.is_dir():
        raise BundleError(f"cannot write the head to {str(path)!r}: folder {str(path.parent)!r} does not exist.",
                          params=("out",))
    if selection.layer_widths:  # every head normalises each layer on its own
        params.setdefault("layer_widths", selection.layer_widths)
    from .registry import HEADS

    estimator = HEADS[head](**params)
    start = time.perf_counter()
    estimator.fit(selection.take(np.asarray(X)), y)
    seconds = time.perf_counter() - start
    test = None
    if "test" in info.splits:
        Xt, yt = _labelled(store, dataset, "test", as_stored=True)
        test = score_predictions(yt, estimator.predict(selection.take(np.asarray(Xt))))
    chosen = {k: v for k, v in vars(estimator).items() if k.endswith("_") and isinstance(v, (int, float))
              and k not in ("n_features_in_",)}
    metrics = {"train_seconds": seconds, "n_train": len(y), "test": test.to_dict() if test else None}
    try:
        save_bundle(HeadBundle(estimator, head, store.config, dataset, metrics, layers=layers), path)
    except OSError as e:
        raise BundleError(f"cannot write the head to {str(path)!r}: {e.strerror or e}.", params=("out",)) from None
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
        layers=list(selection.layers),
        test=test,
    )


def evaluate_head(bundle: HeadBundle, store: FeatureStore, dataset: str, split: str = "test") -> Metrics:
    """The bundle's metrics on any dataset split embedded with its backbone configuration.

    Refuses a dataset whose labels share none with the head's classes: every answer would be wrong.
    """
    bundle.check_config(store.config)
    X, y = _labelled(store, dataset, split)
    if not set(map(str, y)) & set(bundle.classes):
        raise DataError(f"dataset {dataset!r} has none of the head's labels: the head knows "
                        f"{', '.join(bundle.classes[:10])}{' …' if len(bundle.classes) > 10 else ''}; the data has "
                        f"{', '.join(sorted(set(map(str, y)))[:10])}.")
    return score_predictions(y, bundle.head.predict(bundle.features(np.asarray(X))))


def predict_files(
    bundle: HeadBundle, paths: Sequence[str], backbone, store: FeatureStore, top_k: int = 3
) -> dict:
    """Top-k classes with probabilities for image files or folders, embedding through the cache.

    Returns ``{"results": [{"path", "predictions"}], "failures": [{"path", "reason"}]}``: the images
    that can be read are predicted, the others listed. Raises ImageError, naming each one, only
    when no image can be read.
    """
    check_top_k(top_k)
    bundle.check_config(backbone.config)
    X, found, failures = embed_files(paths, backbone, store)
    if not found:
        listed = "; ".join(f"{f['path']}: {f['reason']}" for f in failures)
        raise ImageError(f"no image could be read ({listed}).")
    results = [{"path": path, "predictions": preds} for path, preds in zip(found, top_classes(bundle, X, top_k))]
    return {"results": results, "failures": failures}


def evaluate_bundle(head: str | Path, dataset: str, split: str = "test", cache: str | Path | None = None) -> dict:
    """Score the head bundle at ``head`` on a dataset split embedded with its backbone configuration.

    Returns ``{"head", "dataset", "split", **Metrics.to_dict()}``.
    """
    bundle = load_bundle(head)
    with store_for_config(bundle.config, cache, dataset) as store:
        m = evaluate_head(bundle, store, dataset, split)
    return {"head": bundle.head_name, "dataset": dataset, "split": split, **m.to_dict()}


def predict_images(head: str | Path, images: Sequence[str], top_k: int = 3, *, weights: str | Path | None = None,
                   cache: str | Path | None = None, runtime: str = "auto") -> dict:
    """Top-k classes for image files or folders with the head bundle at ``head`` (see :func:`predict_files`).

    The head's backbone is re-created on ``runtime`` (``weights``: the file it was embedded with, when
    not the default) and new images are embedded through its store under ``cache``.
    """
    from ..runtimes import runtime_for

    check_top_k(top_k)
    bundle = load_bundle(head)
    backbone = runtime_for(bundle.config, runtime=runtime, weights=weights, cache=cache)
    with open_store(backbone.config, cache) as store:
        return predict_files(bundle, list(images), backbone, store, top_k)


def check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise ParameterError("top_k", f"must be at least 1, not {top_k}.")


def top_classes(bundle: HeadBundle, X: np.ndarray, top_k: int) -> list[list[dict]]:
    """For each row of X, the head's ``top_k`` classes with their probabilities, most likely first."""
    proba = bundle.head.predict_proba(bundle.features(np.asarray(X)))
    classes = bundle.classes
    return [[{"label": classes[j], "probability": float(p[j])} for j in np.argsort(-p)[:top_k]] for p in proba]
