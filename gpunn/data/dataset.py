"""A :class:`Dataset`: the rows of a Parquet or ``.npy`` file larger than memory, read a block at a time on the
host, shuffled within a bounded buffer.

A Parquet file is read a row group at a time (pyarrow); an ``.npy`` file is memory-mapped and read in blocks of
``block_rows``. Each epoch visits the blocks in a seeded random order and shuffles the rows of a buffer of
``shuffle_buffer`` rows; when the buffer holds the whole file, the batches are exactly those of in-memory
training on the same rows with the same seed. Placing the batches on a device is :mod:`gpunn.stream`'s.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import _validation as check
from ..errors import ConfigError, InputError
from .moments import moments
from .readers import _need_pyarrow, _select_typed, check_nulls

SHUFFLE_BUFFER = 1 << 18  # rows
BLOCK_ROWS = 1 << 16  # rows per block of an .npy file


class Dataset:
    """Rows of a Parquet or ``.npy`` file, read a block at a time.

    Parameters
    ----------
    path : str or path
        A ``.parquet`` file (read a row group at a time; needs pyarrow: ``pip install 'gpunn[data]'``) or a 2-D
        ``.npy`` file (memory-mapped).
    target : str or int, optional
        The target column: its name in a Parquet file; in an ``.npy`` file its column index, or the path of a
        separate 1-D or 2-D ``.npy`` file of targets with one row per row of ``path``. None: features only.
    features : list, optional
        The feature columns (names, or indices for ``.npy``); default: every column but the target and the weight.
    weight : str or int, optional
        Per-row sample weights for ``fit`` (finite numbers >= 0, not all zero), which weigh each row's loss as
        ``fit(X, y, sample_weight=)`` does: the column's name in a Parquet file; in an ``.npy`` file its column
        index, or the path of a separate 1-D ``.npy`` file with one weight per row of ``path``. It is not a
        feature. Validation and ``evaluate`` stay unweighted.
    shuffle_buffer : int
        Rows shuffled together; training memory is about this many rows (8 bytes a value when the model
        standardizes, else the model's dtype) plus one block.
    block_rows : int, optional
        Rows per block of an ``.npy`` file (a Parquet file's blocks are its row groups); default: 65536, or
        fewer so that the file has at least 16 blocks to shuffle and split.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        target: Any = None,
        features: list[Any] | None = None,
        *,
        weight: Any = None,
        shuffle_buffer: int = SHUFFLE_BUFFER,
        block_rows: int | None = None,
    ):
        self.path = os.fspath(path)
        self.shuffle_buffer = check.integer(shuffle_buffer, "shuffle_buffer", 1)
        if block_rows is not None:
            block_rows = check.integer(block_rows, "block_rows", 1)
        name = self.path.lower()
        if name.endswith((".parquet", ".pq")):
            self._source: Any = _Parquet(self.path, target, features, weight)
        elif name.endswith(".npy"):
            self._source = _Npy(self.path, target, features, block_rows, weight)
        else:
            raise InputError(f"{self.path}: a Dataset streams .parquet or .npy files; read other files with gpunn.data")
        self.feature_names: list[str] | None = self._source.feature_names
        self.target_name: str | None = self._source.target_name
        self.weight_name: str | None = self._source.weight_name
        self.blocks = list(range(len(self._source.starts) - 1))  # this view's blocks (split() takes a subset)

    # ------------------------------------------------------------------------------------------- shape
    @property
    def n_features(self) -> int:
        return self._source.n_features

    @property
    def n_rows(self) -> int:
        starts = self._source.starts
        return int(sum(starts[b + 1] - starts[b] for b in self.blocks))

    @property
    def has_target(self) -> bool:
        return self._source.has_target

    @property
    def has_weight(self) -> bool:
        """Whether the rows have sample weights (the ``weight`` column)."""
        return self.weight_name is not None

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        weight = f", weight={self.weight_name!r}" if self.has_weight else ""
        return (f"Dataset({self.path!r}, rows={self.n_rows}, features={self.n_features}{weight}, "
                f"blocks={len(self.blocks)})")  # fmt: skip

    def _view(self, blocks: list[int]) -> Dataset:
        view = object.__new__(Dataset)
        view.__dict__.update(self.__dict__)
        view.blocks = list(blocks)
        return view

    def split(self, test_size: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """``(train, test)``: the blocks split at random (seeded) so that about ``test_size`` of the rows are in
        ``test``; both read the same file."""
        if not 0.0 < test_size < 1.0:
            raise ConfigError(f"test_size must be in (0, 1); got {test_size!r}")
        if len(self.blocks) < 2:
            raise InputError(
                f"{self.path} has one block: a Dataset is split by blocks (a Parquet file's row groups), so it needs "
                "two or more (write it with a smaller row_group_size)"
            )
        order = np.random.default_rng(seed).permutation(self.blocks)
        starts = self._source.starts
        sizes = np.array([starts[b + 1] - starts[b] for b in order])
        cut = int(np.clip(np.searchsorted(np.cumsum(sizes), test_size * sizes.sum()) + 1, 1, len(order) - 1))
        return self._view(sorted(order[cut:].tolist())), self._view(sorted(order[:cut].tolist()))

    # -------------------------------------------------------------------------------------------- reads
    def read(self, block: int, dtype: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Block ``block``'s features, as a new (rows, n_features) array of ``dtype``, and targets."""
        return self._source.read(block, dtype)

    def read_into(self, block: int, out: np.ndarray) -> np.ndarray | None:
        """Block ``block``'s features written into ``out`` (rows, n_features); returns its targets."""
        return self._source.read_into(block, out)

    def block_rows(self, block: int) -> int:
        starts = self._source.starts
        return int(starts[block + 1] - starts[block])

    def scaling(self) -> tuple[np.ndarray, np.ndarray]:
        """Each feature's mean and standard deviation over this view's rows, in one streaming pass (blocks
        combined with Chan's update, in float64; every block checked as it is read)."""
        self._source.verify()
        return moments((self.read(b, np.float64)[0] for b in self.blocks), self.n_features)

    def target_columns(self, y: np.ndarray) -> list[str]:
        """The names of the target's columns in messages (a separate 2-D ``.npy`` target has several)."""
        return self._source.target_columns(y)

    def target_blocks(self) -> Iterator[np.ndarray]:
        """The target column of this view, a block at a time (only that column is read)."""
        if not self.has_target:
            raise InputError(f"{self.path}: this Dataset has no target column")
        for b in self.blocks:
            yield self._source.read_target(b)

    def weight_blocks(self) -> Iterator[np.ndarray]:
        """The weight column of this view, a block at a time, as float64 (only that column is read); a value that
        is not finite or is negative is an error naming the file, the row and its block."""
        if not self.has_weight:
            raise InputError(f"{self.path}: this Dataset has no weight column")
        for b in self.blocks:
            yield self._source.read_weight(b)

    def weight_total(self) -> float:
        """The sum of this view's weights, in one pass over the weight column (float64)."""
        return float(sum(np.sum(w) for w in self.weight_blocks()))

    # ------------------------------------------------------------------------------------------ batches
    def batches(
        self, batch_size: int | None, rng: np.random.Generator | None, dtype: Any, weights: bool = False,
        check_targets: Callable[[np.ndarray, str, int, str], None] | None = None,
    ) -> Iterator[tuple[np.ndarray, ...]]:  # fmt: skip
        """Host batches ``(x, y)`` of one epoch, or ``(x, y, w)`` with ``weights`` (each row's weight, float64):
        in file order without ``rng``; otherwise the blocks in a random order and the rows shuffled within the
        buffer. With the whole view in the buffer this draws one permutation of its rows, as in-memory training
        does.

        Every block is checked as it is read, as :func:`gpunn.data.read` checks a file (nulls, NaN and inf,
        negative weights), and the file is checked unchanged first (an ``.npy`` file's content too); errors name
        the file, the block and the file row. ``check_targets(y, file, first_row, block)`` checks each block's
        targets further (a model's classes), before they are shuffled."""
        if weights and not self.has_weight:
            raise InputError(f"{self.path}: this Dataset has no weight column")
        self._source.verify()
        n = self.n_rows
        bs = n if batch_size is None else min(batch_size, n)
        if rng is not None and bs >= n:
            rng = None  # a full batch: in-memory training draws no permutation either
        order = list(self.blocks)
        whole = n <= self.shuffle_buffer
        if rng is not None and not whole:
            order = [order[i] for i in rng.permutation(len(order))]
        biggest = max((self.block_rows(b) for b in order), default=0)
        trigger = max(self.shuffle_buffer, bs)  # rows gathered before a shuffle
        capacity = (n if whole else trigger) + biggest
        buffer = np.empty((capacity, self.n_features), dtype=dtype)
        # the rows' columns, moved together: features, targets (made at the first block, in its dtype), weights
        columns: list[np.ndarray] = []
        filled = 0
        for b in order:
            rows = self.block_rows(b)
            y, w = self._source.read_block(b, buffer[filled : filled + rows], weights)
            if check_targets is not None and y is not None:
                check_targets(y, self._source.target_file, self._source.starts[b], self._source.where(b))
            if not columns:
                targets = np.empty((capacity, *(() if y is None else y.shape[1:])), dtype=_target_dtype(y))
                columns = [buffer, targets, *([np.empty(capacity)] if weights else [])]
            if y is not None:
                columns[1][filled : filled + rows] = y
            if w is not None:
                columns[2][filled : filled + rows] = w
            filled += rows
            if rng is None:
                usable = filled - filled % bs
                for start in range(0, usable, bs):
                    yield tuple(a[start : start + bs].copy() for a in columns)
                rest = filled - usable
                for a in columns:
                    a[:rest] = a[usable:filled]
                filled = rest
            elif not whole and filled >= trigger:
                perm = rng.permutation(filled)
                usable = filled - filled % bs
                for start in range(0, usable, bs):
                    idx = perm[start : start + bs]
                    yield tuple(a[idx] for a in columns)
                keep = np.sort(perm[usable:])
                for a in columns:
                    a[: len(keep)] = a[keep]
                filled = len(keep)
        if filled:
            perm = np.arange(filled) if rng is None else rng.permutation(filled)
            for start in range(0, filled, bs):
                idx = perm[start : start + bs]
                yield tuple(a[idx] for a in columns)


def _target_dtype(y: np.ndarray | None) -> Any:
    return np.float64 if y is None else y.dtype


class _Source:
    """What a file format provides: block boundaries, and reading a block's columns, each checked as
    :func:`gpunn.data.read` checks them (no nulls, finite numbers, weights >= 0), by file, block and file row."""

    path: str
    starts: list[int]  # first row of each block, and the row count last
    feature_names: list[str] | None
    target_name: str | None
    weight_name: str | None  # None: no weight column
    n_features: int
    has_target: bool
    stamp: tuple[int, int]  # size and modification time when opened
    block_word: str  # what a block is called in messages
    columns_named: list[str]  # the feature columns' names in messages

    def _stamp(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_size, st.st_mtime_ns

    def _check_unchanged(self) -> None:
        try:
            now = self._stamp()
        except OSError as exc:
            raise InputError(f"{self.path} cannot be read any more while gpunn streams it: {exc.strerror}") from None
        if now != self.stamp:
            raise InputError(f"{self.path} changed while gpunn was streaming it (its size or time differs)")

    def verify(self) -> None:
        """Before each epoch: the file is as it was when opened."""
        self._check_unchanged()

    def where(self, block: int) -> str:
        return f"{self.block_word} {block}"

    def read(self, block: int, dtype: Any) -> tuple[np.ndarray, np.ndarray | None]:
        out = np.empty((self.starts[block + 1] - self.starts[block], self.n_features), dtype=dtype)
        return out, self.read_into(block, out)

    def read_into(self, block: int, out: np.ndarray) -> np.ndarray | None:
        return self.read_block(block, out)[0]

    def read_block(self, block: int, out: np.ndarray, weights: bool = False) -> tuple[Any, Any]:
        """Block ``block``'s features written into ``out``; returns its targets and, with ``weights``, its
        weights (float64); every value checked."""
        with np.errstate(over="ignore", invalid="ignore"):  # a value too large for out's dtype is named below
            y, w = self._read_block(block, out, weights)
        self._check_features(block, out)
        if y is not None:
            self._check_target(block, y)
        return y, w

    def read_target(self, block: int) -> np.ndarray:
        y = self._read_target(block)
        self._check_target(block, y)
        return y

    def _check_features(self, block: int, out: np.ndarray) -> None:
        row, where = self.starts[block], self.where(block)
        if out.dtype.kind != "f" or np.isfinite(out).all():
            return
        wide = out
        if out.dtype != np.float64:  # a value in the file, or one too large for out's dtype?
            wide = np.empty(out.shape, np.float64)
            self._read_block(block, wide, False)
        check.finite(wide, self.path, self.columns_named, row, where, cast=out if wide is not out else None)

    def _check_target(self, block: int, y: np.ndarray) -> None:
        check.finite(y, self.target_file, self.target_columns(y), self.starts[block], self.where(block))

    target_file: str  # the file the targets are read from

    def target_columns(self, y: np.ndarray) -> list[str]:
        return [str(self.target_name)]

    def _read_block(self, block: int, out: np.ndarray, weights: bool) -> tuple[Any, Any]:
        raise NotImplementedError

    def _read_target(self, block: int) -> np.ndarray:
        raise NotImplementedError

    def read_weight(self, block: int) -> np.ndarray:
        raise NotImplementedError

    def _checked_weights(self, block: int, w: np.ndarray, name: str | None = None) -> np.ndarray:
        return check.weights(w, name or self.path, self.weight_name, self.starts[block], self.where(block))


class _Parquet(_Source):
    block_word = "row group"

    def __init__(self, path: str, target: Any, features: list[Any] | None, weight: Any = None):
        pa = _need_pyarrow(path, "Parquet")
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        self.path, self.pc = path, pc
        try:
            self.stamp = self._stamp()
            # pages written with checksums (write_page_checksum=True) are verified as they are read
            self.file = pq.ParquetFile(path, page_checksum_verification=True)
        except OSError as exc:
            raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        except Exception as exc:  # pyarrow.ArrowInvalid for a corrupt or truncated file
            raise InputError(f"{path} is not a readable Parquet file: {exc}") from None
        schema = self.file.schema_arrow
        _, cols, kind = _select_typed(pa, path, schema, target, features, weight)
        if weight is not None:
            cols = cols[:-1]  # the last is the weight column's
        if kind == "text":
            raise InputError(f"{path}: a streamed target column holds numbers (0/1, 0..k-1 or values); "
                             f"{target!r} holds text")  # fmt: skip
        features = [schema.names[j] for j in cols]
        self.feature_names, self.target_name, self.n_features = features, target, len(features)
        self.columns: list[str] = features
        self.columns_named = features
        self.target: str = target
        self.target_file = path
        self.has_target = target is not None
        self.weight_name = self.weight = weight
        meta = self.file.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.starts = [0, *np.cumsum(sizes, dtype=np.int64).tolist()]

    def _group(self, block: int, columns: list[str]) -> Any:
        self._check_unchanged()
        try:
            return self.file.read_row_group(block, columns=columns)
        except Exception as exc:  # a checksum that does not match, a corrupt page
            raise InputError(f"{self.path}, row group {block}: cannot be read: {exc}") from None

    def _column(self, block: int, table: Any, name: str) -> np.ndarray:
        column = table.column(name)
        check_nulls(self.pc, self.path, column, self.starts[block], self.where(block), name)
        return column.to_numpy()

    def _read_block(self, block: int, out: np.ndarray, weights: bool) -> tuple[Any, Any]:
        extra = ([self.target] if self.has_target else []) + ([self.weight] if weights else [])
        table = self._group(block, self.columns + extra)
        for j, name in enumerate(self.columns):
            out[:, j] = self._column(block, table, name)
        y = self._column(block, table, self.target) if self.has_target else None
        return y, self._weights(block, table.column(self.weight)) if weights else None

    def _read_target(self, block: int) -> np.ndarray:
        return self._column(block, self._group(block, [self.target]), self.target)

    def read_weight(self, block: int) -> np.ndarray:
        return self._weights(block, self._group(block, [self.weight]).column(self.weight))

    def _weights(self, block: int, column: Any) -> np.ndarray:
        import pyarrow as pa

        if column.null_count:
            raise InputError(f"{self.path}, row group {block}: weight column {self.weight!r} has "
                             f"{column.null_count} null(s)")  # fmt: skip
        return self._checked_weights(block, np.asarray(column.cast(pa.float64(), safe=False).to_numpy()))


class _Npy(_Source):
    block_word = "block"

    def __init__(self, path: str, target: Any, features: list[Any] | None, block_rows: int | None, weight: Any = None):
        self.path = path
        self.stamp, self.data, self.digest = self._open(path)
        if self.data.ndim != 2:
            raise InputError(f"{path} holds a {self.data.ndim}-D array; a Dataset needs rows and columns (2-D)")
        if self.data.dtype.kind not in "biuf":
            raise InputError(f"{path} holds {self.data.dtype} values; a Dataset needs numbers")
        n, width = self.data.shape
        self.y: Any = None
        self.w: Any = None
        self.sides: list[tuple[Any, tuple[int, int], bytes]] = []  # the target and weight files, stamps, digests
        self.target_name = self.weight_name = None
        self.target_file = path
        columns = list(range(width))
        if isinstance(target, (str, os.PathLike)):
            stamp, self.y, digest = self._open(os.fspath(target))
            self.sides.append((self.y, stamp, digest))
            self.target_name = os.path.basename(os.fspath(target))
            self.target_file = os.fspath(target)
            if self.y.shape[0] != n or self.y.ndim > 2:
                raise InputError(f"{target} holds {self.y.shape[0]} rows of targets for the {n} rows of {path}")
            if self.y.dtype.kind not in "biuf":
                raise InputError(f"{target} holds {self.y.dtype} values; a streamed target holds numbers")
        elif target is not None:
            if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not -width <= target < width:
                raise InputError(f"target {target!r} is not a column of {path} (0..{width - 1})")
            target = int(target) % width
            columns.remove(target)
            self.target_name = str(target)
        self.target_column = target if isinstance(target, int) else None
        self.has_target = target is not None
        self.weight_column: int | None = None
        self.weight_file = path
        if isinstance(weight, (str, os.PathLike)):
            if isinstance(target, (str, os.PathLike)) and os.fspath(weight) == os.fspath(target):
                raise InputError(f"{weight} is both the target and the weight file of {path}")
            stamp, self.w, digest = self._open(os.fspath(weight))
            self.sides.append((self.w, stamp, digest))
            self.weight_name = os.path.basename(os.fspath(weight))
            if self.w.ndim != 1 or self.w.shape[0] != n:
                raise InputError(f"{weight} holds weights of shape {self.w.shape}; {path} needs one weight per row, "
                                 f"shape ({n},)")  # fmt: skip
            if self.w.dtype.kind not in "biuf":
                raise InputError(f"{weight} holds {self.w.dtype} values; weights are numbers")
        elif weight is not None:
            if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or not -width <= weight < width:
                raise InputError(f"weight {weight!r} is not a column of {path} (0..{width - 1})")
            weight = int(weight) % width
            if weight == self.target_column:
                raise InputError(f"{path}: column {weight} is both the target and the weight column")
            columns.remove(weight)
            self.weight_column, self.weight_name = weight, str(weight)
        features = columns if features is None else [int(f) for f in features]
        if self.weight_column is not None and self.weight_column in features:
            raise InputError(f"{path}: the weight column {self.weight_column} is also listed among the features")
        if any(not 0 <= f < width for f in features):
            raise InputError(f"features {features} are not all columns of {path} (0..{width - 1})")
        self.features = features
        self.columns_named = [str(f) for f in features]
        self.contiguous = features == list(range(features[0], features[-1] + 1)) if features else True
        self.feature_names = None  # an .npy file has no column names
        self.n_features = len(features)
        if block_rows is None:
            block_rows = max(1, min(BLOCK_ROWS, -(-n // 16)))
        self.starts = [*range(0, n, block_rows), n] if n else [0, 0]

    def _open(self, path: str) -> tuple[tuple[int, int], Any, bytes]:
        try:
            st = os.stat(path)
            data = np.load(path, mmap_mode="r", allow_pickle=False)
            return (st.st_size, st.st_mtime_ns), data, content_digest(path)
        except OSError as exc:
            raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        except ValueError as exc:  # a truncated or corrupt header
            raise InputError(f"{path} is not a readable .npy file: {exc}") from None

    def _check_unchanged(self) -> None:
        super()._check_unchanged()
        for side, stamp, _ in self.sides:
            st = os.stat(side.filename)
            if (st.st_size, st.st_mtime_ns) != stamp:
                raise InputError(f"{side.filename} changed while gpunn was streaming it (its size or time differs)")

    def verify(self) -> None:
        """Sizes and times as when opened, and the content check (:func:`content_digest`): a file rewritten in
        place with its time put back is caught too."""
        self._check_unchanged()
        for path, digest in [(self.path, self.digest), *((s.filename, d) for s, _, d in self.sides)]:
            try:
                now = content_digest(path)
            except OSError as exc:
                raise InputError(f"{path} cannot be read any more while gpunn streams it: {exc.strerror}") from None
            if now != digest:
                raise InputError(f"{path} changed while gpunn was streaming it (its content differs from when it "
                                 "was opened, though its size and time do not)")  # fmt: skip

    def target_columns(self, y: np.ndarray) -> list[str]:
        if self.y is None:
            return [str(self.target_column)]
        return [str(j) for j in range(y.shape[1])] if y.ndim == 2 else ["0"]

    def _read_block(self, block: int, out: np.ndarray, weights: bool) -> tuple[Any, Any]:
        self._check_unchanged()
        lo, hi = self.starts[block], self.starts[block + 1]
        if self.contiguous:
            out[...] = self.data[lo:hi, self.features[0] : self.features[-1] + 1]
        else:
            out[...] = self.data[lo:hi][:, self.features]
        y = self._read_target(block) if self.has_target else None
        return y, self._weights(block) if weights else None

    def read_weight(self, block: int) -> np.ndarray:
        self._check_unchanged()
        return self._weights(block)

    def _weights(self, block: int) -> np.ndarray:
        lo, hi = self.starts[block], self.starts[block + 1]
        w = self.w[lo:hi] if self.w is not None else self.data[lo:hi, self.weight_column]
        return self._checked_weights(block, np.array(w, dtype=np.float64))

    def _read_target(self, block: int) -> np.ndarray:
        lo, hi = self.starts[block], self.starts[block + 1]
        if self.y is not None:
            return np.array(self.y[lo:hi])
        return np.array(self.data[lo:hi, self.target_column])


DIGEST_SAMPLES = 16  # pieces of an .npy file hashed at open and before each epoch, besides its header
DIGEST_BYTES = 1 << 16  # bytes a piece


def content_digest(path: str) -> bytes:
    """A cheap fingerprint of a file's content: a hash of its first ``DIGEST_BYTES`` (an .npy file's header and
    first rows), its last, and ``DIGEST_SAMPLES`` pieces spread evenly between (the whole file when it is no
    larger than those pieces together). Reading it costs a few hundred KiB, whatever the file's size."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pieces = DIGEST_SAMPLES + 2
        if size <= pieces * DIGEST_BYTES:
            h.update(f.read())
        else:
            for i in range(pieces):
                f.seek((size - DIGEST_BYTES) * i // (pieces - 1))
                h.update(f.read(DIGEST_BYTES))
    return h.digest()
