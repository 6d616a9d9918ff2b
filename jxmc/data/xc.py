"""The sparse text formats of the Extreme Classification (XC) Repository.

Source: the XC Repository (Bhatia et al., http://manikvarma.org/downloads/XC/XMLRepository.html),
"Data format" section, and the files it distributes.

**Single-file layout** (e.g. ``train.txt``, ``test.txt``; :func:`read_xc`, :func:`write_xc`)::

    n_points n_features n_labels
    l1,l2,... f:v f:v ...
    ...

Line 1 is the header.  Line ``i + 2`` is point ``i``: comma-separated 0-based label ids,
one space, then space-separated ``feature:value`` pairs with 0-based feature ids.  A
point with no labels starts with a space (an empty label field); a point may also have no
features.  As a leniency, a line whose first token holds a colon is read as a point with
no labels (some converters drop the leading space).

**Split-file layout** (``trn_X_Xf.txt`` + ``trn_X_Y.txt``, ``tst_X_Xf.txt`` + ``tst_X_Y.txt``;
:func:`read_xc_split`, :func:`write_xc_split`; one file alone: :func:`read_sparse_matrix`,
:func:`write_sparse_matrix`): each file is one sparse matrix::

    n_rows n_cols
    c:v c:v ...
    ...

one line per row (an empty line is an empty row).  In the label file ``v`` is the
relevance of the label (usually ``1``); a non-zero value marks a positive.

Reading rules common to both: files may be plain or ``.gz`` / ``.xz`` / ``.bz2``
compressed; ``\\r\\n`` line ends and trailing whitespace are accepted; lines after the
header's count that are empty or whitespace only are ignored (so a file may end with an
empty line), while any other extra line is an error.  Every problem raises
:class:`jxmc.errors.DataError` whose text is ``"<path>:<line>: <what is wrong>"`` with the
1-based line number (the header is line 1).  Within a row, ids are sorted on reading;
stored zeros are dropped.  Writing is atomic (:func:`jxmc.fileio.atomic_write`) and
compresses by suffix; values are written as float32 with 9 significant digits
(``format(v, ".9g")``), which reads back bit-exactly.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from jxmc.errors import DataError
from jxmc.fileio import atomic_write, read_lines

__all__ = [
    "XCData",
    "read_sparse_matrix",
    "read_xc",
    "read_xc_split",
    "write_sparse_matrix",
    "write_xc",
    "write_xc_split",
]

# float64 values with magnitude >= this round to +-inf in float32 (the midpoint between
# float32's largest finite value 0x1.fffffep+127 and 2**128; ties go to even, i.e. to inf).
_F32_OVERFLOW = float.fromhex("0x1.ffffffp+127")

PathLike = str | os.PathLike

# The largest count a header may give: ids are int32 wherever jxmc holds them.
_MAX_COUNT = 2**31 - 1


class XCData(NamedTuple):
    """A split of an XC data set.

    Attributes:
      X: ``csr_matrix`` f32[n, d] features, sorted indices, no stored zeros.
      Y: ``csr_matrix`` f32[n, L] labels: 1.0 at the positives (single-file layout) or
        the relevance values of the label file (split layout); sorted indices, no
        stored zeros.
      n_features: ``d``.
      n_labels: ``L``.
    """

    X: sp.csr_matrix
    Y: sp.csr_matrix
    n_features: int
    n_labels: int


# ----------------------------------------------------------------------------- reading


def _header(path: str, lines: Iterator[tuple[int, str]], names: tuple[str, ...]) -> list[int]:
    """Parses line 1: ``len(names)`` non-negative integers."""
    expected = " ".join(names)
    first = next(lines, None)
    if first is None:
        raise DataError(path, 1, f"empty file: expected a header line '{expected}'")
    lineno, text = first
    parts = text.split()
    if len(parts) != len(names) or not all(p.isascii() and p.isdigit() for p in parts):
        raise DataError(
            path,
            lineno,
            f"bad header {text.strip()!r}: expected {len(names)} non-negative integers "
            f"'{expected}'",
        )
    values = [int(p) for p in parts]
    for name, v in zip(names, values, strict=True):
        if v > _MAX_COUNT:
            raise DataError(path, lineno, f"bad header: {name} {v} is over {_MAX_COUNT}, the "
                            "most jxmc's 32-bit ids can number")
    return values


def _data_lines(
    path: str, lines: Iterator[tuple[int, str]], n: int, unit: str
) -> Iterator[tuple[int, str]]:
    """Yields exactly ``n`` data lines; checks that the file has neither fewer nor more."""
    count = 0
    last = 1
    for lineno, text in lines:
        if count < n:
            count += 1
            last = lineno
            yield lineno, text
        elif text.strip():
            raise DataError(
                path,
                lineno,
                f"header says {n} {unit} but the file has more: this extra line would be "
                f"{unit[:-1]} {count + 1}",
            )
    if count < n:
        raise DataError(path, last, f"header says {n} {unit} but the file has {count}")


def _check_ids(path: str, lineno: int, ids: list[int], bound: int, kind: str) -> None:
    """Range and duplicate checks of one line's ids (C-speed passes; details on failure)."""
    if not ids:
        return
    lo = min(ids)
    if lo < 0:
        raise DataError(path, lineno, f"negative {kind} id {lo}")
    hi = max(ids)
    if hi >= bound:
        raise DataError(path, lineno, f"{kind} id {hi} >= n_{kind}s {bound}")
    if len(set(ids)) != len(ids):
        seen: set[int] = set()
        for i in ids:
            if i in seen:
                raise DataError(path, lineno, f"duplicate {kind} id {i}")
            seen.add(i)


