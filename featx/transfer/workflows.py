"""Whole fine-tuning and comparison runs from a source: what `featx finetune` and `featx compare` call."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..backbones import Backbone, backbone_from
from ..config import Recipe
from ..data import Source, hash_source
from ..errors import ParameterError
from ..hardware import Progress, default_device
from ..store import DEFAULT_CACHE, open_store
from ..store.paths import compare_dir, finetuned_dir
from .checkpoints import default_checkpoint_path
from .compare import run_compare
from .finetune import FinetuneResult, device_defaults, finetune
from .settings import CompareSettings, FinetuneSettings, store_layers
from .subsets import draw_shots, labelled_splits


def training_backbone(recipe: Recipe = Recipe()) -> tuple[Callable[..., Backbone], dict]:
    """A factory of fresh backbones of ``recipe``'s network for training (``make(layers=None)``: what is read of
    it depends on the methods, not on the recipe's layers), and the defaults that fit this hardware.

    Without an image size a CPU trains at 96 px and a GPU at the backbone's native size.
    """
    defaults = device_defaults(default_device())
    network = replace(recipe, image_size=recipe.image_size or defaults["image_size"], store_dtype="float32")

    def make(layers: str | None = None) -> Backbone:
        return backbone_from(replace(network, layers=layers))

    return make, defaults


def _hardware_settings(settings, defaults: dict, batch_size: int | None):
    """``settings`` with the hardware's batch size unless one was given."""
    if batch_size is not None:
        return replace(settings, batch_size=batch_size)
    return replace(settings, batch_size=defaults["batch_size"])


def finetune_source(
    source: Source,
    recipe: Recipe = Recipe(),
    *,
    settings: FinetuneSettings = FinetuneSettings(),
    batch_size: int | None = None,
    shots: int | None = None,
    name: str | None = None,
    out: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Fine-tune a fresh backbone on a source's train split (or ``shots`` per class of it), score it on its test
    split, and save the checkpoint.

    Parameters
    ----------
    source : a labelled source with train and test splits (as ``featx embed`` records them).
    recipe : the network to start from: its backbone, weights, image size (96 px on CPU by default), precision
        and crop (the source's by default).
    settings : the optimisation; ``batch_size`` overrides its batch size (default: the hardware's).
    shots : train on this many images per class of the train split (None: all of it).
    name : the dataset's name [default: the source's].
    out : folder for the checkpoint [default: ``<cache>/finetuned``].
    """
    if shots is not None and shots < 1:
        raise ParameterError("shots", f"must be at least 1 image per class, not {shots}.")
    make, defaults = training_backbone(recipe.for_source(source))
    settings = _hardware_settings(settings, defaults, batch_size)
    settings.check()
    dataset = name or source.name
    keys, _ = hash_source(source)
    splits = labelled_splits(source, keys, dataset)
    train = draw_shots(splits["train"], shots, settings.seed) if shots else splits["train"]
    root = Path(out) if out else finetuned_dir(cache or DEFAULT_CACHE)
    root.mkdir(parents=True, exist_ok=True)
    path = default_checkpoint_path(root, dataset, recipe.backbone, settings, shots)
    return finetune(make(), source, train, splits["test"], settings, dataset=dataset, out=path, progress=progress)


def compare_source(
    source: Source,
    recipe: Recipe = Recipe(),
    *,
    settings: CompareSettings = CompareSettings(),
    batch_size: int | None = None,
    name: str | None = None,
    out: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[dict, Path]:
    """Frozen heads against fine-tuning on the same K-shot subsets of ``source``; returns the report and its folder.

    The dataset is embedded into the store of the chosen configuration under ``cache`` (reused when
    there), with every stage's layer when a ``*-stages`` (or ``*-grid``) method asks for them (the plain frozen
    methods then read the final layer's columns: one forward pass serves both). Every method sees
    the source's crop. ``recipe`` gives the network (backbone, weights, image size, precision); the layers
    come from the methods. ``out`` defaults to ``<cache>/compare/<dataset>-<size>px``.
    """
    make, defaults = training_backbone(recipe.for_source(source))
    settings = _hardware_settings(settings, defaults, batch_size)
    settings.check()
    model = make(store_layers(settings.methods))
    dataset = name or source.name
    folder = Path(out) if out else compare_dir(cache or DEFAULT_CACHE, dataset, model.config.preprocess.input_size)
    with open_store(model.config, cache) as store:
        report = run_compare(source, model, store, settings, out=folder, make_backbone=make, name=dataset,
                             progress=progress)
    return report, folder
