"""featx: frozen-backbone feature stores, fast classical heads and FAISS search for transfer learning."""

__version__ = "0.1.0"

from .lazy import lazy_exports  # noqa: E402

# Public API, imported on first use so `featx --help` and `featx stores` do not pay for importing torch.
_EXPORTS = {
    "create_backbone": "backbones", "list_backbones": "backbones", "register_backbone": "backbones",
    "load_runtime": "runtimes", "runtime_for": "runtimes",
    "BackboneConfig": "config", "PreprocessConfig": "config", "Recipe": "config", "StoreQuery": "config",
    "open_source": "data", "embed_source": "embed", "embed_into_store": "embed", "FeatxError": "errors",
    "FeatureStore": "store", "describe_stores": "store", "find_dataset": "store", "list_stores": "store",
    "open_store": "store",
    "HEADS": "heads", "train_head": "heads", "evaluate_bundle": "heads", "predict_images": "heads",
    "index_dataset": "search", "search_dataset": "search", "find_duplicates": "search",
    "finetune_source": "transfer", "compare_source": "transfer", "rank_candidates": "rank",
    "audit_dataset": "audit",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
