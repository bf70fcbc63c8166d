"""Heads: estimators with the scikit-learn contract, their solvers, bundles, metrics, and train/evaluate/predict."""

from ..lazy import lazy_exports

_EXPORTS = {
    "HeadBundle": "bundles", "load_bundle": "bundles", "save_bundle": "bundles",
    "KNNHead": "knn",
    "LinearSVMHead": "linear", "LogisticHead": "linear", "RidgeHead": "linear",
    "MLPHead": "mlp",
    "Metrics": "metrics", "score_predictions": "metrics",
    "HEADS": "registry",
    "TrainResult": "workflows", "evaluate_bundle": "workflows", "evaluate_head": "workflows", "predict_files": "workflows", "predict_images": "workflows", "top_classes": "workflows", "train_head": "workflows",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
