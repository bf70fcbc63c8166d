"""Choosing which images to label first from their stored vectors: typical and diverse, then uncertain."""

from ..lazy import lazy_exports

_EXPORTS = {
    "select_images": "runner", "STRATEGIES": "runner",
    "typical": "strategies", "coverage": "strategies", "uncertain": "strategies", "random_picks": "strategies",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
