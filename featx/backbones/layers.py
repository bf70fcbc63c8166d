"""Which layers a vector is made of: a backbone's taps (timm's feature_info), parsing --layers, the extractor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import FINAL, STAGES, layer_names
from ..errors import ParameterError


@dataclass(frozen=True)
class Tap:
    """One layer a vector can take features from: a stage's output (average-pooled) or the final features."""

    name: str
    channels: int | None
    reduction: int | None  # the stage's stride relative to the input
    index: int | None  # its position in timm's feature_info (None for the final features)


def list_taps(model: nn.Module) -> list[Tap]:
    """The taps of a built model, in network order, the final features last.

    Stage taps come from timm's ``feature_info`` and are read with ``forward_intermediates``; a
    model without both (torchvision backbones) has the final features only.
    """
    taps = []
    info = getattr(model, "feature_info", None)
    if hasattr(model, "forward_intermediates") and info:
        info = info.get_dicts() if hasattr(info, "get_dicts") else info
        taps = [Tap(d["module"], int(d["num_chs"]), int(d["reduction"]), i) for i, d in enumerate(info)]
    return taps + [Tap(FINAL, getattr(model, "num_features", None), None, None)]


def resolve_layers(layers: str | tuple[str, ...] | list[str] | None, taps: list[Tap], backbone: str) -> list[Tap]:
    """``final``, ``stages`` or a comma list of tap names → the taps, in network order."""
    if layers is None:
        return [taps[-1]]
    names = layer_names(layers)
    by_name = {t.name: t for t in taps}
    if names == [STAGES]:
        if len(taps) == 1:
            raise ParameterError("layers", f"{backbone} has no stage taps (timm's feature_info); use --layers final.")
        return taps
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        valid = ", ".join([STAGES, *by_name])
        raise ParameterError("layers", f"{', '.join(map(repr, unknown)) or 'nothing'} is not a layer of {backbone}; "
                             f"choose from: {valid}.")
    return [t for t in taps if t.name in set(names)]


class LayerExtractor(nn.Module):
    """forward(x) → the chosen taps' features, each stage's output average-pooled, concatenated in order.

    One forward pass: stage outputs are taken on the way to the final features (timm's
    ``forward_intermediates``), and it stops after the last stage wanted when the final features are not.
    """

    def __init__(self, model: nn.Module, taps: list[Tap]):
        super().__init__()
        self.model = model
        self.indices = [t.index for t in taps if t.index is not None]
        self.final = taps[-1].name == FINAL

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.final:
            last, stages = self.model.forward_intermediates(x, indices=self.indices)
        else:
            stages = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True,
                                                      stop_early=True)
        parts = [t.float().mean((2, 3)) for t in stages]
        if self.final:
            parts.append(self.model.forward_head(last, pre_logits=True).float())
        return torch.cat(parts, 1)
