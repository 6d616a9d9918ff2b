"""One call to load any supported dataset: ``load_dataset(spec)``.

``spec`` is one of:

* ``None`` or ``"synthetic"`` (``"synthetic:key=value,..."`` to change sizes):
  the built-in generator of :mod:`jxmc.data.synthetic`;
* a folder in the Extreme Classification Repository single-file layout
  (``train.txt``, ``test.txt``), or its split-file layout (``trn_X_Xf.txt``,
  ``trn_X_Y.txt``, ``tst_X_Xf.txt``, ``tst_X_Y.txt``), each plain or ``.gz``,
  ``.xz``, ``.bz2``;
* a folder in the raw-text layout of AttentionXML / LightXML / CascadeXML
  (``{train,test}_texts.txt`` and ``{train,test}_labels.txt``): TF-IDF is fitted
  on the training texts (:mod:`jxmc.data.tfidf`); the label vocabulary is the
  sorted training label names; test labels unseen in training are appended as
  extra columns of ``test.Y`` (they stay in the ground truth);
* ``"tfds:NAME[:VERSION][@DATA_DIR]"``: a dataset prepared by the TFDS builders
  (:func:`jxmc.data.tfds.load_tfds`; needs ``pip install 'jxmc[tfds]'``).

The layout is recognised from the file names; a folder matching none raises
:class:`jxmc.errors.DataError` that lists what was looked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from jxmc.data import synthetic, text, xc
from jxmc.data.tfidf import Featurizer, TfidfConfig, fit_tfidf
from jxmc.errors import DataError
from jxmc.fileio import find_file


@dataclass
class Split:
    """One split: ``X: csr f32[n, d]``, ``Y: csr f32[n, L]`` (``[n, L_all]`` for test)."""

    X: sp.csr_matrix
    Y: sp.csr_matrix
    texts: list[str] | None = None


@dataclass
class Dataset:
    """A train/test pair with its label space.

    Attributes:
      name: a short name (the folder's base name, or ``synthetic``).
      layout: ``"synthetic"``, ``"xc"``, ``"xc-split"`` or ``"text"``.
      train, test: the splits.  ``test.Y`` may have more columns than
        ``train.Y``: labels seen only in test (raw-text data).
      label_names: the ``L`` predictable labels' names (raw text), or None when
        labels are plain ids (XC data, synthetic).
      extra_label_names: names of the test-only columns ``L .. L_all - 1``.
      featurizer: the fitted TF-IDF featuriser (raw text), else None.
    """

    name: str
    layout: str
    train: Split
    test: Split
    label_names: list[str] | None = None
    extra_label_names: list[str] = field(default_factory=list)
    featurizer: Featurizer | None = None
    source: str | None = None

    @property
    def n_features(self) -> int:
        return self.train.X.shape[1]

    @property
    def n_labels(self) -> int:
        """``L``: labels a model can predict."""
        return self.train.Y.shape[1]

    @property
    def n_labels_all(self) -> int:
        """``L_all``: predictable labels plus test-only labels."""
        return self.test.Y.shape[1]

    def label_counts(self) -> np.ndarray:
        """Training count of each of the ``L_all`` labels (0 for test-only ones), i64."""
        counts = np.zeros(self.n_labels_all, np.int64)
        counts[: self.n_labels] = np.diff(sp.csc_matrix(self.train.Y).indptr)
        return counts


def _normalise_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ X, dtype=np.float32)


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


def _need(folder: str, stem: str) -> str:
    path = find_file(folder, stem)
    if path is None:
        raise DataError(os.path.join(folder, stem), None, "file not found (also tried .gz, .xz, .bz2)")
    return path


def load_dataset(spec: str | None = None, *, normalise: bool = True,
                 tfidf: TfidfConfig | None = None) -> Dataset:
    """Loads a dataset by ``spec`` (see the module docstring).

    Args:
      normalise: L2-normalise the feature rows of XC data (PEERS.md's setting).
      tfidf: the featuriser's settings for raw text.

    Raises:
      DataError: unreadable or malformed files, naming file and line.
    """
    if spec is None or spec == "synthetic" or spec.startswith("synthetic:"):
        config = synthetic.parse_spec(spec or "synthetic")
        Xtr, Ytr, Xte, Yte = synthetic.generate(config)
        return Dataset("synthetic", "synthetic", Split(Xtr, Ytr), Split(Xte, Yte),
                       source=spec or "synthetic")
    if spec.startswith("tfds:"):
        from jxmc.data.tfds import load_tfds  # needs the optional tensorflow-datasets

        return load_tfds(spec, normalise=normalise, tfidf=tfidf)
    folder = os.path.normpath(spec)
    name = os.path.basename(folder)
    layout = detect_layout(folder)
    if layout in ("xc", "xc-split"):
        if layout == "xc":
            tr = xc.read_xc(_need(folder, "train.txt"))
            te = xc.read_xc(_need(folder, "test.txt"))
        else:
            tr = xc.read_xc_split(_need(folder, "trn_X_Xf.txt"), _need(folder, "trn_X_Y.txt"))
            te = xc.read_xc_split(_need(folder, "tst_X_Xf.txt"), _need(folder, "tst_X_Y.txt"))
        test_path = find_file(folder, "test.txt") or find_file(folder, "tst_X_Xf.txt")
        if te.X.shape[1] != tr.X.shape[1]:
            raise DataError(test_path, 1, f"test has {te.X.shape[1]} features but train has {tr.X.shape[1]}")
        if te.Y.shape[1] != tr.Y.shape[1]:
            raise DataError(test_path, 1, f"test has {te.Y.shape[1]} labels but train has {tr.Y.shape[1]}")
        Xtr, Xte = (_normalise_rows(tr.X), _normalise_rows(te.X)) if normalise else (tr.X, te.X)
        Ytr = sp.csr_matrix((tr.Y != 0).astype(np.float32))
        Yte = sp.csr_matrix((te.Y != 0).astype(np.float32))
        return Dataset(name, layout, Split(Xtr, Ytr), Split(Xte, Yte), source=folder)
    tr_texts, tr_labels = text.read_text_split(_need(folder, "train_texts.txt"), _need(folder, "train_labels.txt"))
    te_texts, te_labels = text.read_text_split(_need(folder, "test_texts.txt"), _need(folder, "test_labels.txt"))
    vocab = text.label_vocabulary(tr_labels)
    Ytr, _ = text.encode_labels(tr_labels, vocab, extend_unseen=False)
    Yte, extra = text.encode_labels(te_labels, vocab, extend_unseen=True)
    featurizer, Xtr = fit_tfidf(tr_texts, tfidf or TfidfConfig())
    Xte = featurizer.transform(te_texts)
    return Dataset(name, "text", Split(Xtr, Ytr, tr_texts), Split(Xte, Yte, te_texts),
                   label_names=vocab, extra_label_names=extra, featurizer=featurizer, source=folder)
