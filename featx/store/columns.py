"""A subset of a recipe's layers (`--use-layers`): which columns of the stored vectors it is, and taking them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..config import BackboneConfig, layer_names
from ..errors import ParameterError
from .atomic import name_stem


@dataclass(frozen=True)
class LayerSelection:
    """Layers chosen from a store's recipe, with their column ranges in its vectors."""

    layers: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    total: int  # the stored vectors' width

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in self.spans)

    @property
    def dim(self) -> int:
        return sum(self.widths)

    @property
    def layer_widths(self) -> tuple[int, ...] | None:
        """The widths to normalise separately (``normalize(layer_widths=…)``); None for a single layer."""
        return self.widths if len(self.spans) > 1 else None

    def take(self, X: np.ndarray) -> np.ndarray:
        """The chosen columns of stored vectors X (X itself when that is all of them)."""
        if X.shape[1] != self.total:
            raise ParameterError("use_layers", f"expected vectors of {self.total} dimensions, not {X.shape[1]}.")
        if self.dim == self.total:  # every layer, in order: the columns as they are (no copy)
            return X
        return np.concatenate([X[:, a:b] for a, b in self.spans], axis=1)


def layers_suffix(layers: Sequence[str] | None) -> str:
    """What a derived file's name gains for a subset of layers (``+blocks.4-blocks.6-<hash>``); "" for all.

    "+" never stands in a name stem, so ``a`` with layer ``blocks.4`` and a dataset named ``a-blocks.4``
    never share a file.
    """
    return "" if layers is None else "+" + name_stem("+".join(layers))


def select_layers(config: BackboneConfig, layers: str | Sequence[str] | None = None) -> LayerSelection:
    """The layers named (a comma list or a sequence; None: all the recipe's) of ``config``'s vectors."""
    columns = config.columns()
    if layers is None:
        names = list(columns)
    else:
        names = layer_names(layers)
    unknown = [n for n in names if n not in columns]
    if unknown or not names:
        raise ParameterError("use_layers", f"{', '.join(map(repr, unknown)) or 'nothing'} is not a layer of this "
                             f"store's vectors; it holds: {', '.join(columns)}.")
    chosen = [n for n in columns if n in set(names)]  # the stored order
    return LayerSelection(tuple(chosen), tuple(columns[n] for n in chosen), config.dim)
