"""The click options commands share, each defined once; choices come from the library's own constants."""

from __future__ import annotations

import functools

import click

from ..config import CROPS, DEFAULT_BACKBONE, DEFAULT_LAYERS, PRECISIONS, STORE_DTYPES, STORED_PRECISIONS, StoreQuery
from ..runtimes import RUNTIMES


def stack(*options):
    """Apply several click options as one decorator, in the order listed."""
    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


cache_option = click.option("--cache", type=click.Path(file_okay=False), default="cache", envvar="FEATX_CACHE",
                            show_default=True, help="Feature store root [env: FEATX_CACHE].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
name_option = click.option("--name", default=None,
                           help="Dataset name in the store [default: folder, file or built-in name].")
data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None, envvar="FEATX_FASHION_MNIST",
    help="Folder with Fashion-MNIST's IDX files [default: /usr/share/datasets/fashion-mnist; env: FEATX_FASHION_MNIST].")

# The configuration a new store is embedded with (embed, serve, finetune, compare).
backbone_options = stack(
    click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
                 help="Registered name (see `featx backbones`), timm:NAME or torchvision:NAME."),
    click.option("--weights", type=click.Path(dir_okay=False), default=None,
                 help="Local state dict or `featx finetune` checkpoint instead of the default weights."),
    click.option("--image-size", type=int, default=None,
                 help="Input resolution in pixels [default: the backbone's native size]."),
    click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                 help="auto: bfloat16 where the CPU/GPU runs it natively, else fp32. int8: OpenVINO's INT8, "
                      "calibrated on a sample of the dataset (a store of its own; accuracy cost in the README)."),
    cache_option,
)

# What runs the model's forward pass (embed, serve, and commands that embed new images).
runtime_option = click.option(
    "--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
    help="auto: measure torch and OpenVINO on this machine the first time a configuration runs, keep the "
         "faster and remember it (under CACHE/runtimes). torch: the reference. openvino: needs "
         "`pip install 'featx[openvino]'`. Vectors agree across runtimes, so they share a store.")

# The recipe: which layers make a vector and how an image is cropped (embed).
recipe_options = stack(
    click.option("--layers", default=DEFAULT_LAYERS, show_default=True,
                 help="grid (every stage's output averaged over each cell of a 2x2 grid, plus final: measured best "
                      "for training, search and audit, in 2.6x the bytes of final), stages (every stage's output "
                      "average-pooled, plus final: 1.4x), final (the pooled pre-logits features) or a comma list of "
                      "layer names (`featx backbones --layers NAME` lists them; NAME@2x2 pools a stage over a 2x2 "
                      "grid)."),
    click.option("--crop", type=click.Choice(CROPS), default=None,
                 help="center: timm's eval crop; full: the whole image resized to the input size "
                      "[default: full for the built-in datasets, center for folders and CSVs]."),
    click.option("--store-dtype", type=click.Choice(STORE_DTYPES), default="float32", show_default=True,
                 help="How the store keeps the vectors: float16 takes half the disk and page cache (measured: no "
                      "accuracy lost on Fashion-MNIST; see the README) and is a store of its own."),
)

# Which existing store holds a dataset, when several configurations embedded it (train, index, search…).
# The command receives them as one StoreQuery, ``store_query``, for ``find_dataset(dataset, cache, store_query)``.
_selection = stack(
    click.option("--backbone", default=None, help="Backbone of the store [default: the only store with DATASET]."),
    click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
                 help="Weights file the store was embedded with (also re-creates the backbone for image queries)."),
    click.option("--image-size", type=int, default=None, help="Input size the store was embedded at [default: any]."),
    click.option("--precision", type=click.Choice(STORED_PRECISIONS), default=None,
                 help="Precision the store was embedded at [default: any]."),
    click.option("--layers", default=None,
                 help="Recipe the store was embedded with: final, stages, grid or a list of layers "
                                "[default: any]."),
    click.option("--crop", type=click.Choice(CROPS), default=None, help="Crop the store was embedded with "
                                                                         "[default: any]."),
    click.option("--store-dtype", type=click.Choice(STORE_DTYPES), default=None,
                 help="How the store keeps its vectors [default: any]."),
    cache_option,
)
SETTINGS = ("backbone", "weights", "image_size", "precision", "layers", "crop", "store_dtype")


def gathered(into: str, kind):
    """Hand a command the recipe options it declares as one object: ``into=kind(**those options)`` (a Recipe to
    embed with, a StoreQuery to find a store by), built here once for every command."""
    def decorate(fn):
        @functools.wraps(fn)
        def command(**kwargs):
            given = {name: kwargs.pop(name) for name in SETTINGS if name in kwargs}
            return fn(**{into: kind(**given)}, **kwargs)

        return command

    return decorate


def selection_options(fn):
    return _selection(gathered("store_query", StoreQuery)(fn))


use_layers_option = click.option(
    "--use-layers", default=None,
    help="Use these of the store's layers only (a comma list; `featx stores` shows them) [default: all].")

# What finetune and compare share beyond the backbone: the training budget and the data.
training_options = stack(
    click.option("--epochs", type=click.IntRange(min=1), default=None,
                 help="Most epochs; early stopping may end sooner [default: 10]."),
    click.option("--lr", type=float, default=None,
                 help="Peak learning rate of the unfrozen layers (AdamW, warm-up then cosine); the head uses 10x "
                      "[default: 1e-4]."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None,
                 help="Images per step [default: 32 on CPU, 64 on GPU]."),
    name_option,
    data_dir_option,
)
