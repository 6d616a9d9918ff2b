"""The raw-text layout of AttentionXML / LightXML / CascadeXML data sets.

Source: the data folders of AttentionXML (You et al., NeurIPS 2019), LightXML (Jiang et
al., AAAI 2021) and CascadeXML (Kharbanda et al., NeurIPS 2022), e.g. ``data/EUR-Lex/``:

* ``train_texts.txt``, ``test_texts.txt``: one document per line;
* ``train_labels.txt``, ``test_labels.txt``: the same points' label names, separated by
  whitespace (an empty line is a point with no labels).

Each file may be plain or ``.gz`` / ``.xz`` / ``.bz2`` compressed; ``\\r\\n`` line ends are
accepted.  Line ``i + 1`` of a texts file and of its labels file describe point ``i``.

**Label ids convention.**  The files name labels, they do not number them.  The label
vocabulary is the sorted set of *training* label names (:func:`label_vocabulary`), and
label ``j`` is ``vocab[j]``.  A test label never seen in training cannot be predicted but
stays in the ground truth: :func:`encode_labels` with ``extend_unseen=True`` gives such
names new columns ``L, L + 1, ...`` after the vocabulary, in sorted order, so that
metrics (recall@k, the ideal of nDCG@k and PSP@k) still count them.

**Label texts (optional).**  ``label_texts.txt`` (plain or compressed) gives labels
their own text, one label a line: ``name<TAB>text`` (the text may be empty, e.g. a
Debian virtual package; it runs to the line end and may hold further tabs).  The file
may name labels that occur in no split.  It is read by :func:`read_label_texts` and
changes nothing unless a method asks for it (``jxmc train --method xr-linear|parabel|bonsai
--set label_text=true``, :mod:`jxmc.models.tree_linear.label_text`: the model's label
space becomes the training vocabulary followed by every label with a non-empty text);
the vocabulary above stays the training one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from jxmc.errors import DataError
from jxmc.fileio import atomic_write, read_lines

__all__ = [
    "encode_labels",
    "label_vocabulary",
    "read_label_texts",
    "read_text_labels",
    "read_text_split",
    "read_texts",
    "write_text_labels",
    "write_texts",
]

PathLike = str | os.PathLike


def read_texts(path: PathLike) -> list[str]:
    """Reads one document per line (line end removed, other whitespace kept).

    Returns:
      ``texts: list[str]`` of length ``n`` (an empty line is an empty document).

    Raises:
      DataError: missing or unreadable file, non-UTF-8 bytes (with the line), or an
        empty file (no lines at all).
    """
    texts = [text for _, text in read_lines(path)]
    if not texts:
        raise DataError(path, None, "empty file: expected one document per line")
    return texts


def read_text_labels(path: PathLike) -> list[list[str]]:
    """Reads whitespace-separated label names, one line per point.

    Returns:
      ``label_lists: list[list[str]]`` of length ``n``, names in file order; an empty
      (or whitespace-only) line gives ``[]``.

    Raises:
      DataError: missing or unreadable file, non-UTF-8 bytes, an empty file, or a label
        name repeated within a line (``"<path>:<line>: duplicate label 'x'"``).
    """
    out: list[list[str]] = []
    for lineno, text in read_lines(path):
        names = text.split()
        if len(set(names)) != len(names):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise DataError(path, lineno, f"duplicate label {name!r}")
                seen.add(name)
        out.append(names)
    if not out:
        raise DataError(path, None, "empty file: expected one line of label names per point")
    return out


def read_label_texts(path: PathLike) -> dict[str, str]:
    """Reads a ``label_texts.txt`` file: ``name<TAB>text`` per line.

    Returns:
      ``{name: text}`` in file order; ``text`` stripped of surrounding whitespace
      (possibly ``""``).

    Raises:
      DataError: missing or unreadable file, non-UTF-8 bytes, an empty file, or a
        malformed line (``"<path>:<line>: ..."``): no tab, an empty name, a name
        holding whitespace, or a name given twice.
    """
    out: dict[str, str] = {}
    for lineno, line in read_lines(path):
        name, tab, rest = line.partition("\t")
        if not tab:
            raise DataError(path, lineno, "expected 'name<TAB>text', found no tab")
        if not name:
            raise DataError(path, lineno, "empty label name before the tab")
        if name.split() != [name]:
            raise DataError(path, lineno, f"label name {name!r} holds whitespace")
        if name in out:
            raise DataError(path, lineno, f"label {name!r} given twice")
        out[name] = rest.strip()
    if not out:
        raise DataError(path, None, "empty file: expected one 'name<TAB>text' line per label")
    return out


def read_text_split(
    texts_path: PathLike, labels_path: PathLike
) -> tuple[list[str], list[list[str]]]:
    """Reads a texts file and its aligned labels file.

    Returns:
      ``(texts, label_lists)``, both of length ``n``.

    Raises:
      DataError: anything :func:`read_texts` / :func:`read_text_labels` raise, or line
        counts that differ (the message names both files and both counts).
    """
    texts = read_texts(texts_path)
    labels = read_text_labels(labels_path)
    if len(texts) != len(labels):
        raise DataError(
            texts_path,
            None,
            f"has {len(texts)} lines but the labels file {os.fspath(labels_path)} has "
            f"{len(labels)} lines; the two files must be aligned line by line",
        )
    return texts, labels


def label_vocabulary(train_labels: Iterable[Iterable[str]]) -> list[str]:
    """The sorted unique label names of the training points: ``vocab[j]`` is label ``j``."""
    return sorted({name for names in train_labels for name in names})


def encode_labels(
    label_lists: Sequence[Sequence[str]], vocab: Sequence[str], *, extend_unseen: bool
) -> tuple[sp.csr_matrix, list[str]]:
    """Label names to a 0/1 matrix, by the convention of the module docstring.

    Args:
      label_lists: ``n`` lists of label names.
      vocab: the ``L`` names of the training vocabulary (:func:`label_vocabulary`);
        column ``j < L`` is ``vocab[j]``.
      extend_unseen: if True, names not in ``vocab`` get new columns ``L, L + 1, ...``
        in sorted order (returned as ``extra_names``), so that they stay in the ground
        truth; if False, such a name raises ``ValueError``.

    Returns:
      ``(Y, extra_names)``: ``Y: csr_matrix`` f32[n, L_all] with 1.0 at the positives,
      sorted indices, ``L_all = L + len(extra_names)``; ``extra_names`` the sorted
      unseen names (empty when ``extend_unseen`` is False).

    Raises:
      ValueError: a name repeated in ``vocab`` or within one point, or (with
        ``extend_unseen=False``) a name not in ``vocab``; the message names it.
    """
    index = {name: j for j, name in enumerate(vocab)}
    if len(index) != len(vocab):
        dup = next(name for j, name in enumerate(vocab) if index[name] != j)
        raise ValueError(f"label {dup!r} appears twice in the vocabulary")
    unseen = sorted({n for names in label_lists for n in names if n not in index})
    if unseen and not extend_unseen:
        for i, names in enumerate(label_lists):
            for name in names:
                if name not in index:
                    raise ValueError(
                        f"label {name!r} of point {i} is not in the vocabulary "
                        f"({len(vocab)} labels); pass extend_unseen=True to add it"
                    )
    L = len(vocab)
    for k, name in enumerate(unseen):
        index[name] = L + k
    indptr = [0]
    indices: list[int] = []
    for i, names in enumerate(label_lists):
        ids = [index[name] for name in names]
        if len(set(ids)) != len(ids):
            raise ValueError(f"point {i} lists a label twice: {list(names)!r}")
        indices.extend(ids)
        indptr.append(len(indices))
    shape = (len(label_lists), L + len(unseen))
    Y = sp.csr_matrix(
        (
            np.ones(len(indices), dtype=np.float32),
            np.asarray(indices, dtype=np.int64),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=shape,
    )
    Y.sort_indices()
    return Y, unseen


def write_texts(path: PathLike, texts: Iterable[str]) -> None:
    """Writes one document per line, atomically; compression follows the suffix.

    Raises:
      ValueError: a text holding a line break (``\\n`` or ``\\r``), which would split it.
    """
    texts = list(texts)
    for i, t in enumerate(texts):
        if "\n" in t or "\r" in t:
            raise ValueError(f"text {i} holds a line break; one document per line")
    with atomic_write(path) as f:
        for t in texts:
            f.write(t + "\n")


def write_text_labels(path: PathLike, label_lists: Iterable[Iterable[str]]) -> None:
    """Writes space-separated label names, one line per point, atomically.

    Raises:
      ValueError: an empty name, a name holding whitespace, or a name repeated in a line.
    """
    lines = []
    for i, names in enumerate(label_lists):
        names = list(names)
        for name in names:
            if not name or name.split() != [name]:
                raise ValueError(f"label name {name!r} of point {i} is empty or holds whitespace")
        if len(set(names)) != len(names):
            raise ValueError(f"point {i} lists a label twice: {names!r}")
        lines.append(" ".join(names))
    with atomic_write(path) as f:
        for line in lines:
            f.write(line + "\n")
