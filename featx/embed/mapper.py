"""The mapper: uint8 image batches in, float32 feature vectors out, at the backbone's precision."""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from ..backbones import Backbone
from ..config import PreprocessConfig
from ..data import decode_input
from ..runtime import keep_freed_memory, prepare_batch


class Embedder:
    """Runs the frozen backbone on crops; ``embedder(batch)`` gives an (N, dim) float32 array."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.device = backbone.device
        self.preprocess: PreprocessConfig = backbone.config.preprocess
        self.bf16 = backbone.config.precision == "bf16"
        if self.device.type == "cpu":
            keep_freed_memory()

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        x = prepare_batch(batch, self.preprocess, self.device)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            features = self.backbone.extractor(x)
        return features.float().cpu().numpy()

    def embed_inputs(self, inputs: Sequence[bytes | np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embed in-memory images (encoded bytes or pixel arrays); raises ImageError for a bad one."""
        return self.embed_crops([decode_input(data, self.preprocess) for data in inputs], batch_size)

    def embed_crops(self, crops: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embed preprocessed uint8 (3, H, W) crops in batches."""
        out = [self(torch.from_numpy(np.stack(crops[i : i + batch_size]))) for i in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.empty((0, self.backbone.dim), np.float32)