def _check_values(path: str, lineno: int, ids: list[int], vals: list[float], kind: str) -> None:
    """Rejects NaN, infinities and values that overflow float32."""
    if not vals:
        return
    s = sum(vals)
    if s - s == 0 and -_F32_OVERFLOW < min(vals) and max(vals) < _F32_OVERFLOW:
        return
    for i, v in zip(ids, vals, strict=True):
        if v != v or v in (float("inf"), float("-inf")):
            raise DataError(path, lineno, f"value {v} of {kind} {i} is not finite")
        if abs(v) >= _F32_OVERFLOW:
            raise DataError(path, lineno, f"value {v!r} of {kind} {i} overflows float32")


def _diagnose_pairs(path: str, lineno: int, tokens: list[str], kind: str) -> None:
    """Finds and raises the first malformed ``id:value`` token of a line."""
    for tok in tokens:
        what = f"malformed {kind}:value pair {tok!r}"
        n_colons = tok.count(":")
        if n_colons == 0:
            raise DataError(path, lineno, f"{what} (no colon)")
        if n_colons > 1:
            raise DataError(path, lineno, f"{what} (more than one colon)")
        a, b = tok.split(":")
        if not a:
            raise DataError(path, lineno, f"{what} (empty {kind} id)")
        if not b:
            raise DataError(path, lineno, f"{what} (empty value)")
        try:
            int(a)
        except ValueError:
            raise DataError(path, lineno, f"{kind} id {a!r} is not an integer") from None
        try:
            float(b)
        except ValueError:
            raise DataError(path, lineno, f"value {b!r} of {kind} {a} is not a number") from None
    raise DataError(path, lineno, f"malformed {kind}:value pairs")  # pragma: no cover


def _parse_pairs(
    path: str, lineno: int, tokens: list[str], bound: int, kind: str
) -> tuple[list[int], list[float]]:
    """Parses ``id:value`` tokens of one line into checked ids and values."""
    try:
        pairs = [t.split(":") for t in tokens]
        ids = [int(a) for a, _ in pairs]
        vals = [float(b) for _, b in pairs]
    except ValueError:  # wrong number of parts, or not a number
        _diagnose_pairs(path, lineno, tokens, kind)
        raise  # pragma: no cover
    _check_ids(path, lineno, ids, bound, kind)
    _check_values(path, lineno, ids, vals, kind)
    return ids, vals


def _parse_labels(path: str, lineno: int, field: str, bound: int) -> list[int]:
    parts = field.split(",")
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        for p in parts:
            if not p:
                raise DataError(path, lineno, f"empty label id in {field!r}") from None
            try:
                int(p)
            except ValueError:
                raise DataError(path, lineno, f"label id {p!r} is not an integer") from None
        raise  # pragma: no cover
    _check_ids(path, lineno, ids, bound, "label")
    return ids


def _csr(
    indptr: array, indices: array, data: array | None, shape: tuple[int, int]
) -> sp.csr_matrix:
    ptr = np.frombuffer(indptr, dtype=np.int64)
    ind = np.frombuffer(indices, dtype=np.int64)
    if data is None:
        val = np.ones(len(ind), dtype=np.float32)
    else:
        val = np.frombuffer(data, dtype=np.float32).copy()
    M = sp.csr_matrix((val, ind, ptr), shape=shape)
    M.sort_indices()
    M.eliminate_zeros()
    return M


