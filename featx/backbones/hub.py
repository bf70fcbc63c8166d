"""Hub backbones (``timm:NAME``, ``torchvision:NAME``) for users with a network; offline they fail fast and clearly."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
from torch import nn

from ..config import PreprocessConfig
from ..errors import BackboneError
from .weights import load_state, load_weights_file, sha256_file, sha256_state_dict


def network_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_error(name: str, host: str) -> BackboneError:
    return BackboneError(
        f"cannot download pretrained weights for {name}: {host} is unreachable (offline?). "
        "Use a backbone whose weights ship with pip (efficientnet_lite0, efficientnet_lite1, "
        f"efficientnet_lite2; see the backbone list), pass weights=FILE with a state dict for {name}, or, when "
        "an earlier download left its weights in the Hugging Face cache, set HF_HUB_OFFLINE=1 to use them.",
        params=("weights",),
    )


def create_timm(arch: str, weights, image_size):
    """A timm model with its weights, fingerprint and preprocessing."""
    import timm
    from huggingface_hub import constants

    try:
        if weights:
            model = timm.create_model(arch, pretrained=False)
        else:
            # Fail in seconds rather than after the hub client's minute of retries.
            # huggingface_hub's own offline setting (HF_HUB_OFFLINE) means: the local hub cache alone.
            if not constants.HF_HUB_OFFLINE and not network_reachable("huggingface.co"):
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
        load_state(model, load_weights_file(weights), f"timm:{arch}")
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


def create_torchvision(arch: str, weights, image_size):
    """A torchvision model, its fingerprint, preprocessing, and a features function (the last linear's input)."""
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
        if not cached.exists() and not network_reachable("download.pytorch.org"):
            raise _offline_error(f"torchvision:{arch}", "download.pytorch.org")
        try:
            state = default.get_state_dict(progress=False)
        except OSError as e:
            raise BackboneError(f"cannot download weights for torchvision:{arch}: {e}") from None
        fingerprint = sha256_state_dict(state)
    load_state(model, state, f"torchvision:{arch}")
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


def classifier_prefix(model: nn.Module) -> str:
    """The name of the network's own classifier module, which fine-tuning replaces."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        return str(cfg["classifier"])
    return last_linear(model)[0]
