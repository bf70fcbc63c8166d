"""Which labelled samples train and which test: a source's splits, K-shot subsets, validation carve-outs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data import Source, split_from_key
from ..errors import DataError, ParameterError
from ..store import Member


@dataclass(frozen=True)
class LabelledSet:
    """Labelled samples of one split: the source's item indices, their content keys and labels."""

    indices: np.ndarray  # int64 positions in source.items
    keys: tuple[str, ...]
    labels: np.ndarray  # str labels

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, positions: Sequence[int] | np.ndarray) -> "LabelledSet":
        positions = np.asarray(positions, dtype=np.int64)
        return LabelledSet(self.indices[positions], tuple(self.keys[p] for p in positions), self.labels[positions])

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def fingerprint(self) -> str:
        """SHA-256 of the sorted keys: two sets with the same samples have the same fingerprint."""
        return hashlib.sha256("\n".join(sorted(self.keys)).encode()).hexdigest()

    def class_counts(self) -> dict[str, int]:
        names, counts = np.unique(self.labels, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}


def _check_labelled(source: Source, dataset: str) -> None:
    if not source.labelled:
        raise DataError(
            f"dataset {dataset!r} has no labels; use a folder with class sub-folders, or a CSV with a label column."
        )


def _by_split(rows: list[tuple[int, str, str, str]], dataset: str) -> dict[str, LabelledSet]:
    out: dict[str, LabelledSet] = {}
    for split in ("train", "val", "test"):
        chosen = [r for r in rows if r[3] == split]
        if chosen:
            out[split] = LabelledSet(np.array([r[0] for r in chosen], dtype=np.int64), tuple(r[1] for r in chosen),
                                    np.array([r[2] for r in chosen], dtype=object))
    for split in ("train", "test"):
        if split not in out:
            raise DataError(
                f"dataset {dataset!r} has no labelled {split} split; give it both: folders train/ and test/, a CSV "
                "split column, or no split at all (featx then holds out 20% by content hash)."
            )
    return out


def labelled_splits(source: Source, keys: Sequence[str | None], dataset: str | None = None) -> dict[str, LabelledSet]:
    """The labelled samples of ``source`` by split, given each item's content key (None: unreadable, skipped).

    Items without a split of their own get the store's hash-derived one, so these splits are the
    ones ``featx embed`` records.
    """
    dataset = dataset or source.name
    _check_labelled(source, dataset)
    rows = [(i, k, item.label, item.split or split_from_key(k))
            for i, (item, k) in enumerate(zip(source.items, keys)) if k is not None and item.label is not None]
    return _by_split(rows, dataset)


def splits_from_members(source: Source, members: Sequence[Member], dataset: str | None = None) -> dict[str, LabelledSet]:
    """The labelled splits exactly as a store recorded them (images that failed to decode are left out)."""
    dataset = dataset or source.name
    _check_labelled(source, dataset)
    position = {item.path: i for i, item in enumerate(source.items)}
    rows = [(position[m.path], m.key, m.label, m.split) for m in members
            if m.label is not None and m.path in position]
    return _by_split(rows, dataset)


def check_shots(train: LabelledSet, shots: int) -> None:
    """Refuse a shots-per-class value the training split cannot give to every class."""
    if shots < 1:
        raise ParameterError("shots", f"must be at least 1 image per class, not {shots}.")
    counts = train.class_counts()
    smallest = min(counts, key=counts.get)
    if shots > counts[smallest]:
        raise ParameterError(
            "shots", f"{shots} is more than the smallest class has: {smallest!r} has {counts[smallest]} training "
            f"image(s). Use shots={counts[smallest]} or fewer."
        )


def draw_shots(train: LabelledSet, shots: int, seed: int) -> LabelledSet:
    """``shots`` samples of every class, drawn with ``seed``: the same subset on every call and machine."""
    check_shots(train, shots)
    rng = np.random.default_rng([seed, shots])
    order = np.argsort(np.array(train.keys))  # independent of the source's item order
    picked = []
    for label in train.classes:
        members = order[train.labels[order] == label]
        picked.append(rng.choice(members, size=shots, replace=False))
    return train.take(np.sort(np.concatenate(picked)))


def carve_validation(train: LabelledSet, fraction: float = 0.2, seed: int = 0,
                     max_val: int = 2000) -> tuple[LabelledSet, LabelledSet | None]:
    """Split a training set into (fit, validation), stratified, at most ``max_val`` held out.

    Returns ``(train, None)`` when some class has fewer than two samples: holding out its only
    example would leave the model nothing to learn that class from.
    """
    counts = train.class_counts()
    if min(counts.values()) < 2:
        return train, None
    rng = np.random.default_rng(seed)
    n_val_total = min(max_val, max(len(counts), int(round(len(train) * fraction))))
    fit, val = [], []
    for label in train.classes:
        members = np.flatnonzero(train.labels == label)
        rng.shuffle(members)
        n_val = min(len(members) - 1, max(1, int(round(n_val_total * len(members) / len(train)))))
        val.append(members[:n_val])
        fit.append(members[n_val:])
    return train.take(np.sort(np.concatenate(fit))), train.take(np.sort(np.concatenate(val)))
