"""An index's key table held compactly: the store's SHA-256 hex keys as 32-byte digests, an eighth of NumPy's text."""

from __future__ import annotations

import numpy as np

DIGEST = np.dtype("S32")  # one raw SHA-256 digest; a 64-character key as NumPy text (U64) takes 256 bytes
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def pack_keys(keys) -> np.ndarray:
    """``keys`` as digests when every one is a 64-character lowercase hex key (the store's content hashes), else
    as NumPy text unchanged (keys of other shapes, as tests and callers may give). Packed keys pass through."""
    if isinstance(keys, np.ndarray) and keys.dtype == DIGEST:
        return keys
    listed = keys.tolist() if isinstance(keys, np.ndarray) else [str(k) for k in keys]
    joined = "".join(listed)
    if not listed or len(joined) != 64 * len(listed) or joined != joined.lower():
        return np.asarray(listed, dtype=str)
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return np.asarray(listed, dtype=str)
    if len(raw) != 32 * len(listed):  # fromhex skips whitespace, so a key with a space in it comes up short
        return np.asarray(listed, dtype=str)
    return np.frombuffer(raw, dtype=DIGEST).copy()


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    """Packed keys (or one) as NumPy text again; text keys as they are."""
    keys = np.asarray(keys)
    if keys.dtype.kind == "S":  # one digest taken out of a table comes back with its trailing zero bytes cut off
        keys = keys.astype(DIGEST)
    if keys.dtype != DIGEST:
        return keys.astype(str)
    shape = keys.shape
    # the raw bytes, not the elements: NumPy's bytes strip a digest's trailing zero bytes
    raw = np.ascontiguousarray(keys).reshape(-1).view(np.uint8).reshape(-1, 32)
    return _HEX[raw].view("S64").reshape(shape).astype(str)


def join_keys(*tables: np.ndarray) -> np.ndarray:
    """Key tables one after another, packed where all of them are."""
    if all(t.dtype == DIGEST for t in tables):
        return np.concatenate(tables)
    return np.concatenate([unpack_keys(t) for t in tables])



def positions_in(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Where each of ``keys`` lies in ``table`` (both packed alike), -1 where it is not there: one sort of the table
    (np.isin sorted both, twice over, for the two questions an index asks of its dataset)."""
    if not len(table) or not len(keys):
        return np.full(len(keys), -1, np.int64)
    order = np.argsort(table, kind="stable")
    found = order[np.minimum(np.searchsorted(table, keys, sorter=order), len(table) - 1)]
    return np.where(table[found] == keys, found, -1)
