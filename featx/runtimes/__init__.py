"""Inference runtimes: torch (the reference and fallback) and OpenVINO, and auto's measured choice."""

from ..lazy import lazy_exports

RUNTIMES = ("auto", "torch", "openvino")  # what runs the backbone's forward pass (`--runtime`)

_EXPORTS = {
    "AGREEMENT": "base", "Runtime": "base", "RuntimeChoice": "base", "as_runtime": "base",
    "TorchRuntime": "torch_runtime",
    "OpenVINORuntime": "openvino_runtime", "openvino_available": "openvino_runtime",
    "load_runtime": "load", "runtime_for": "load",
}
__all__ = sorted(_EXPORTS) + ["RUNTIMES"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
