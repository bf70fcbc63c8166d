"""2-D maps of a dataset's vectors for the page: computed once, kept beside the store."""

from ..lazy import lazy_exports

_EXPORTS = {"Layout": "layout", "compute_layout": "layout", "dataset_map": "layout", "map_path": "layout"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
