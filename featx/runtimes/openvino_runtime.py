"""OpenVINO: the backbone converted once to OpenVINO's format (normalisation inside), run with asynchronous requests."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
from pathlib import Path

import numpy as np

from ..config import BackboneConfig, PreprocessConfig
from ..errors import BackboneError
from .base import AGREEMENT, Runtime

INSTALL_HINT = "pip install 'featx[openvino]' (or `pip install openvino nncf`)"


def openvino_available() -> bool:
    """Whether OpenVINO is installed (found without importing it)."""
    return importlib.util.find_spec("openvino") is not None


@contextlib.contextmanager
def without_telemetry():
    """Import OpenVINO's or NNCF's modules inside this: their usage telemetry is then not importable, and both
    take the stub they ship for that case. featx works offline and sends nothing; and OpenVINO sends each event
    from a forked copy of the whole process (57 forks in one test that embeds a new recipe, most of its system
    time: every fork copies the page tables of a process holding torch). Where the program imported the
    telemetry itself, its choice stands."""
    if "openvino_telemetry" in sys.modules:
        yield
        return
    sys.modules["openvino_telemetry"] = None  # what `import` of an absent package meets
    try:
        yield
    finally:
        if "openvino_telemetry" in sys.modules and sys.modules["openvino_telemetry"] is None:
            del sys.modules["openvino_telemetry"]


def import_openvino():
    try:
        with without_telemetry():
            import openvino
    except ImportError:
        raise BackboneError(f"the openvino runtime needs OpenVINO, which is not installed: {INSTALL_HINT}.",
                            params=("runtime",)) from None
    return openvino


def convert_backbone(backbone, path: Path) -> None:
    """Convert a torch backbone (fp32) to OpenVINO's format at ``path`` (.xml + .bin), uint8 crops in.

    The weights stay fp32 (``compress_to_fp16=False``): compressing them would change every vector.
    """
    import warnings

    import torch

    ov = import_openvino()
    size = backbone.config.preprocess.input_size
    extractor = backbone.extractor.float().cpu()
    with warnings.catch_warnings():  # tracing's deprecation and shape notices say nothing to a featx user
        warnings.simplefilter("ignore")
        # Traced here without torch's trace check (which runs the model again and compares, 1.6 s of a 5.5 s
        # conversion at 64 px): check_conversion below compares the converted model's vectors with torch's.
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(extractor, torch.zeros(1, 3, size, size), check_trace=False, strict=False)
        model = ov.convert_model(traced, input=[(-1, 3, size, size)])
    ov.save_model(with_preprocessing(model, backbone.config.preprocess), str(path), compress_to_fp16=False)
    check_conversion(extractor, backbone.config, path)


def probe_crops(size: int, n: int = 4) -> np.ndarray:
    """A few fixed uint8 crops (gradients with seeded noise): the same input for torch and OpenVINO."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    crops = np.stack([(ramp[None, :] * (i + 1) / n + ramp[:, None] * (n - i) / n) / 2 for i in range(n)])
    crops = crops[:, None] + rng.normal(0, 40, (n, 3, size, size))
    return np.clip(crops, 0, 255).astype(np.uint8)


def check_conversion(extractor, config: BackboneConfig, path: Path) -> None:
    """Refuse a converted model whose fp32 vectors differ from torch's on a probe batch.

    Runs once per new model file (the manifest's checksums vouch for it afterwards), so a conversion
    that went wrong never stores a vector.
    """
    import torch

    crops = probe_crops(config.preprocess.input_size)
    mean = torch.tensor(config.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.preprocess.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = extractor((torch.from_numpy(crops).float() / 255 - mean) / std).float().numpy()
    compiled = import_openvino().Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(crops)[0]
    worst = float(cosines(expected, got).min())
    if not worst >= AGREEMENT["fp32"][0]:
        raise BackboneError(f"converting {config.describe()} to OpenVINO gave vectors unlike torch's (worst cosine "
                            f"{worst:.4f} on a probe batch, below {AGREEMENT['fp32'][0]}); nothing was stored. "
                            "Use runtime=torch, and report this with your OpenVINO version.", params=("runtime",))


def cosines(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, d) arrays."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    return (A * B).sum(1) / np.maximum(np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1), 1e-30)


def with_preprocessing(model, pre: PreprocessConfig):
    """Put the input normalisation into the graph: uint8 (N, 3, H, W) in, as the decoders give it.

    ``(x / 255 - mean) / std`` is ``(x - 255 mean) / (255 std)``, so no per-batch Python work remains.
    """
    ov = import_openvino()
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NCHW"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32) \
        .mean([255.0 * m for m in pre.mean]).scale([255.0 * s for s in pre.std])
    return ppp.build()


class OpenVINORuntime(Runtime):
    """A converted backbone compiled for the CPU; each batch is split over the plugin's parallel requests.

    ``fp32`` and ``int8`` compile with fp32 inference precision (int8 models keep their quantised
    layers), ``bf16`` with bf16 where the CPU runs it natively.
    """

    name = "openvino"

    def __init__(self, config: BackboneConfig, model_path: Path, threads: int | None = None):
        super().__init__(config)
        ov = import_openvino()
        self.version = ov.get_version().split("-")[0]
        settings = {"INFERENCE_PRECISION_HINT": "bf16" if config.precision == "bf16" else "f32",
                    "PERFORMANCE_HINT": "THROUGHPUT"}
        if threads:
            settings["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(model_path), "CPU", settings)
        self.requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self.queue.set_callback(self._done)
        self.lock = threading.Lock()  # one batch at a time: the queue's requests belong to it

    @staticmethod
    def _done(request, where) -> None:
        out, start = where
        result = request.get_output_tensor(0).data
        out[start:start + len(result)] = result

    def __call__(self, batch) -> np.ndarray:
        batch = np.ascontiguousarray(batch.numpy() if hasattr(batch, "numpy") else batch, dtype=np.uint8)
        out = np.empty((len(batch), self.dim), np.float32)
        with self.lock:
            for part in np.array_split(np.arange(len(batch)), min(self.requests, len(batch))):
                start = int(part[0])
                self.queue.start_async(batch[start:start + len(part)], (out, start))
            self.queue.wait_all()
        return out

    def describe(self) -> str:
        return f"openvino {self.version}, {self.config.precision}, {self.requests} parallel requests"
