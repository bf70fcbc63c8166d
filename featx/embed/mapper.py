"""The mapper: uint8 image batches in, float32 feature vectors out, on the runtime that was chosen."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import BackboneConfig, PreprocessConfig
from ..data import decode_input
from ..runtimes import as_runtime
from ..runtimes.base import Runtime


class Embedder:
    """Runs a runtime (or a torch Backbone, on torch) on crops; ``embedder(batch)`` gives an (N, dim) float32 array."""

    def __init__(self, model):
        model = as_runtime(model)
        self.runtime: Runtime = model
        self.config: BackboneConfig = model.config
        self.preprocess: PreprocessConfig = model.preprocess
        self.device: str = model.device

    @property
    def dim(self) -> int:
        return self.runtime.dim

    def __call__(self, batch) -> np.ndarray:
        return self.runtime(batch)

    def embed_inputs(self, inputs: Sequence[bytes | np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embed in-memory images (encoded bytes or pixel arrays); raises ImageError for a bad one."""
        return self.embed_crops([decode_input(data, self.preprocess) for data in inputs], batch_size)

    def embed_crops(self, crops: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embed preprocessed uint8 (3, H, W) crops in batches."""
        out = [self(np.stack(crops[i : i + batch_size])) for i in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.empty((0, self.dim), np.float32)
