"""`rank --validate`: embed all of the data per candidate group, train the default head, score the test split."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

from ..config import FINAL
from ..data import Source
from ..heads import LogisticHead
from ..hardware import Progress
from ..store import open_store
from ..store.columns import select_layers
from ..transfer.subsets import splits_from_members
from .candidates import Candidate
from .embedding import embed_group

if TYPE_CHECKING:
    from ..backbones import Backbone


def validate_group(source: Source, model: Backbone, candidates: Sequence[Candidate], dataset: str, hashes, *,
                   cache, seed: int = 0, decoders=None,
                   progress: Progress | None = None) -> tuple[dict[str, dict], dict]:
    """Test accuracy of the default head trained on the whole train split, for each candidate of one group.

    Returns ``({candidate id: {"test_accuracy", "validate_seconds"}}, {"full_seconds", "full_embedded",
    "full_reused"})``; the source is embedded into the group's store as ``dataset`` (as ``featx embed`` would),
    decoded by ``decoders`` (a DecoderPool of ``source``) when given.
    """
    embedded = embed_group(source, model, dataset, cache=cache, keep_final=False, hashes=hashes, decoders=decoders,
                           progress=progress)
    with open_store(model.config, cache) as store:
        splits = splits_from_members(source, store.members(dataset), dataset)
        train, test = splits["train"], splits["test"]
        X_train, X_test = store.vectors(train.keys), store.vectors(test.keys)
    tested = {}
    for c in candidates:
        started = time.perf_counter()
        selection = select_layers(model.config, [FINAL] if c.layers == FINAL else None)
        head = LogisticHead(layer_widths=selection.layer_widths, random_state=seed).fit(selection.take(X_train),
                                                                             train.labels.astype(str))
        accuracy = float((head.predict(selection.take(X_test)) == test.labels.astype(str)).mean())
        tested[c.id] = {"test_accuracy": round(accuracy, 5), "n_train": len(train), "n_test": len(test),
                        "validate_seconds": round(time.perf_counter() - started, 3)}
    return tested, {"full_seconds": embedded.seconds, "full_embedded": embedded.n_embedded,
                    "full_reused": embedded.n_reused}
