"""Embedding for rank: one forward pass per candidate group into the store, and what a candidate costs."""

from __future__ import annotations

import time

from typing import TYPE_CHECKING

import numpy as np

from ..config import FINAL
from ..data import Source, read_input
from ..embed import embed_source
from ..embed.engines import LocalEngine
from ..embed.runner import EmbedResult
from ..hardware import Progress
from ..store import FeatureStore, open_store

if TYPE_CHECKING:
    from ..backbones import Backbone


def feature_params(backbone: Backbone) -> int:
    """Weights of the network that make the features (the ImageNet classifier is not used)."""
    import torch

    model = backbone.model
    total = sum(p.numel() for p in model.parameters())
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, torch.nn.Module):
        total -= sum(p.numel() for p in classifier.parameters())
    return int(total)


def measure_speed(backbone: Backbone, source: Source, n: int = 64, batch_size: int = 32) -> float:
    """Images per second of the forward pass on up to ``n`` of the source's images, after one warm-up batch.

    Timed apart from embedding, so the figure is the same whether the vectors were already cached.
    """
    from ..embed import Embedder

    embedder = Embedder(backbone)
    crops = []
    for i in range(min(len(source.items), n + batch_size)):
        _, crop, _ = read_input(source, i, embedder.preprocess)
        if crop is not None:
            crops.append(crop)
    if not crops:
        return 0.0
    warm, timed = crops[:batch_size], crops[batch_size:] or crops
    embedder.embed_crops(warm, batch_size)
    started = time.perf_counter()
    embedder.embed_crops(timed, batch_size)
    return len(timed) / max(time.perf_counter() - started, 1e-9)


def embed_group(source: Source, backbone: Backbone, dataset: str, *, cache, keep_final: bool,
                hashes=None, decoders=None, progress: Progress | None = None) -> EmbedResult:
    """Embed ``source`` with ``backbone`` into its store as ``dataset``; with ``keep_final`` and a multi-layer
    recipe, also put the final layer's columns into the ``--layers final`` store, so a later plain
    ``featx embed`` of the same images reuses them instead of running the model again. ``decoders``: what
    decodes ``source``'s items (a shared DecoderPool's ``subset``) [default: a pool of its own]."""
    config = backbone.config
    engine = None if decoders is None else LocalEngine(backbone, decoders)
    with open_store(config, cache) as store:
        result = embed_source(source, backbone, store, name=dataset, progress=progress, hashes=hashes,
                              engine=engine)
        if keep_final and config.layers != (FINAL,):
            members = store.members(dataset)
            with open_store(config.final_only(), cache) as final:
                copy_columns(store, final, dataset, source.description, members)
    return result


def copy_columns(src: FeatureStore, dst: FeatureStore, dataset: str, description: str, members) -> int:
    """Write the columns of ``dst``'s layers, taken from ``src``'s vectors, for ``members`` not yet in ``dst``,
    and record ``dataset`` there; returns how many vectors were added."""
    from ..store.columns import select_layers

    selection = select_layers(src.config, list(dst.config.layers))
    with dst.writing():
        missing = sorted({m.key for m in members} - dst.present(m.key for m in members))
        if missing:
            dst.add(missing, np.ascontiguousarray(selection.take(src.vectors(missing))))
        dst.record_dataset(dataset, description, members)
        dst.compact([m.key for m in members])
    return len(missing)
