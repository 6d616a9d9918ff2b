"""TF-IDF features for raw text: fitted with scikit-learn, applied by jxmc.

The featuriser of PEERS.md and of the AttentionXML/LightXML raw-text pipelines:
``TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)`` fitted on
the training texts, rows L2-normalised (scikit-learn's ``norm="l2"``).  It is
saved with the model as its vocabulary (``tfidf_vocab.txt.gz``, one term per
line in column order) and its IDF weights (``tfidf.npz``), so new text can be
featurised after loading without pickling scikit-learn objects.

Fitting uses scikit-learn (imported only then).  Applying a fitted featuriser
(:meth:`Featurizer.transform`) is written here with the same analyzer
(lower-cased, scikit-learn's default ``token_pattern`` ``(?u)\\b\\w\\w+\\b``, word
n-grams joined by one space), the same ``1 + log(tf)``, IDF and L2 steps, so that
``jxmc predict`` does not import scikit-learn (about 0.7 s of a 3 s process,
issue 17); ``tests/test_tfidf_modeldir.py`` checks it against scikit-learn's
``transform`` on real text.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from jxmc.errors import ModelError
from jxmc.fileio import atomic_write

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


@dataclass(frozen=True)
class TfidfConfig:
    ngram_max: int = 2  # word n-grams 1..ngram_max
    min_df: int = 2  # keep terms in at least this many training documents
    sublinear_tf: bool = True  # tf -> 1 + log(tf)
    max_features: int | None = None  # keep the most frequent terms only (None: all)


def vectorizer(config: TfidfConfig, vocabulary=None):
    """scikit-learn's ``TfidfVectorizer`` with these settings (imported here, on demand)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, config.ngram_max), min_df=config.min_df,
                           sublinear_tf=config.sublinear_tf, max_features=config.max_features,
                           vocabulary=vocabulary, dtype=np.float32)


def words(text: str) -> list[str]:
    """A text's unigrams as the featuriser sees them: lower-cased ``\\b\\w\\w+\\b`` matches."""
    return TOKEN.findall(text.lower())


class Featurizer:
    """A fitted TF-IDF featuriser: ``transform(texts) -> csr f32[n, d]``.

    Attributes:
      terms: the vocabulary in column order (``d`` strings).
      idf: f64[d], the IDF weight of each column.
      config: the :class:`TfidfConfig` it was fitted with.
    """

    def __init__(self, terms: list[str], idf: np.ndarray, config: TfidfConfig):
        self.terms = list(terms)
        self.idf = np.asarray(idf, np.float64)
        self.config = config
        self.vocabulary = {t: i for i, t in enumerate(self.terms)}

    @property
    def n_features(self) -> int:
        return len(self.terms)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Featurises texts: ``csr_matrix`` f32[n, d] with L2-normalised rows (a text with no
        known term is an empty row), indices sorted within each row."""
        vocab, n_max = self.vocabulary, self.config.ngram_max
        indptr, indices, counts = [0], [], []
        for text in texts:
            toks = words(text)
            row: dict[int, int] = {}
            for n in range(1, n_max + 1):
                grams = toks if n == 1 else [" ".join(toks[i:i + n])
                                             for i in range(len(toks) - n + 1)]
                for g in grams:
                    j = vocab.get(g)
                    if j is not None:
                        row[j] = row.get(j, 0) + 1
            cols = sorted(row)
            indices += cols
            counts += [row[j] for j in cols]
            indptr.append(len(indices))
        ind = np.asarray(indices, np.int32)
        tf = np.asarray(counts, np.float64)
        if self.config.sublinear_tf:
            tf = 1.0 + np.log(tf)
        val = tf * self.idf[ind]
        ptr = np.asarray(indptr, np.int64)
        rows = np.repeat(np.arange(len(texts)), np.diff(ptr))
        norm = np.sqrt(np.bincount(rows, weights=val * val, minlength=len(texts)))
        val /= norm[rows]  # an empty row has no entry to divide
        return sp.csr_matrix((val.astype(np.float32), ind, ptr),
                             shape=(len(texts), self.n_features))

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``tfidf_vocab.txt.gz``, ``tfidf.npz`` and ``tfidf.json`` atomically."""
        with atomic_write(os.path.join(directory, "tfidf_vocab.txt.gz")) as f:
            f.write("\n".join(self.terms))
        with atomic_write(os.path.join(directory, "tfidf.npz"), "wb") as f:
            np.savez(f, idf=self.idf)
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
        return cls(terms, idf, config)


def fit_tfidf(texts: list[str], config: TfidfConfig | None = None) -> tuple[Featurizer, sp.csr_matrix]:
    """Fits TF-IDF on training texts with scikit-learn.

    Returns:
      The :class:`Featurizer` and the training features ``csr f32[n, d]``.

    Raises:
      ValueError: scikit-learn's, where no term is kept (empty texts, ``min_df`` too high).
    """
    config = config or TfidfConfig()
    vec = vectorizer(config)
    X = vec.fit_transform(texts)
    terms = vec.get_feature_names_out().tolist()
    return Featurizer(terms, vec.idf_, config), sp.csr_matrix(X, dtype=np.float32)
