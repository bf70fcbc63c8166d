"""Which layers a vector is made of: a backbone's taps (timm's feature_info), parsing --layers, the extractor."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..config import FINAL, GRID, STAGES, grid_name, layer_names, split_grid
from ..errors import ParameterError


@dataclass(frozen=True)
class Tap:
    """One layer a vector can take features from: a stage's output (average-pooled) or the final features."""

    name: str
    channels: int | None
    reduction: int | None  # the stage's stride relative to the input
    index: int | None  # its position in timm's feature_info (None for the final features)
    grid: int = 1  # a stage's output averaged over grid×grid cells (1: over the whole map)

    @property
    def width(self) -> int | None:
        """Its columns in a vector: each channel once per cell."""
        return None if self.channels is None else self.channels * self.grid ** 2

    def gridded(self, cells: int) -> "Tap":
        return dataclasses.replace(self, name=grid_name(self.name, cells), grid=cells) if cells > 1 else self


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
    """``final``, ``stages``, ``grid`` or a comma list of tap names (a stage's with ``@NxN`` to pool it over
    a grid) → the taps, in network order."""
    if layers is None:
        return [taps[-1]]
    names = layer_names(layers)
    by_name = {t.name: t for t in taps}
    if names in ([STAGES], [GRID]):
        if len(taps) == 1:
            raise ParameterError("layers", f"{backbone} has no stage taps (timm's feature_info); use layers=final.")
        cells = 2 if names == [GRID] else 1
        return [t.gridded(cells) if t.name != FINAL else t for t in taps]
    wanted, unknown = {}, []
    for name in names:
        try:
            tap, cells = split_grid(name)
        except ValueError as e:
            raise ParameterError("layers", str(e) + ".") from None
        if tap not in by_name or (cells > 1 and tap == FINAL):
            unknown.append(name)
        else:
            wanted[tap] = cells
    if unknown or not names:
        valid = ", ".join([STAGES, GRID, *by_name])
        raise ParameterError("layers", f"{', '.join(map(repr, unknown)) or 'nothing'} is not a layer of {backbone}; "
                             f"choose from: {valid} (a stage's name with @2x2 pools it over a 2×2 grid).")
    return [t.gridded(wanted[t.name]) for t in taps if t.name in wanted]


class LayerExtractor(nn.Module):
    """forward(x) → the chosen taps' features, each stage's output average-pooled, concatenated in order.

    One forward pass: stage outputs are taken on the way to the final features (timm's
    ``forward_intermediates``), and it stops after the last stage wanted when the final features are not.
    A stage tap with a grid is averaged over each of its grid×grid cells (channel by channel, cells in row
    order) instead of the whole map: where on the image a feature fired, coarsely.
    """

    def __init__(self, model: nn.Module, taps: list[Tap]):
        super().__init__()
        self.model = model
        self.indices = [t.index for t in taps if t.index is not None]
        self.grids = [t.grid for t in taps if t.index is not None]
        self.final = taps[-1].name == FINAL

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.final:
            last, stages = self.model.forward_intermediates(x, indices=self.indices)
        else:
            stages = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True,
                                                      stop_early=True)
        parts = [t.float().mean((2, 3)) if g == 1 else nn.functional.adaptive_avg_pool2d(t.float(), g).flatten(1)
                 for t, g in zip(stages, self.grids)]
        if self.final:
            parts.append(self.model.forward_head(last, pre_logits=True).float())
        return torch.cat(parts, 1)
