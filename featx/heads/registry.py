"""The heads featx can train, by the name the CLI, bundles and compare use.

``HEAD_NAMES`` costs nothing to import; ``HEADS`` (name → estimator class) imports scikit-learn on first use.
"""

import importlib

_WHERE = {"logreg": ("linear", "LogisticHead"), "ridge": ("linear", "RidgeHead"),
          "linear-svm": ("linear", "LinearSVMHead"), "knn": ("knn", "KNNHead"), "mlp": ("mlp", "MLPHead")}
HEAD_NAMES = tuple(_WHERE)
LINEAR_HEADS = ("logreg", "ridge", "linear-svm")  # answered from their arrays alone (scoring.LinearPredictor)


def __getattr__(name: str):
    if name == "HEADS":
        heads = {h: getattr(importlib.import_module(f".{m}", __package__), c) for h, (m, c) in _WHERE.items()}
        globals()["HEADS"] = heads
        return heads
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