def _override(name: str, value: int | None, header_value: int) -> int:
    if value is None:
        return header_value
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def read_xc(
    path: PathLike, *, n_features: int | None = None, n_labels: int | None = None
) -> XCData:
    """Reads the XC single-file layout (``n_points n_features n_labels`` header).

    Format: see the module docstring (source: the XC Repository's data format).

    Args:
      path: the file; plain, ``.gz``, ``.xz`` or ``.bz2``.
      n_features: if given, the width ``d`` of ``X`` and the bound that feature ids are
        checked against, instead of the header's value (e.g. to read a test file in a
        training file's width).
      n_labels: likewise for ``L``.

    Returns:
      :class:`XCData` with ``X: csr f32[n, d]``, ``Y: csr f32[n, L]`` (1.0 at the
      positives), ``n_features = d``, ``n_labels = L``.

    Raises:
      DataError: missing or unreadable file, non-UTF-8 bytes, empty file, bad header
        (or a count in it over ``2**31 - 1``), fewer or more points than the header says, a non-integer, negative, out of range
        or duplicate label or feature id, a malformed ``feature:value`` pair, a value that
        is not a number, not finite or overflows float32.  The message is
        ``"<path>:<line>: <what is wrong>"``.
      ValueError: a bad ``n_features`` / ``n_labels`` argument.
    """
    spath = os.fspath(path)
    lines = iter(read_lines(spath))
    n, d, L = _header(spath, lines, ("n_points", "n_features", "n_labels"))
    d = _override("n_features", n_features, d)
    L = _override("n_labels", n_labels, L)

    x_ptr, x_ind, x_val = array("q", [0]), array("q"), array("f")
    y_ptr, y_ind = array("q", [0]), array("q")
    for lineno, text in _data_lines(spath, lines, n, "points"):
        tokens = text.split()
        if tokens and not text[0].isspace() and ":" not in tokens[0]:
            y_ind.extend(_parse_labels(spath, lineno, tokens[0], L))
            tokens = tokens[1:]
        ids, vals = _parse_pairs(spath, lineno, tokens, d, "feature")
        x_ind.extend(ids)
        x_val.extend(vals)
        x_ptr.append(len(x_ind))
        y_ptr.append(len(y_ind))
    X = _csr(x_ptr, x_ind, x_val, (n, d))
    Y = _csr(y_ptr, y_ind, None, (n, L))
    return XCData(X, Y, d, L)


def read_sparse_matrix(path: PathLike, *, kind: str = "feature") -> sp.csr_matrix:
    """Reads one sparse matrix in XC text form (one file of the split layout).

    Format: header ``n_rows n_cols``, then one line per row of space-separated
    ``col:value`` pairs (an empty line is an empty row); e.g. ``tst_X_Xf.txt``.

    Args:
      path: the file; plain, ``.gz``, ``.xz`` or ``.bz2``.
      kind: ``"feature"`` or ``"label"``: what a column is, for the error messages
        (``"feature id 12 >= n_features 10"``).

    Returns:
      ``csr_matrix`` f32[n_rows, n_cols], sorted indices, no stored zeros.

    Raises:
      DataError: as :func:`read_xc_split`.
    """
    if kind not in ("feature", "label"):
        raise ValueError(f"kind must be 'feature' or 'label', got {kind!r}")
    path = os.fspath(path)
    lines = iter(read_lines(path))
    n, m = _header(path, lines, ("n_rows", "n_cols"))
    ptr, ind, val = array("q", [0]), array("q"), array("f")
    for lineno, text in _data_lines(path, lines, n, "rows"):
        ids, vals = _parse_pairs(path, lineno, text.split(), m, kind)
        ind.extend(ids)
        val.extend(vals)
        ptr.append(len(ind))
    return _csr(ptr, ind, val, (n, m))


def read_xc_split(features_path: PathLike, labels_path: PathLike) -> XCData:
    """Reads the XC split-file layout: ``*_X_Xf.txt`` (features) + ``*_X_Y.txt`` (labels).

    Each file is a sparse matrix in text form: header ``n_rows n_cols``, then one line per
    row of space-separated ``col:value`` pairs (an empty line is an empty row).  Source:
    the XC Repository's data format.

    Returns:
      :class:`XCData` with ``X: csr f32[n, d]`` from the feature file and
      ``Y: csr f32[n, L]`` from the label file, whose values (the relevance) are kept as
      float32; a non-zero value marks a positive (stored zeros are dropped).

    Raises:
      DataError: any problem listed in :func:`read_xc` (ids are checked against the
        header's ``n_cols``: ``"feature id 12 >= n_features 10"`` in the feature file,
        ``"label id ..."`` in the label file), or the two files having different row
        counts (reported at line 1 of the label file, naming both files).
    """
    fpath, lpath = os.fspath(features_path), os.fspath(labels_path)
    X = read_sparse_matrix(fpath, kind="feature")
    Y = read_sparse_matrix(lpath, kind="label")
    if X.shape[0] != Y.shape[0]:
        raise DataError(
            lpath,
            1,
            f"header says {Y.shape[0]} rows but the feature file {fpath} has {X.shape[0]} "
            "rows; the two files must have the same rows",
        )
    return XCData(X, Y, X.shape[1], Y.shape[1])


