"""Ranking backbones and recipes by how well they will transfer: the sample, the k-fold probe, LogME."""

from ..lazy import lazy_exports

_EXPORTS = {"logme": "logme", "ProbeScore": "probe", "kfold_accuracy": "probe", "stratified_sample": "sample"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
