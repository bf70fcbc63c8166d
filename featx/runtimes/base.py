"""What every runtime offers: uint8 crops in, float32 vectors out, and a line saying what ran them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import metadata

import numpy as np

from ..config import BackboneConfig, PreprocessConfig

# How closely every runtime's vectors agree with torch fp32's for them to share a store (the runtime is not
# part of the store key): (worst cosine of one vector, mean cosine) per precision; tests/test_runtimes.py
# holds each runtime to it. fp32 runtimes compute the same function; bf16's bound is the error bf16 has
# anyway: over all 70,000 Fashion-MNIST images torch's bf16 measured 0.98997 worst and 0.99848 mean,
# OpenVINO's 0.98925 and 0.99829 (README "Speed"). int8 has no bound: it is a configuration, and a
# store, of its own.
AGREEMENT = {"fp32": (0.9999, 0.99999), "bf16": (0.98, 0.998)}


@dataclass
class RuntimeChoice:
    """Which runtime runs the backbone and why; ``to_dict()`` goes into ``--json`` and the service's /info."""

    runtime: str
    how: str  # asked | measured | remembered | fallback | gpu | int8
    images_per_second: dict[str, float] = field(default_factory=dict)  # the measurement behind the choice
    detail: str = ""  # the runtime's own line, e.g. "openvino 2026.4.1, bf16, 2 parallel requests"

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        why = {
            "asked": "as asked",
            "measured": "measured now",
            "remembered": "measured earlier on this machine",
            "fallback": "OpenVINO is not installed (pip install 'featx[openvino]')",
            "gpu": "a GPU is present",
            "int8": "int8 runs on OpenVINO",
        }.get(self.how, self.how)
        speeds = ", ".join(f"{k} {v:.0f}" for k, v in self.images_per_second.items())
        measured = f"; images/s {speeds}" if speeds else ""
        return f"{self.detail or self.runtime} ({why}{measured})"


class Runtime:
    """A backbone ready to run: ``runtime(batch)`` maps uint8 (N, 3, H, W) crops to (N, dim) float32 vectors."""

    name = ""  # "torch" or "openvino"
    device = "cpu"
    _choice: RuntimeChoice | None = None

    @property
    def choice(self) -> RuntimeChoice:
        """Which runtime this is and why: load_runtime sets it; a runtime made directly was asked for."""
        if self._choice is None:
            self._choice = RuntimeChoice(self.name, "asked")
        self._choice.detail = self.describe()
        return self._choice

    @choice.setter
    def choice(self, choice: RuntimeChoice) -> None:
        self._choice = choice

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


def installed_versions(*packages: str) -> dict[str, str | None]:
    """Each package's installed version (None when it is not installed), read without importing it."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
