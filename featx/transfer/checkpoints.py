"""Fine-tuned checkpoints: the backbone under its own names plus the new head, loadable as a backbone's weights."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING
from pathlib import Path

import torch

from ..backbones import Backbone, classifier_prefix
from ..errors import BackboneError
from ..store.atomic import atomic_write, name_stem
from .settings import FinetuneSettings

if TYPE_CHECKING:
    from .finetune import FinetuneResult
    from .unfreeze import FinetuneNet

CHECKPOINT_FORMAT = "featx-finetuned-1"


def save_checkpoint(path: str | Path, backbone: Backbone, net: FinetuneNet, classes: list[str],
                    result: FinetuneResult, settings: FinetuneSettings) -> Path:
    """Write the fine-tuned weights so ``--weights PATH`` loads them as a backbone.

    ``state_dict`` holds the backbone's tensors under the architecture's own names, without its old
    classifier; ``head`` the new linear layer; ``featx`` how it was made. Temp file + rename.
    """
    head = classifier_prefix(backbone.model)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()
             if k != head and not k.startswith(head + ".")}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "backbone": backbone.name,
        "base_weights_sha256": backbone.config.weights_sha256,
        "image_size": backbone.config.preprocess.input_size,
        "classes": list(classes),
        "settings": {k: v for k, v in asdict(settings).items() if v is not None},
        "metrics": {k: v for k, v in result.to_dict().items() if k not in ("history", "failures", "path")},
    }
    obj = {"state_dict": state,
           "head": {"weight": net.head.weight.detach().cpu().float(), "bias": net.head.bias.detach().cpu().float()},
           "featx": meta}
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by ``save_checkpoint``: ``state_dict``, ``head`` and ``featx`` metadata."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("featx", {}).get("format") != CHECKPOINT_FORMAT:
        raise BackboneError(f"{str(path)!r} is not a featx fine-tuning checkpoint.")
    return obj


def default_checkpoint_path(root: Path, dataset: str, backbone: str, settings: FinetuneSettings,
                            shots: int | None) -> Path:
    """``<root>/<dataset>-<backbone>-<unfreeze>[-<K>shot]-seed<S>.pt``."""
    shot = f"-{shots}shot" if shots else ""
    return root / f"{name_stem(dataset)}-{name_stem(backbone)}-{settings.unfreeze}{shot}-seed{settings.seed}.pt"

