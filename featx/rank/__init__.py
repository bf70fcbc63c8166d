"""Ranking backbones and recipes by how well they will transfer: LogME (more to come with `featx rank`)."""

from ..lazy import lazy_exports

_EXPORTS = {"logme": "logme"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
