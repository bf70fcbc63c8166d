"""The rows a linear head trains on, standardised: kept in memory when small, else streamed in blocks from X."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ..hardware import on_cores, single_threaded_blas
from ..store.view import normalize

IN_MEMORY_BYTES = 1 << 30  # standardised rows up to this size are made once and kept; larger ones are streamed
BLOCK_BYTES = 64 << 20  # float32 bytes per streamed block: big enough for fast BLAS, small beside the data
PIECE_ROWS = 512  # rows standardised at a time in memory: a piece of 1,280 float32 columns stays in cache
CACHE_BYTES = 2 << 20  # float32 bytes of the rows one piece of a pass works on while they are in cache
PIECES_AT_ONCE = 64  # pieces shared out among the cores at a time (at least 4 a thread: hardware.on_cores)


class StandardRows:
    """Z = (N(X) − mean) / scale for the rows ``index`` of X (default all); N L2-normalises each row
    (layer by layer with ``layer_widths``) or does nothing.

    X may be a read-only memory map of any float dtype (a float16 store's shards): when Z is small
    it is made once, as one float32 copy; otherwise each pass reads X again block by block, so
    training a head on a million stored vectors never holds a second copy of them.
    """

    def __init__(self, X: np.ndarray, *, l2: bool, layer_widths: tuple[int, ...] | None, mean: np.ndarray,
                 scale: np.ndarray, index: np.ndarray | None = None, block_rows: int | None = None,
                 dense: np.ndarray | None = None):
        self.X, self.l2, self.layer_widths, self.index = X, l2, layer_widths, index
        self.mean, self.scale = mean, scale
        self.n = len(X) if index is None else len(index)
        self.d = X.shape[1]
        self.block_rows = block_rows or max(1, BLOCK_BYTES // (4 * self.d))
        self.dense = dense  # Z itself, when it is kept

    @classmethod
    def fit(cls, X: np.ndarray, *, l2: bool, layer_widths: tuple[int, ...] | None = None,
            block_rows: int | None = None, index: np.ndarray | None = None) -> "StandardRows":
        """Standardise X (its rows at ``index`` only, when given: X is not copied): the mean and scale from passes
        over it; Z kept whole unless ``block_rows`` is given or it would take more than IN_MEMORY_BYTES."""
        d = X.shape[1]
        rows = cls(X, l2=l2, layer_widths=layer_widths, mean=np.zeros(d, np.float32), scale=np.ones(d, np.float32),
                   index=None if index is None else np.asarray(index), block_rows=block_rows)
        n = rows.n
        if block_rows is None and 4 * n * d <= IN_MEMORY_BYTES:
            return rows._fit_in_memory()
        with single_threaded_blas():
            total = sum(rows.map_pieces(lambda a, b, Z: Z.sum(axis=0, dtype=np.float64), standardised=False),
                        np.zeros(d, np.float64))
            if not np.all(np.isfinite(total)):
                raise ValueError("Input X contains NaN or infinity.")
            mean = (total / max(n, 1)).astype(np.float32)

            def squares(a, b, Z):
                Z -= mean
                return np.einsum("ij,ij->j", Z, Z, dtype=np.float64)

            sq = sum(rows.map_pieces(squares, standardised=False), np.zeros(d, np.float64))
        rows.mean, rows.scale = mean, rows._scale(sq)
        return rows

    def _fit_in_memory(self) -> "StandardRows":
        """Z made once, in two passes over cache-sized pieces shared out among the cores (hardware.on_cores):
        the first copies and normalises each piece and sums it and its squares, the second centres and scales
        it. One pass after another over the whole array took 0.7 s for 60,000 × 1,280 float16 rows."""
        n, d = self.n, self.d
        Z = np.empty((n, d), np.float32)
        pieces = [(a, min(n, a + PIECE_ROWS)) for a in range(0, n, PIECE_ROWS)]

        def copy_and_sum(span):
            a, b = span
            Z[a:b] = self._normalised(a, b)
            return Z[a:b].sum(axis=0, dtype=np.float64), np.einsum("ij,ij->j", Z[a:b], Z[a:b], dtype=np.float64)

        with single_threaded_blas():
            sums = on_cores(pieces, copy_and_sum)
            total = np.sum([s for s, _ in sums], axis=0) if sums else np.zeros(d)
            if not np.all(np.isfinite(total)):
                raise ValueError("Input X contains NaN or infinity.")
            mean = total / max(n, 1)
            # Σ(z − mean)² = Σz² − n·mean², in float64 sums of float32 values
            sq = np.maximum(np.sum([q for _, q in sums], axis=0) - n * mean**2, 0.0) if sums else np.zeros(d)
            self.mean, self.scale = mean.astype(np.float32), self._scale(sq)

            def centre(span):
                a, b = span
                Z[a:b] -= self.mean
                Z[a:b] /= self.scale

            on_cores(pieces, centre)
        self.dense = Z
        return self

    def _scale(self, sq: np.ndarray) -> np.ndarray:
        """The scale from the columns' summed squared deviations."""
        scale = np.sqrt(sq / max(self.n, 1))
        if self.l2:
            # One scale for every feature: per-feature scales estimated from a few examples inflate
            # near-constant features to the size of informative ones (see LogisticHead).
            scale[:] = np.sqrt(np.mean(scale**2))
        scale[scale < 1e-12] = 1.0
        return scale.astype(np.float32)

    def _spans(self) -> Iterator[tuple[int, int]]:
        step = self.n if self.dense is not None else self.block_rows
        for a in range(0, self.n, max(step, 1)):
            yield a, min(self.n, a + step)

    def _normalised(self, a: int, b: int) -> np.ndarray:
        """Rows a:b of N(X) (of the index's rows), as a fresh float32 array."""
        src = self.X[a:b] if self.index is None else self.X[self.index[a:b]]
        if self.l2:
            return normalize(src, layer_widths=self.layer_widths)
        return np.array(src, dtype=np.float32, order="C", copy=True)

    def block(self, a: int, b: int) -> np.ndarray:
        """Rows a:b of Z."""
        if self.dense is not None:
            return self.dense[a:b]
        Z = self._normalised(a, b)
        Z -= self.mean
        Z /= self.scale
        return Z

    def blocks_of_rows(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(start, stop, Z[start:stop])`` over all rows: one block when Z is kept, else BLOCK_BYTES each."""
        for a, b in self._spans():
            yield a, b, self.block(a, b)

    def map_pieces(self, work: Callable, standardised: bool = True) -> Iterator:
        """``work(a, b, Z[a:b])`` for each piece of about CACHE_BYTES, yielded in order, computed on the cores
        (hardware.on_cores) PIECES_AT_ONCE at a time, so a caller summing them holds a few results, not a pass's;
        ``standardised=False`` gives N(X) instead of Z. A streamed piece is read and standardised by the thread that
        then works on it, while it is in cache: reading and converting the rows (float16 memory maps, rows gathered
        at a fold's positions) is most of a streamed pass, and it no longer runs on one core while the other waits.
        ``work`` may change Z (a fresh copy when streamed)."""
        step = max(64, CACHE_BYTES // (4 * self.d))
        if self.dense is None:
            step = min(step, self.block_rows)  # a streamed piece is at most a block
        spans = [(a, min(self.n, a + step)) for a in range(0, self.n, step)]
        if self.dense is not None and standardised:
            def task(span):
                return work(*span, self.dense[span[0]:span[1]])
        else:
            read = self.block if standardised else self._normalised

            def task(span):
                return work(*span, read(*span))
        for g in range(0, len(spans), PIECES_AT_ONCE):
            yield from on_cores(spans[g:g + PIECES_AT_ONCE], task)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Z at ``rows`` (a small subset), as an array."""
        rows = np.asarray(rows)
        if self.dense is not None:
            return self.dense[rows]
        return StandardRows(self.X, l2=self.l2, layer_widths=self.layer_widths, mean=self.mean, scale=self.scale,
                            index=rows if self.index is None else self.index[rows]).block(0, len(rows))

    def subset(self, rows: np.ndarray) -> "StandardRows":
        """The rows at ``rows`` as StandardRows of their own (same mean and scale); kept in memory when
        these are, or when they are few (a grid search's sample is fitted many times over)."""
        rows = np.asarray(rows)
        index = rows if self.index is None else self.index[rows]
        out = StandardRows(self.X, l2=self.l2, layer_widths=self.layer_widths, mean=self.mean, scale=self.scale, index=index,
                           block_rows=self.block_rows)
        if self.dense is not None:
            out.dense = self.dense[rows]
        elif 4 * len(rows) * self.d <= IN_MEMORY_BYTES // 8:
            out.dense = out.block(0, len(rows))
        return out

    def scores(self, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Z·W + b, block by block."""
        out = np.empty((self.n, W.shape[1]), np.float32)

        def score(a, e, Z):
            out[a:e] = Z @ W + b

        with single_threaded_blas():
            for _ in self.map_pieces(score):
                pass
        return out
