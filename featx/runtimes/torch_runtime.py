"""The reference runtime: the frozen torch backbone, channels-last, under autocast for bf16."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..backbones import Backbone
from ..hardware import keep_freed_memory, prepare_batch
from .base import Runtime


class TorchRuntime(Runtime):
    """Runs ``backbone.inference`` (the extractor, batch norm folded); the vectors every other runtime is checked
    against."""

    name = "torch"

    def __init__(self, backbone: Backbone):
        super().__init__(backbone.config)
        self.backbone = backbone
        self.torch_device = backbone.device
        self.device = self.torch_device.type
        self.extractor = backbone.inference
        if self.device == "cpu":
            keep_freed_memory()

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        x = prepare_batch(batch, self.preprocess, self.torch_device)
        bf16 = self.config.precision == "bf16"
        autocast = torch.autocast(self.device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            features = self.extractor(x)
        return features.float().cpu().numpy()

    def describe(self) -> str:
        return f"torch {torch.__version__.split('+')[0]}, {self.config.precision}, {self.device}"
