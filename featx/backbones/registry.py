"""The backbone registry: entries added by decorator, listed by a function (as timm's register_model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BackboneError

HUB_PREFIXES = ("timm:", "torchvision:")


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build an architecture and where its offline weights are."""

    name: str
    architecture: str
    dim: int
    input_size: int
    description: str
    build: Callable[[], object]  # () -> torch.nn.Module
    find_weights: Callable[[], Path | None]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    map_state_dict: Callable[[dict, object], dict] | None = None


_REGISTRY: dict[str, Callable[[], BackboneSpec]] = {}


def register_backbone(fn: Callable[[], BackboneSpec]) -> Callable[[], BackboneSpec]:
    """Decorator: register a function returning a BackboneSpec under the function's name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_backbones() -> list[str]:
    """Names of the registered backbones (hub families ``timm:NAME``/``torchvision:NAME`` come on top)."""
    return sorted(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; raises BackboneError naming the known ones."""
    if name not in _REGISTRY:
        known = ", ".join(list_backbones())
        raise BackboneError(
            f"unknown backbone {name!r}. Known: {known}; or a hub model as timm:NAME / torchvision:NAME."
        )
    return _REGISTRY[name]()


def describe_backbones() -> list[dict]:
    """One row per registered backbone: name, dim, native input size, whether weights are on disk."""
    rows = []
    for name in list_backbones():
        spec = get_backbone_spec(name)
        rows.append({"name": name, "dim": spec.dim, "input_size": spec.input_size,
                     "offline": spec.find_weights() is not None, "description": spec.description})
    for prefix in HUB_PREFIXES:
        rows.append({"name": prefix + "NAME", "dim": None, "input_size": None, "offline": False,
                     "description": f"any {prefix[:-1]} model with pretrained weights "
                                    "(needs a network, or a local weights file)"})
    return rows


from . import lite  # noqa: E402,F401  (registers the offline backbones; it imports this module's decorator)
