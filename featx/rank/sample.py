"""The labelled sample every candidate is scored on: stratified, and the same whichever backbone embeds it."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from ..errors import DataError


def stratified_sample(keys: Sequence[str], labels: Sequence[str], n: int, *, min_per_class: int = 5,
                      seed: int = 0) -> np.ndarray:
    """Positions of about ``n`` samples, each class in proportion but never fewer than ``min_per_class``.

    Which samples are taken depends only on their content keys, labels and ``seed``: every candidate
    (another backbone, layer or crop) gets the very same images, whatever order a source lists them in.
    Duplicate keys are taken once. Raises DataError naming the classes with too few images.
    """
    keys, labels = np.asarray(keys, dtype=str), np.asarray(labels, dtype=str)
    first = {k: i for i, k in reversed(list(enumerate(keys)))}  # one position per key: its first
    unique = np.array(sorted(first.values()))
    classes, counts = np.unique(labels[unique], return_counts=True)
    short = [f"{str(c)!r} ({k})" for c, k in zip(classes, counts) if k < min_per_class]
    if short:
        raise DataError(f"too few images to score candidates: {', '.join(short)}; each class needs at least "
                        f"{min_per_class}.")
    share = n * counts / counts.sum()
    quota = np.floor(share).astype(int)
    # the largest remainders get the images rounding down left over, so the sample has n when it can
    for c in np.argsort(-(share - quota), kind="stable")[: max(0, n - quota.sum())]:
        quota[c] += 1
    quota = np.minimum(np.maximum(quota, min_per_class), counts)
    order = {i: hashlib.sha256(f"{seed}:{keys[i]}".encode()).hexdigest() for i in unique}
    picked = []
    for c, q in zip(classes, quota):
        members = [i for i in unique if labels[i] == c]
        picked += sorted(members, key=order.__getitem__)[:q]
    return np.array(sorted(picked), dtype=np.int64)
