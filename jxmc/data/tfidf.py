"""TF-IDF features for raw text, with scikit-learn.

The featuriser of PEERS.md and of the AttentionXML/LightXML raw-text pipelines:
``TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)`` fitted on
the training texts, rows L2-normalised (scikit-learn's ``norm="l2"``).  It is
saved with the model as its vocabulary (``tfidf_vocab.txt.gz``, one term per
line in column order) and its IDF weights (``tfidf.npz``), so new text can be
featurised after loading without pickling scikit-learn objects.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from jxmc.errors import ModelError
from jxmc.fileio import atomic_write


@dataclass(frozen=True)
class TfidfConfig:
    ngram_max: int = 2  # word n-grams 1..ngram_max
    min_df: int = 2  # keep terms in at least this many training documents
    sublinear_tf: bool = True  # tf -> 1 + log(tf)
    max_features: int | None = None  # keep the most frequent terms only (None: all)


def _vectorizer(config: TfidfConfig, vocabulary=None) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, config.ngram_max), min_df=config.min_df,
                           sublinear_tf=config.sublinear_tf, max_features=config.max_features,
                           vocabulary=vocabulary, dtype=np.float32)


class Featurizer:
    """A fitted TF-IDF featuriser: ``transform(texts) -> csr f32[n, d]``."""

    def __init__(self, vectorizer: TfidfVectorizer, config: TfidfConfig):
        self.vectorizer = vectorizer
        self.config = config

    @property
    def n_features(self) -> int:
        return len(self.vectorizer.vocabulary_)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Featurises texts: ``csr_matrix`` f32[n, d] with L2-normalised rows."""
        return sp.csr_matrix(self.vectorizer.transform(texts), dtype=np.float32)

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``tfidf_vocab.txt.gz``, ``tfidf.npz`` and ``tfidf.json`` atomically."""
        terms = self.vectorizer.get_feature_names_out()
        with atomic_write(os.path.join(directory, "tfidf_vocab.txt.gz")) as f:
            f.write("\n".join(terms))
        with atomic_write(os.path.join(directory, "tfidf.npz"), "wb") as f:
            np.savez(f, idf=self.vectorizer.idf_.astype(np.float64))
        with atomic_write(os.path.join(directory, "tfidf.json")) as f:
            json.dump(asdict(self.config), f, indent=1)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Featurizer:
        """Reads what :meth:`save` wrote.

        Raises:
          ModelError: a file is missing or the vocabulary and IDF disagree.
        """
        try:
            with open(os.path.join(directory, "tfidf.json")) as f:
                config = TfidfConfig(**json.load(f))
            with gzip.open(os.path.join(directory, "tfidf_vocab.txt.gz"), "rt", encoding="utf-8") as f:
                terms = f.read().split("\n")
            idf = np.load(os.path.join(directory, "tfidf.npz"))["idf"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{directory}: cannot read the TF-IDF featuriser: {e}") from None
        if len(terms) != len(idf):
            raise ModelError(f"{directory}: TF-IDF vocabulary has {len(terms)} terms but "
                             f"{len(idf)} IDF weights")
        vec = _vectorizer(config, vocabulary={t: i for i, t in enumerate(terms)})
        vec._validate_vocabulary()
        vec.idf_ = idf
        return cls(vec, config)


def fit_tfidf(texts: list[str], config: TfidfConfig | None = None) -> tuple[Featurizer, sp.csr_matrix]:
    """Fits TF-IDF on training texts.

    Returns:
      The :class:`Featurizer` and the training features ``csr f32[n, d]``.
    """
    config = config or TfidfConfig()
    vec = _vectorizer(config)
    X = vec.fit_transform(texts)
    return Featurizer(vec, config), sp.csr_matrix(X, dtype=np.float32)
