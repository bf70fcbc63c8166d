"""featx: frozen-backbone feature stores, fast classical heads and FAISS search for transfer learning."""

import importlib

__version__ = "0.1.0"

# Public API, imported on first use so `featx --help` does not pay for importing torch.
_API = {
    "create_backbone": "backbones", "list_backbones": "backbones", "register_backbone": "backbones",
    "embed_source": "embed", "FeatxError": "errors", "open_source": "sources",
    "FeatureStore": "store", "find_dataset": "store", "list_stores": "store", "open_store": "store",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'featx' has no attribute {name!r}")
