"""What every runtime offers: uint8 crops in, float32 vectors out, and a line saying what ran them."""

from __future__ import annotations

import numpy as np

from ..config import BackboneConfig, PreprocessConfig

# How closely every runtime's vectors agree with torch fp32's for them to share a store (the runtime is not
# part of the store key): (worst cosine of one vector, mean cosine) per precision; tests/test_runtimes.py
# holds each runtime to it. fp32 runtimes compute the same function; bf16's bound is the error bf16 has
# anyway: over all 70,000 Fashion-MNIST images torch's bf16 measured 0.98997 worst and 0.99848 mean,
# OpenVINO's 0.98925 and 0.99829 (README "Speed"). int8 has no bound: it is a configuration, and a
# store, of its own.
AGREEMENT = {"fp32": (0.9999, 0.99999), "bf16": (0.98, 0.998)}


class Runtime:
    """A backbone ready to run: ``runtime(batch)`` maps uint8 (N, 3, H, W) crops to (N, dim) float32 vectors."""

    name = ""  # "torch" or "openvino"
    device = "cpu"

    def __init__(self, config: BackboneConfig):
        self.config = config

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.config.preprocess

    @property
    def dim(self) -> int:
        return self.config.dim

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        """E.g. ``openvino 2026.4.1, bf16, 2 requests``: what the CLI and --json report."""
        return f"{self.name}, {self.config.precision}"
