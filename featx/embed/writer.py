"""The writer: one embedded batch into the store, refusing vectors whose file changed since it was hashed."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..store import FeatureStore


def store_batch(store: FeatureStore, keys: Sequence[str | None], idx: Sequence[int], read_keys: Sequence[str],
                X: np.ndarray, failed: dict[str, str]) -> list[str]:
    """Add one embedded batch to ``store``, except items whose file changed since it was hashed; their keys."""
    for i, k in zip(idx, read_keys):
        if k != keys[i]:  # changed on disk since it was hashed: its vector would be misfiled
            failed[keys[i]] = "file changed while embedding; run again"
    ok = [j for j, i in enumerate(idx) if keys[i] not in failed]
    batch_keys = [keys[idx[j]] for j in ok]
    store.add(batch_keys, X[ok])
    return batch_keys
