"""The backbone registry: entries added by decorator, listed by a function (as timm's register_model)."""

from __future__ import annotations

from ..errors import BackboneError
from . import lite  # noqa: F401  (registers the offline backbones)
from .spec import _REGISTRY, BackboneSpec, register_backbone  # noqa: F401 (BackboneSpec, register_backbone: the API)

HUB_PREFIXES = ("timm:", "torchvision:")


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
        # image_size, as --image-size says it; input_size, its old key, kept for one release
        rows.append({"name": name, "dim": spec.dim, "image_size": spec.input_size, "input_size": spec.input_size,
                     "offline": spec.find_weights() is not None, "description": spec.description})
    for prefix in HUB_PREFIXES:
        rows.append({"name": prefix + "NAME", "dim": None, "image_size": None, "input_size": None, "offline": False,
                     "description": f"any {prefix[:-1]} model with pretrained weights "
                                    "(needs a network, or a local weights file)"})
    return rows

