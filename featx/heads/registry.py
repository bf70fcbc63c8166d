"""The heads featx can train, by the name the CLI, bundles and compare use."""

from .knn import KNNHead
from .linear import LinearSVMHead, LogisticHead, RidgeHead
from .mlp import MLPHead

HEADS = {"logreg": LogisticHead, "ridge": RidgeHead, "linear-svm": LinearSVMHead, "knn": KNNHead, "mlp": MLPHead}
