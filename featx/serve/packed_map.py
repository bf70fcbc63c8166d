"""The map as the page reads it: coordinates and label codes packed in bytes, keys fetched point by point.

A million points as JSON with their keys is about 90 MB; packed, 7 bytes a point (7 MB), and the page asks
for a point's key only when it is pointed at or clicked (``/map/point/{i}``).

Layout (little-endian):

    8 bytes   MAGIC
    uint32    n, the points
    uint32    H, the header's length in bytes (even, so the arrays after it are 2-byte aligned)
    H bytes   JSON: {"dataset", "method", "n", "labels": [names], "splits": [names]} (padded with spaces)
    uint16[n] x, uint16[n] y   coordinates in [0, 1] times 65,535
    uint16[n] label codes      index into "labels"; 65,535: none
    uint8[n]  split codes      index into "splits"; 255: none
"""

from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"FXMAP001"
NONE16, NONE8 = 65535, 255
SCALE = 65535


def _codes(values: list, none: int, dtype) -> tuple[list[str], np.ndarray]:
    names = sorted({str(v) for v in values if v is not None})
    if len(names) >= none:
        raise ValueError(f"a map packs at most {none - 1} distinct values of a field, not {len(names)}.")
    at = {name: i for i, name in enumerate(names)}
    return names, np.array([none if v is None else at[str(v)] for v in values], dtype=dtype)


def pack_map(dataset: str, method: str, points: np.ndarray, labels: list, splits: list) -> bytes:
    """The map's bytes (see the module's docstring); ``points`` (n, 2) in [0, 1], ``labels`` and ``splits``
    one per point (None where there is none)."""
    label_names, label_codes = _codes(labels, NONE16, "<u2")
    split_names, split_codes = _codes(splits, NONE8, "u1")
    n = len(points)
    header = json.dumps({"dataset": dataset, "method": method, "n": n, "labels": label_names,
                         "splits": split_names}).encode()
    header += b" " * (len(header) % 2)
    xy = np.rint(np.clip(np.asarray(points, np.float64), 0.0, 1.0) * SCALE).astype("<u2")
    return b"".join([MAGIC, struct.pack("<II", n, len(header)), header, xy[:, 0].tobytes(), xy[:, 1].tobytes(),
                     label_codes.tobytes(), split_codes.tobytes()])


def unpack_map(data: bytes) -> dict:
    """pack_map's bytes back: the header's fields, ``x`` and ``y`` (float32), ``labels`` and ``splits`` (per point,
    None where there is none)."""
    if data[:8] != MAGIC:
        raise ValueError("not a packed featx map.")
    n, size = struct.unpack_from("<II", data, 8)
    header = json.loads(data[16:16 + size])
    at = 16 + size
    arrays = {}
    for name, dtype, width in (("x", "<u2", 2), ("y", "<u2", 2), ("label", "<u2", 2), ("split", "u1", 1)):
        arrays[name] = np.frombuffer(data, dtype=dtype, count=n, offset=at)
        at += n * width
    names = {"label": header["labels"], "split": header["splits"]}
    return {**header, "x": arrays["x"].astype(np.float32) / SCALE, "y": arrays["y"].astype(np.float32) / SCALE,
            **{f"{field}s": [None if c == (NONE16 if field == "label" else NONE8) else names[field][c]
                             for c in arrays[field].tolist()] for field in ("label", "split")}}
