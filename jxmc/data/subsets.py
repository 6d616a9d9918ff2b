"""Seeded subsets of a raw-text dataset, ready for the transformer methods, and the P@1
of a top-1 prediction: what the learning test (``tests/test_transformer_learning.py``)
and the sparse-head comparison (``experiments/sparse_heads.py``) share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from jxmc.data.text import encode_labels, label_vocabulary, read_text_split
from jxmc.data.tfidf import fit_tfidf


def text_subset(folder, n_train: int, n_test: int, seed: int = 0) -> dict:
    """``n_train`` training and ``n_test`` test points of the raw-text dataset in
    ``folder`` (``{train,test}_{texts,labels}.txt.xz``), drawn without replacement by
    ``numpy.random.default_rng(seed)`` and kept in file order.

    Returns:
      ``{"tr_t": list[str], "Ytr": csr f32[n_train, L], "Xtr": csr f32[n_train, d],
      "te_t", "Yte": csr f32[n_test, L + unseen], "Xte", "baseline": float}``:
      the label vocabulary is the subset's training labels (test labels not in it become
      extra columns, never predicted), the TF-IDF is fitted on the training texts, and
      ``baseline`` is the popularity P@1 (the most frequent training label for every test
      point), a fraction.

    Raises:
      jxmc.errors.DataError: a missing or malformed file (:func:`read_text_split`);
      ValueError: more points asked for than a split has.
    """
    d = Path(folder)
    tr_t, tr_l = read_text_split(d / "train_texts.txt.xz", d / "train_labels.txt.xz")
    te_t, te_l = read_text_split(d / "test_texts.txt.xz", d / "test_labels.txt.xz")
    rng = np.random.default_rng(seed)
    tr = np.sort(rng.choice(len(tr_t), n_train, replace=False))
    te = np.sort(rng.choice(len(te_t), n_test, replace=False))
    tr_t, tr_l = [tr_t[i] for i in tr], [tr_l[i] for i in tr]
    te_t, te_l = [te_t[i] for i in te], [te_l[i] for i in te]
    vocab = label_vocabulary(tr_l)
    Ytr, _ = encode_labels(tr_l, vocab, extend_unseen=False)
    Yte, _ = encode_labels(te_l, vocab, extend_unseen=True)
    feat, Xtr = fit_tfidf(tr_t)
    top = int(np.asarray(Ytr.sum(0)).ravel().argmax())
    return dict(tr_t=tr_t, Ytr=sp.csr_matrix(Ytr), Xtr=Xtr, te_t=te_t, Yte=sp.csr_matrix(Yte),
                Xte=feat.transform(te_t), baseline=float(Yte[:, top].toarray().mean()))


def p_at_1(ids: np.ndarray, Y: sp.csr_matrix) -> float:
    """P@1 (a fraction) of top-1 label ids ``i32[n]`` (``-1``: none, a miss) against
    ``Y: csr[n, L]``."""
    ids = np.asarray(ids)
    ok = ids >= 0
    hit = np.zeros(len(ids), bool)
    hit[ok] = np.asarray(Y[np.flatnonzero(ok), ids[ok]]).ravel() > 0
    return float(hit.mean())
