"""The frozen dataclasses that define a vector (preprocessing, backbone configuration); torch-free."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

DEFAULT_BACKBONE = "efficientnet_lite0"
PRECISIONS = ("auto", "fp32", "bf16")  # what a backbone can be asked to run at
STORED_PRECISIONS = ("fp32", "bf16")  # what a store can have been embedded at


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input: resize the short side, centre-crop, normalise."""

    input_size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def resize_size(self) -> int:
        """Short side before the centre crop, as timm's eval transform computes it."""
        return math.floor(self.input_size / self.crop_pct)


@dataclass(frozen=True)
class BackboneConfig:
    """Everything that determines a vector; its hash is the feature store's key."""

    name: str
    weights_sha256: str
    preprocess: PreprocessConfig
    dim: int
    precision: str = "fp32"
    pooling: str = "avg"
    layer: str = "pre_logits"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneConfig":
        pre = d["preprocess"]
        pre = PreprocessConfig(**{**pre, "mean": tuple(pre["mean"]), "std": tuple(pre["std"])})
        return cls(**{**d, "preprocess": pre})

    @property
    def key(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def describe(self) -> str:
        p = self.preprocess
        return f"{self.name} @ {p.input_size}px, {self.precision}, weights {self.weights_sha256[:12]}"