# ----------------------------------------------------------------------------- writing


def _as_csr(M, name: str) -> sp.csr_matrix:
    """A canonical float32 CSR copy (summed duplicates, no stored zeros, sorted)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
        if sp.issparse(M):
            A = sp.csr_matrix(M, dtype=np.float32, copy=True)
        else:
            a = np.asarray(M)
            if a.ndim != 2:
                raise ValueError(f"{name} must be a 2-D matrix, got shape {a.shape}")
            A = sp.csr_matrix(a.astype(np.float32))
    A.sum_duplicates()
    A.eliminate_zeros()
    A.sort_indices()
    if not np.all(np.isfinite(A.data)):
        raise ValueError(f"{name} holds values that are not finite in float32")
    return A


def _pair_lines(A: sp.csr_matrix) -> Iterator[str]:
    """``"c:v c:v ..."`` for each row of a canonical CSR matrix."""
    ptr = A.indptr.tolist()
    ind = A.indices.tolist()
    val = A.data.tolist()
    for i in range(A.shape[0]):
        s, e = ptr[i], ptr[i + 1]
        yield " ".join([f"{c}:{v:.9g}" for c, v in zip(ind[s:e], val[s:e], strict=True)])


def _check_rows(X: sp.csr_matrix, Y: sp.csr_matrix) -> None:
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")


def write_xc(path: PathLike, X, Y) -> None:
    """Writes the XC single-file layout (format: see the module docstring).

    Args:
      path: output file; ``.gz`` / ``.xz`` / ``.bz2`` compress.  Written atomically.
      X: f32[n, d] features, sparse or dense; written as float32.
      Y: [n, L] labels, sparse or dense; every non-zero entry is a positive (its value
        is not kept: this format has none).

    Raises:
      ValueError: row counts differ, or ``X`` holds a value not finite in float32.
    """
    Xc = _as_csr(X, "X")
    Yc = _as_csr(Y, "Y")
    _check_rows(Xc, Yc)
    n, d = Xc.shape
    L = Yc.shape[1]
    y_ptr = Yc.indptr.tolist()
    y_ind = Yc.indices.tolist()
    with atomic_write(path) as f:
        f.write(f"{n} {d} {L}\n")
        for i, feats in enumerate(_pair_lines(Xc)):
            labels = ",".join(map(str, y_ind[y_ptr[i] : y_ptr[i + 1]]))
            if not labels:
                f.write(f" {feats}\n")
            elif feats:
                f.write(f"{labels} {feats}\n")
            else:
                f.write(f"{labels}\n")


def write_sparse_matrix(path: PathLike, M) -> None:
    """Writes one sparse matrix in XC text form (see :func:`read_sparse_matrix`).

    Args:
      path: output file; ``.gz`` / ``.xz`` / ``.bz2`` compress.  Written atomically.
      M: f32[n_rows, n_cols], sparse or dense; written as float32, stored zeros dropped.

    Raises:
      ValueError: a value not finite in float32.
    """
    _write_matrix(path, _as_csr(M, "M"))


def _write_matrix(path: PathLike, A: sp.csr_matrix) -> None:
    with atomic_write(path) as f:
        f.write(f"{A.shape[0]} {A.shape[1]}\n")
        for row in _pair_lines(A):
            f.write(row + "\n")


def write_xc_split(features_path: PathLike, labels_path: PathLike, X, Y) -> None:
    """Writes the XC split-file layout: a feature file and a label file.

    Args:
      features_path: e.g. ``trn_X_Xf.txt``; ``.gz`` / ``.xz`` / ``.bz2`` compress.
      labels_path: e.g. ``trn_X_Y.txt``.
      X: f32[n, d] features, sparse or dense.
      Y: f32[n, L] label relevance, sparse or dense (non-zero = positive); its values
        are written.

    Raises:
      ValueError: row counts differ, or a value is not finite in float32.
    """
    Xc = _as_csr(X, "X")
    Yc = _as_csr(Y, "Y")
    _check_rows(Xc, Yc)
    _write_matrix(features_path, Xc)
    _write_matrix(labels_path, Yc)
