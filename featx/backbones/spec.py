"""A backbone registry entry (BackboneSpec) and the decorator that registers one (as timm's register_model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


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
