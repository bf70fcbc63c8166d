"""The HTTP service: the app over the library, micro-batching, limits, and running it under uvicorn."""

from ..lazy import lazy_exports

_EXPORTS = {
    "create_app": "app",
    "Resources": "resources", "open_resources": "resources",
    "serve": "server",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
