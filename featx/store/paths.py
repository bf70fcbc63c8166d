"""Where every file derived from a store's dataset lives: heads, indexes, maps and thumbnails beside the store;
audit, rank and compare reports under the cache. Every stage (and the service) asks here, never builds a path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .atomic import name_stem
from .columns import layers_suffix

if TYPE_CHECKING:
    from .store import FeatureStore


def head_path(store: "FeatureStore", dataset: str, head: str, layers: Sequence[str] | None = None) -> Path:
    """``<store>/heads/<dataset>-<head>[-<layers>].npz``: a head beside the vectors it was trained on."""
    return Path(store.path) / "heads" / f"{name_stem(dataset)}-{head}{layers_suffix(layers)}.npz"


def index_path(store: "FeatureStore", dataset: str, layers: Sequence[str] | None = None) -> Path:
    """``<store>/indexes/<dataset>[-<layers>].npz``; ``layers`` None means all the store's layers."""
    return Path(store.path) / "indexes" / f"{name_stem(dataset)}{layers_suffix(layers)}.npz"


def map_path(store: "FeatureStore", dataset: str) -> Path:
    """``<store>/maps/<dataset>.npz``: the dataset's 2-D layout."""
    return Path(store.path) / "maps" / f"{name_stem(dataset)}.npz"


def thumbnails_dir(store: "FeatureStore") -> Path:
    """``<store>/thumbnails``: small images of stored samples (audit sheets, the page)."""
    return Path(store.path) / "thumbnails"


def audit_dir(cache: str | os.PathLike, dataset: str) -> Path:
    """``<cache>/audit/<dataset>``: an audit's report.json, report.md and contact sheet."""
    return Path(cache) / "audit" / name_stem(dataset)


def audit_report(cache: str | os.PathLike, dataset: str) -> Path:
    """The audit report.json the service shows for a dataset."""
    return audit_dir(cache, dataset) / "report.json"


def rank_dir(cache: str | os.PathLike, dataset: str) -> Path:
    """``<cache>/rank/<dataset>``: a rank's report (and where an interrupted one resumes from)."""
    return Path(cache) / "rank" / name_stem(dataset)


def finetuned_dir(cache: str | os.PathLike) -> Path:
    """``<cache>/finetuned``: fine-tuned checkpoints, each loadable as a backbone's weights."""
    return Path(cache) / "finetuned"


def compare_dir(cache: str | os.PathLike, dataset: str, image_size: int) -> Path:
    """``<cache>/compare/<dataset>-<size>px``: a comparison's report (and where an interrupted one resumes from)."""
    return Path(cache) / "compare" / f"{name_stem(dataset)}-{image_size}px"
