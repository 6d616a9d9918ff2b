"""What a loader returns: :class:`Split` (one split's matrices) and :class:`Dataset`.

Every reader builds these (:mod:`jxmc.data.sources` for folders and synthetic
data, :mod:`jxmc.data.tfds` for prepared TFDS datasets), and
:func:`jxmc.data.dataset.load_dataset` returns them; this module imports no
reader, so the readers and the dispatch above them form no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from jxmc.data.tfidf import Featurizer

__all__ = ["Dataset", "Split"]


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
      label_texts: ``{name: text}`` from the folder's optional ``label_texts.txt``
        (raw text, :func:`jxmc.data.text.read_label_texts`), else None.
    """

    name: str
    layout: str
    train: Split
    test: Split
    label_names: list[str] | None = None
    extra_label_names: list[str] = field(default_factory=list)
    featurizer: Featurizer | None = None
    source: str | None = None
    label_texts: dict[str, str] | None = None

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
