"""Word vocabularies and word vectors for the word-level text models (AttentionXML,
:mod:`jxmc.models.attentionxml`).

* The vocabulary: the TF-IDF featuriser's unigrams (:mod:`jxmc.data.tfidf`,
  scikit-learn's default analyzer: lower-cased words of two or more characters),
  those in at least ``min_count`` training documents, the ``max_vocab`` most frequent;
  id ``PAD = 0`` pads, ``UNK = 1`` is an unknown word, the vocabulary's word ``j`` is
  id ``j + 2``.
* Word vectors: a local GloVe-format text file (Pennington, Socher & Manning, EMNLP
  2014; ``word v_1 ... v_e`` per line), nothing downloaded.
"""

from __future__ import annotations

import numpy as np

from jxmc.data.tfidf import TfidfConfig, fit_tfidf, words
from jxmc.errors import ConfigError, DataError
from jxmc.fileio import read_lines

PAD, UNK = 0, 1  # word ids; the vocabulary's word j is id j + 2


def word_vocabulary(texts: list[str], *, max_vocab: int, min_count: int) -> list[str]:
    """The training words (:func:`jxmc.data.tfidf.fit_tfidf`'s unigram vocabulary): those
    in at least ``min_count`` documents, the ``max_vocab`` most frequent; sorted.

    Raises:
      ConfigError: no word survives (``min_count`` too high, or texts without words).
    """
    try:
        feat, _ = fit_tfidf(list(texts), TfidfConfig(ngram_max=1, min_df=min_count,
                                                    max_features=max_vocab))
    except ValueError as e:  # scikit-learn: empty vocabulary / min_df above the documents
        raise ConfigError(f"attentionxml: no training word is kept (min_count={min_count}): "
                          f"{e}") from None
    return feat.terms


def encode_words(texts: list[str], vocab: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids: i32[n, max_len], mask: i32[n, max_len])``: each text's first ``max_len``
    words as ids (module docstring), ``0``-padded; an empty text is one unknown word."""
    index = {w: j + 2 for j, w in enumerate(vocab)}
    analyze = words
    ids = np.zeros((len(texts), max_len), np.int32)
    for i, text in enumerate(texts):
        row = [index.get(w, UNK) for w in analyze(text)[:max_len]] or [UNK]
        ids[i, :len(row)] = row
    return ids, (ids != PAD).astype(np.int32)


def pack_words(vocab: list[str]) -> np.ndarray:
    """``u8[...]`` the words newline-joined (UTF-8), to save with the params."""
    return np.frombuffer("\n".join(vocab).encode(), np.uint8).copy()


def unpack_words(arr) -> list[str]:
    """The words back from :func:`pack_words`."""
    raw = np.asarray(arr, np.uint8).tobytes().decode()
    return raw.split("\n") if raw else []


def read_word_vectors(path: str, vocab: list[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Word vectors of ``vocab`` from a GloVe-format text file.

    Each line is ``word v_1 ... v_dim`` (space-separated; a first line of two integers,
    word2vec's ``count dim`` header, is skipped; the file may be compressed, see
    :func:`jxmc.fileio.read_lines`).  Only the words of ``vocab`` are kept; a word
    listed twice keeps its first vector.

    Returns:
      ``(vectors: f32[len(vocab), dim], found: bool[len(vocab)])`` (rows of words not
      in the file are 0).

    Raises:
      DataError: a missing or unreadable file, a line whose width is not ``dim``
        (``"<path>:<line>: ..."``, suggesting ``emb_dim``), a value that is not a number.
    """
    index = {w: j for j, w in enumerate(vocab)}
    vectors = np.zeros((len(vocab), dim), np.float32)
    found = np.zeros(len(vocab), bool)
    for lineno, line in read_lines(path):
        parts = line.rstrip().split(" ")
        if not parts or parts == [""]:
            continue
        if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue
        if len(parts) != dim + 1:
            raise DataError(path, lineno, f"a vector of {len(parts) - 1} values, expected "
                                          f"{dim} (set emb_dim to the file's width)")
        j = index.get(parts[0])
        if j is None or found[j]:
            continue
        try:
            vectors[j] = np.asarray(parts[1:], np.float32)
        except ValueError:
            raise DataError(path, lineno, "a value that is not a number") from None
        found[j] = True
    return vectors, found
