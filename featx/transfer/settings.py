"""What a fine-tuning run and a comparison are told: their settings and the comparison's methods (no torch)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from ..config import GRID, STAGES
from ..errors import ParameterError, TrainingError
from ..hardware import check_batch_size
from ..heads.registry import HEAD_NAMES

UNFREEZE_HELP = "last-1 (the last layer group), last-N, or all"


@dataclass(frozen=True)
class FinetuneSettings:
    """How one fine-tuning run trains. ``lr`` is the unfrozen backbone layers' peak learning rate."""

    unfreeze: str = "last-1"
    epochs: int = 10
    lr: float = 1e-4
    head_lr_scale: float = 10.0  # the new head starts from nothing, so it learns faster
    weight_decay: float = 0.05
    batch_size: int = 32
    warmup_fraction: float = 0.1
    patience: int = 3  # epochs without a better validation score before stopping
    val_fraction: float = 0.2
    label_smoothing: float = 0.1
    min_steps_per_epoch: int = 8  # ten 1-shot images would otherwise be one optimiser step per epoch
    seed: int = 0
    workers: int | None = None

    def check(self) -> None:
        if self.epochs < 1:
            raise ParameterError("epochs", f"must be at least 1, not {self.epochs}.")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ParameterError("lr", f"must be a positive number, not {self.lr}.")
        check_batch_size(self.batch_size)
        parse_unfreeze(self.unfreeze)


def parse_unfreeze(spec: str) -> int | None:
    """``last-N`` → N; ``all`` → None (every group)."""
    m = re.fullmatch(r"last-(\d+)|all", spec.strip().lower())
    if not m or (m.group(1) is not None and int(m.group(1)) < 1):
        raise TrainingError(f"unfreeze must be {UNFREEZE_HELP}, not {spec!r}.", params=("unfreeze",))
    return int(m.group(1)) if m.group(1) else None


DEFAULT_SHOTS = (1, 5, 10, 50, 100)
DEFAULT_METHODS = ("logreg", "logreg-grid", "knn", "finetune-last", "finetune-all")
FINETUNE_METHODS = {"finetune-last": "last-1", "finetune-all": "all"}
STAGES_SUFFIX = "-stages"  # a frozen head on every stage's pooled output plus the final features
GRID_SUFFIX = "-grid"  # a frozen head on every stage pooled over a 2×2 grid plus the final features


@dataclass(frozen=True)
class CompareSettings:
    """One experiment: which subsets, which methods, and the fine-tuning budget they share."""

    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: int = 3
    methods: tuple[str, ...] = DEFAULT_METHODS
    epochs: int = FinetuneSettings.epochs
    batch_size: int = FinetuneSettings.batch_size
    lr: float = FinetuneSettings.lr

    def check(self) -> None:
        if not self.shots or any(k < 1 for k in self.shots):
            raise ParameterError("shots", f"must be positive numbers of images per class, e.g. 1,5,10; not {self.shots}.")
        if self.seeds < 1:
            raise ParameterError("seeds", f"must be at least 1, not {self.seeds}.")
        store_layers(parse_methods(",".join(self.methods)))
        FinetuneSettings(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr).check()


def method_names() -> list[str]:
    return [*HEAD_NAMES, *(h + STAGES_SUFFIX for h in HEAD_NAMES), *(h + GRID_SUFFIX for h in HEAD_NAMES),
            *FINETUNE_METHODS]


def store_layers(methods: Sequence[str]) -> str | None:
    """The recipe of the one store a comparison embeds into: the multi-layer one its frozen methods ask for
    (their plain siblings read its final columns), or the final layer alone (None)."""
    stages = any(m.endswith(STAGES_SUFFIX) for m in methods)
    grid = any(m.endswith(GRID_SUFFIX) for m in methods)
    if stages and grid:
        raise ParameterError("methods", "compares -stages and -grid methods in separate runs (each embeds into its "
                                        "own store); run one, then the other with the same out=.", also=("out",))
    return GRID if grid else STAGES if stages else None


def parse_methods(text: str) -> tuple[str, ...]:
    """``"logreg,knn"`` → ("logreg", "knn"); an unknown name raises FeatxError listing the known ones."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in method_names()]
    if unknown or not names:
        raise ParameterError("methods", f"names an unknown method {', '.join(map(repr, unknown)) or '(none given)'}; "
                                        f"choose from {', '.join(method_names())}.")
    return names


def parse_shots(text: str) -> tuple[int, ...]:
    """``"1,5,10"`` → (1, 5, 10), sorted; anything else raises FeatxError."""
    try:
        shots = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        raise ParameterError("shots", f"must be comma-separated whole numbers such as 1,5,10; not {text!r}.") from None
    if not shots or shots[0] < 1:
        raise ParameterError("shots", f"must be positive numbers of images per class, e.g. 1,5,10; not {text!r}.")
    return shots
