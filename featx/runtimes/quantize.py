"""INT8: post-training quantisation with NNCF, calibrated on a sample of the dataset being embedded."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BackboneError
from .base import installed_versions
from .openvino_runtime import INSTALL_HINT, import_openvino, without_telemetry

CALIBRATION_SIZE = 300  # NNCF's default subset size


def calibration_sample(keys: Sequence[str | None], size: int = CALIBRATION_SIZE) -> list[int]:
    """Items to calibrate on: the ``size`` smallest content keys, one item each.

    Choosing by content key makes the sample (and so the int8 model and its store) the same
    however the files are named, ordered or split, and the same the next time the dataset is embedded.
    """
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k and k not in first:
            first[k] = i
    return [first[k] for k in sorted(first)[:size]]


def calibration_fingerprint(keys: Sequence[str]) -> str:
    """What identifies a calibration: the content keys it used, the method, and the versions that ran it.

    The versions are in it because another NNCF or OpenVINO may quantise the same sample differently:
    a model calibrated again after an upgrade must make a new store, never add to the old one.
    """
    versions = installed_versions("nncf", "openvino")
    blob = json.dumps({"method": "nncf-ptq-mixed-v1", "keys": sorted(keys), "versions": versions},
                      separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def quantize_model(fp32_path: Path, crops: np.ndarray, out_path: Path) -> None:
    """Quantise the fp32 OpenVINO model at ``fp32_path`` to INT8 with ``crops`` (uint8, N×3×H×W) as calibration."""
    ov = import_openvino()
    try:
        # NNCF's progress bars must not mix into --json output
        with contextlib.redirect_stdout(sys.stderr), without_telemetry():
            import nncf
    except ImportError:
        raise BackboneError(f"int8 needs NNCF to calibrate the quantisation: {INSTALL_HINT}.",
                            params=("precision",)) from None
    if len(crops) == 0:
        raise BackboneError("int8 needs images to calibrate on, and none of the sample could be decoded.",
                            params=("precision",))
    model = ov.Core().read_model(str(fp32_path))
    data = nncf.Dataset([crops[i:i + 1] for i in range(len(crops))])
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(model, data, subset_size=len(crops), preset=nncf.QuantizationPreset.MIXED)
    ov.save_model(quantized, str(out_path), compress_to_fp16=False)
