"""Transfer: fine-tuning, K-shot subsets, frozen-versus-fine-tuned comparisons and their reports."""

from ..lazy import lazy_exports

_EXPORTS = {
    "load_checkpoint": "checkpoints", "save_checkpoint": "checkpoints",
    "run_compare": "compare",
    "FinetuneResult": "finetune", "finetune": "finetune",
    "CompareSettings": "settings", "FinetuneSettings": "settings", "parse_methods": "settings", "parse_shots": "settings",
    "LabelledSet": "subsets", "carve_validation": "subsets", "check_shots": "subsets", "draw_shots": "subsets", "labelled_splits": "subsets",
    "compare_source": "workflows", "finetune_source": "workflows", "training_backbone": "workflows",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
