"""Auditing a labelled dataset from its stored vectors: label issues, train/test leaks, outliers."""

from ..lazy import lazy_exports

_EXPORTS = {
    "audit_dataset": "runner", "export_csv": "runner",
    "out_of_fold_probabilities": "oof",
    "LabelIssues": "confident", "find_label_issues": "confident",
    "find_leaks": "leaks", "find_outliers": "outliers",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
