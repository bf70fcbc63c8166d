"""The feature store: catalog + shards keyed by backbone configuration, crash-safe writes, finding stores."""

from ..lazy import lazy_exports

_EXPORTS = {
    "verify_cache": "verify", "verify_store": "verify",
    "VectorView": "view", "normalize": "view", "row_norms": "view",
    "LayerSelection": "columns", "select_layers": "columns",
    "ChosenStoreNotice": "finder", "describe_stores": "finder", "find_dataset": "finder", "list_stores": "finder", "store_for_config": "finder",
    "DEFAULT_CACHE": "store", "SPLIT_ORDER": "catalog", "Dataset": "catalog", "FeatureStore": "store", "Member": "catalog", "open_store": "store", "store_dir": "store",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
