"""Ranking backbones and recipes by how well they will transfer to a dataset, before embedding all of it."""

from ..lazy import lazy_exports

_EXPORTS = {
    "Candidate": "candidates", "default_candidates": "candidates", "parse_candidates": "candidates",
    "logme": "logme", "ProbeScore": "probe", "kfold_accuracy": "probe",
    "RankSettings": "settings", "rank_candidates": "runner", "recommend": "choice",
    "stratified_sample": "sample",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
