"""Weight files and fingerprints: read a state dict safely, and hash the weights that make a vector."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import BackboneError


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes: the fingerprint of a weights file (torch is not needed for it)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise BackboneError(f"cannot read weights file {str(path)!r}: {e.strerror or e}.", params=("weights",)) from None
    return h.hexdigest()


def sha256_state_dict(state_dict: dict) -> str:
    """Fingerprint of weights that came from a hub cache rather than one file we hold."""
    import torch

    h = hashlib.sha256()
    for name, tensor in state_dict.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_weights_file(path: str | os.PathLike) -> dict:
    """A state dict from ``path``: a plain state dict, or a featx / training checkpoint holding one.

    Loaded with ``weights_only=True`` so a file from elsewhere cannot run code.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {str(path)!r} does not exist.", params=("weights",))
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


def load_state(model, state: dict, name: str) -> None:
    """Load ``state`` into ``model``; every feature tensor must be there (a classifier may be missing)."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise BackboneError(f"the weights do not fit {name}: {str(e).splitlines()[0]}") from None
    # A fine-tuned checkpoint may carry its own head; the feature layers must all be there.
    missing = [k for k in missing if not k.startswith(("classifier.", "fc.", "head."))]
    if missing:
        raise BackboneError(f"the weights do not fit {name}: {len(missing)} tensors missing, e.g. {missing[0]!r}.")
