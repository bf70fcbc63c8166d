"""Inference runtimes: torch (the reference and fallback) and OpenVINO, and auto's measured choice."""

from ..lazy import lazy_exports

RUNTIMES = ("auto", "torch", "openvino")  # what runs the backbone's forward pass (`--runtime`)


def as_runtime(model):
    """``model`` itself when it is a Runtime; a torch Backbone runs on torch (torch imported only then)."""
    from .base import Runtime

    if isinstance(model, Runtime):
        return model
    from .torch_runtime import TorchRuntime

    return TorchRuntime(model)


_EXPORTS = {
    "AGREEMENT": "base", "Runtime": "base", "RuntimeChoice": "base",
    "TorchRuntime": "torch_runtime",
    "OpenVINORuntime": "openvino_runtime", "openvino_available": "openvino_runtime",
    "load_runtime": "load", "runtime_for": "load",
}
__all__ = sorted(_EXPORTS) + ["RUNTIMES", "as_runtime"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
