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
  extra columns of ``test.Y`` (they stay in the ground truth); an optional
  ``label_texts.txt`` (``name<TAB>text``) becomes ``Dataset.label_texts``;
* ``"tfds:NAME[:VERSION][@DATA_DIR]"``: a dataset prepared by the TFDS builders
  (:func:`jxmc.data.tfds.load_tfds`; needs ``pip install 'jxmc[tfds]'``).

The layout is recognised from the file names (:func:`jxmc.data.sources.detect_layout`);
a folder matching none raises :class:`jxmc.errors.DataError` that lists what was
looked for.  The result is a :class:`jxmc.data.types.Dataset`.
"""

from __future__ import annotations

from jxmc.data import sources
from jxmc.data.tfidf import TfidfConfig
from jxmc.data.types import Dataset

__all__ = ["load_dataset"]


def load_dataset(spec: str | None = None, *, normalise: bool = True,
                 tfidf: TfidfConfig | None = None) -> Dataset:
    """Loads a dataset by ``spec`` (see the module docstring).

    Args:
      normalise: L2-normalise the feature rows of XC data (PEERS.md's setting).
      tfidf: the featuriser's settings for raw text.

    Raises:
      DataError: unreadable or malformed files, naming file and line.
      ConfigError: a malformed ``synthetic:`` or ``tfds:`` spec, or
        tensorflow-datasets missing for a ``tfds:`` one.
    """
    if spec is None or spec == "synthetic" or spec.startswith("synthetic:"):
        return sources.read_synthetic(spec)
    if spec.startswith("tfds:"):
        from jxmc.data.tfds import load_tfds  # needs the optional tensorflow-datasets

        return load_tfds(spec, normalise=normalise, tfidf=tfidf)
    return sources.read_folder(spec, normalise=normalise, tfidf=tfidf)
