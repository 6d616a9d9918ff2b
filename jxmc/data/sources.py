"""Dataset folders: which layout a folder holds, and reading it into a :class:`Dataset`.

Two families of layouts:

* the folders :func:`jxmc.data.dataset.load_dataset` reads (:func:`detect_layout`):
  the Extreme Classification Repository single-file layout (``train.txt``,
  ``test.txt``), its split-file layout (``trn_X_Xf.txt``, ``trn_X_Y.txt``,
  ``tst_X_Xf.txt``, ``tst_X_Y.txt``) and the raw-text layout of AttentionXML /
  LightXML / CascadeXML (``{train,test}_texts.txt``, ``{train,test}_labels.txt``,
  optionally ``label_texts.txt``);
* the unpacked "BoW Features" downloads of the repository (:func:`read_xc_source`,
  read by the TFDS builder): the two XC layouts above plus ``PREFIX_train.txt`` +
  ``PREFIX_test.txt`` and ``NAME_data.txt`` + ``NAME_trSplit.txt`` +
  ``NAME_tstSplit.txt`` (:data:`XC_LAYOUTS`).

Every file may be plain or ``.gz`` / ``.xz`` / ``.bz2``.  :func:`text_dataset`
is how raw text becomes a :class:`Dataset` wherever it was read from (TF-IDF
fitted on the training texts, label vocabulary = sorted training names).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from jxmc.data import synthetic, text, xc
from jxmc.data.catalog import XC_URL
from jxmc.data.tfidf import TfidfConfig, fit_tfidf
from jxmc.data.types import Dataset, Split
from jxmc.errors import DataError
from jxmc.fileio import COMPRESSED_SUFFIXES, find_file, read_lines
from jxmc.ops.sparse import normalise_rows

__all__ = ["XC_LAYOUTS", "XcSource", "detect_layout", "need_file", "read_folder",
           "read_synthetic", "read_xc_source", "text_dataset"]

#: The layouts :func:`read_xc_source` recognises, for one-line error messages.
XC_LAYOUTS = ("train.txt + test.txt; trn_X_Xf.txt + trn_X_Y.txt + tst_X_Xf.txt + tst_X_Y.txt; "
              "PREFIX_train.txt + PREFIX_test.txt; NAME_data.txt + NAME_trSplit.txt + "
              "NAME_tstSplit.txt (each plain, .gz, .xz or .bz2)")


# ----------------------------------------------------------------------------- load_dataset's folders


def detect_layout(folder: str) -> str:
    """``"xc"``, ``"xc-split"`` or ``"text"`` from the files in ``folder``.

    Raises:
      DataError: not a folder, or none of the layouts' files are there.
    """
    if not os.path.isdir(folder):
        raise DataError(folder, None, "not found" if not os.path.exists(folder) else
                        "is a file, expected a dataset folder")
    if find_file(folder, "train.txt") and find_file(folder, "test.txt"):
        return "xc"
    if find_file(folder, "trn_X_Xf.txt") and find_file(folder, "trn_X_Y.txt"):
        return "xc-split"
    if find_file(folder, "train_texts.txt") and find_file(folder, "train_labels.txt"):
        return "text"
    raise DataError(folder, None, "no dataset layout recognised: expected train.txt + test.txt "
                    "(XC), trn_X_Xf.txt + trn_X_Y.txt + tst_X_Xf.txt + tst_X_Y.txt (XC split), "
                    "or {train,test}_texts.txt + {train,test}_labels.txt (raw text), "
                    "optionally .gz/.xz/.bz2")


def need_file(folder: str, stem: str) -> str:
    """The path of ``stem`` in ``folder``, plain or compressed.

    Raises:
      DataError: neither ``stem`` nor a ``.gz`` / ``.xz`` / ``.bz2`` of it is there.
    """
    path = find_file(folder, stem)
    if path is None:
        raise DataError(os.path.join(folder, stem), None, "file not found (also tried .gz, .xz, .bz2)")
    return path


def text_dataset(name: str, train: tuple[list[str], list[list[str]]],
                 test: tuple[list[str], list[list[str]]], *, tfidf: TfidfConfig | None,
                 source: str, label_texts: dict[str, str] | None = None) -> Dataset:
    """A raw-text :class:`Dataset` from ``(texts, label_lists)`` of each split.

    The label vocabulary is the sorted training names; test labels unseen in
    training are appended as extra columns of ``test.Y``; TF-IDF (``tfidf``
    settings, default :class:`TfidfConfig`) is fitted on the training texts;
    ``label_texts`` (``{name: text}``, optional) is carried as ``Dataset.label_texts``.

    Raises:
      DataError: (naming ``source``) the training texts hold no term that TF-IDF keeps.
    """
    (tr_texts, tr_labels), (te_texts, te_labels) = train, test
    vocab = text.label_vocabulary(tr_labels)
    Ytr, _ = text.encode_labels(tr_labels, vocab, extend_unseen=False)
    Yte, extra = text.encode_labels(te_labels, vocab, extend_unseen=True)
    config = tfidf or TfidfConfig()
    try:
        featurizer, Xtr = fit_tfidf(tr_texts, config)
    except ValueError as e:  # scikit-learn: no term left (empty texts, too few documents)
        raise DataError(source, None, f"the training texts give no TF-IDF term in at least "
                        f"min_df={config.min_df} of the {len(tr_texts)} documents "
                        f"(scikit-learn: {e})") from None
    Xte = featurizer.transform(te_texts)
    return Dataset(name, "text", Split(Xtr, Ytr, tr_texts), Split(Xte, Yte, te_texts),
                   label_names=vocab, extra_label_names=extra, featurizer=featurizer,
                   source=source, label_texts=label_texts)


def read_synthetic(spec: str | None) -> Dataset:
    """The generated data of ``spec`` (None, ``"synthetic"`` or ``"synthetic:key=value,..."``).

    Raises:
      ConfigError: an unknown option or inconsistent sizes (:mod:`jxmc.data.synthetic`).
    """
    config = synthetic.parse_spec(spec or "synthetic")
    Xtr, Ytr, Xte, Yte = synthetic.generate(config)
    return Dataset("synthetic", "synthetic", Split(Xtr, Ytr), Split(Xte, Yte),
                   source=spec or "synthetic")


def read_folder(folder: str, *, normalise: bool = True, tfidf: TfidfConfig | None = None) -> Dataset:
    """Reads a dataset folder in any layout of :func:`detect_layout`.

    Args:
      normalise: L2-normalise the feature rows of XC data.
      tfidf: the featuriser's settings for raw text.

    Raises:
      DataError: no layout recognised, unreadable or malformed files (file and
        line named), or train and test that disagree on ``d`` or ``L``.
    """
    folder = os.path.normpath(folder)
    name = os.path.basename(folder)
    layout = detect_layout(folder)
    if layout == "text":
        train = text.read_text_split(need_file(folder, "train_texts.txt"),
                                     need_file(folder, "train_labels.txt"))
        test = text.read_text_split(need_file(folder, "test_texts.txt"),
                                    need_file(folder, "test_labels.txt"))
        label_texts = find_file(folder, "label_texts.txt")  # optional: name<TAB>text
        return text_dataset(name, train, test, tfidf=tfidf, source=folder,
                            label_texts=label_texts and text.read_label_texts(label_texts))
    if layout == "xc":
        tr = xc.read_xc(need_file(folder, "train.txt"))
        te = xc.read_xc(need_file(folder, "test.txt"))
    else:
        tr = xc.read_xc_split(need_file(folder, "trn_X_Xf.txt"), need_file(folder, "trn_X_Y.txt"))
        te = xc.read_xc_split(need_file(folder, "tst_X_Xf.txt"), need_file(folder, "tst_X_Y.txt"))
    test_path = find_file(folder, "test.txt") or find_file(folder, "tst_X_Xf.txt")
    if te.X.shape[1] != tr.X.shape[1]:
        raise DataError(test_path, 1, f"test has {te.X.shape[1]} features but train has {tr.X.shape[1]}")
    if te.Y.shape[1] != tr.Y.shape[1]:
        raise DataError(test_path, 1, f"test has {te.Y.shape[1]} labels but train has {tr.Y.shape[1]}")
    Xtr, Xte = (normalise_rows(tr.X), normalise_rows(te.X)) if normalise else (tr.X, te.X)
    Ytr = sp.csr_matrix((tr.Y != 0).astype(np.float32))
    Yte = sp.csr_matrix((te.Y != 0).astype(np.float32))
    return Dataset(name, layout, Split(Xtr, Ytr), Split(Xte, Yte), source=folder)


# ----------------------------------------------------------------------------- XC downloads


class XcSource(NamedTuple):
    """The train and test splits of an XC data set as jxmc's XC reader returns them.

    Attributes:
      train, test: :class:`jxmc.data.xc.XCData` (``X: csr f32[n, d]`` as in the
        files, not normalised; ``Y: csr f32[n, L]``).
      layout: which layout was found (``"xc"``, ``"xc-split"``, ``"xc-prefix"``,
        ``"xc-data+splits"``).
      files: the base names of the files that were read.
    """

    train: xc.XCData
    test: xc.XCData
    layout: str
    files: tuple[str, ...]


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _listing(folder: str) -> dict[str, str]:
    """``{name without compression suffix: path}`` of the files in ``folder`` (plain first)."""
    out: dict[str, str] = {}
    for name in sorted(os.listdir(folder), key=lambda n: (_strip_compression(n), len(n))):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            out.setdefault(_strip_compression(name), path)
    return out


def _unique_match(folder: str, files: dict[str, str], pattern: str, members: int,
                  what: str) -> dict[str, str]:
    """Groups files by the prefix captured by ``pattern``; returns the one group or {}."""
    groups: dict[str, dict[str, str]] = {}
    for stem, path in files.items():
        m = re.fullmatch(pattern, stem)
        if m:
            # prefixes and kinds ignore case: Bibtex_data.txt goes with bibtex_trSplit.txt
            groups.setdefault(m.group(1).lower(), {})[m.group(2).lower()] = path
    full = {p: g for p, g in groups.items() if len(g) == members}
    if len(full) > 1:
        raise DataError(folder, None, f"several {what} file sets: {', '.join(sorted(full))}; "
                        "keep one data set per folder")
    return next(iter(full.values()), {})


def _read_split_column(path: str, column: int, n_points: int) -> np.ndarray:
    """Column ``column`` of an XC ``_trSplit.txt`` / ``_tstSplit.txt`` file, as 0-based rows."""
    rows = []
    for lineno, line in read_lines(path):
        parts = line.split()
        if not parts:
            continue
        if column >= len(parts):
            raise DataError(path, lineno,
                            f"split_index {column} but the line has {len(parts)} columns")
        try:
            value = int(parts[column])
        except ValueError:
            raise DataError(path, lineno,
                            f"{parts[column]!r} is not an integer row number") from None
        if not 1 <= value <= n_points:
            raise DataError(path, lineno, f"row {value} outside 1..{n_points} (1-based)")
        rows.append(value - 1)
    if not rows:
        raise DataError(path, None, "empty split file")
    return np.asarray(rows, np.int64)


def _rows(data: xc.XCData, rows: np.ndarray) -> xc.XCData:
    X, Y = data.X[rows], data.Y[rows]
    X.sort_indices()
    Y.sort_indices()
    return xc.XCData(X, Y, data.n_features, data.n_labels)


def read_xc_source(folder: str | os.PathLike, *, split_index: int = 0) -> XcSource:
    """Reads an XC data set folder in any layout of :data:`XC_LAYOUTS`.

    Args:
      folder: the unpacked download.
      split_index: for the ``NAME_data.txt`` layout, the column of the split files
        (each column lists the 1-based rows of one of ten random splits).

    Returns:
      :class:`XcSource`, each split read by :func:`jxmc.data.xc.read_xc` or
      :func:`jxmc.data.xc.read_xc_split`, so its arrays are exactly what
      :func:`jxmc.data.dataset.load_dataset` reads before normalisation.

    Raises:
      DataError: no recognised layout (the message lists them), unreadable or
        malformed files, or train and test that disagree on ``d`` or ``L``.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(folder, None, f"source folder not found; download the set's \"BoW "
                        f"Features\" from {XC_URL} and unpack it there")
    tr_path, te_path = find_file(folder, "train.txt"), find_file(folder, "test.txt")
    split_files = [find_file(folder, s) for s in ("trn_X_Xf.txt", "trn_X_Y.txt", "tst_X_Xf.txt",
                                                  "tst_X_Y.txt")]
    files = _listing(folder)
    if tr_path and te_path:
        layout, tr, te, used = "xc", xc.read_xc(tr_path), xc.read_xc(te_path), (tr_path, te_path)
    elif all(split_files):
        layout = "xc-split"
        tr = xc.read_xc_split(split_files[0], split_files[1])
        te = xc.read_xc_split(split_files[2], split_files[3])
        used = tuple(split_files)
    elif group := _unique_match(folder, files, r"(.+)_(train|test)\.txt", 2,
                                "PREFIX_train/test"):
        layout, used = "xc-prefix", (group["train"], group["test"])
        tr, te = xc.read_xc(group["train"]), xc.read_xc(group["test"])
    elif group := _unique_match(folder, files, r"(?i)(.+?)_?(data|trsplit|tstsplit)\.txt", 3,
                                "NAME_data/trSplit/tstSplit"):
        layout = "xc-data+splits"
        used = (group["data"], group["trsplit"], group["tstsplit"])
        data = xc.read_xc(group["data"])
        n = data.X.shape[0]
        tr = _rows(data, _read_split_column(group["trsplit"], split_index, n))
        te = _rows(data, _read_split_column(group["tstsplit"], split_index, n))
    else:
        raise DataError(folder, None, f"no XC data set layout recognised; expected {XC_LAYOUTS}")
    if te.X.shape[1] != tr.X.shape[1]:
        raise DataError(used[-1], 1,
                        f"test has {te.X.shape[1]} features but train has {tr.X.shape[1]}")
    if te.Y.shape[1] != tr.Y.shape[1]:
        raise DataError(used[-1], 1,
                        f"test has {te.Y.shape[1]} labels but train has {tr.Y.shape[1]}")
    return XcSource(tr, te, layout, tuple(os.path.basename(p) for p in used))
