"""Label texts for XR-Linear (``--set label_text=true``): unseen labels made predictable.

Sources:

* clustering -- PECOS (Yu et al., JMLR 2022, Section 4.1 and
  ``pecos.xmc.base.LabelEmbeddingFactory.pifa_lf_concat``): the label embedding is
  PIFA concatenated with the label's own features, each part L2-normalised,
  ``z_l = [ normalise(PIFA_l) , normalise(t_l) ]``, :func:`pifa_lf_concat`;
* scoring -- the label-text backing of ECLARE (Mittal et al., WWW 2021, Section 3:
  a label's classifier is combined with a representation of the label's text, so
  that labels with few or no training points are still scored).  Here the text
  representation is the label text's TF-IDF vector ``t_l`` in the documents' own
  feature space (the featuriser fitted on the training documents), L2-normalised,
  and the combination is a fixed convex one (:func:`rescore`)::

      score(x, l) = (1 - lam) * s_tree(x, l) + lam * cos(x, t_l)

  ``s_tree(x, l)`` is XR-Linear's beam score (the product of l3-hinge node
  probabilities; 0 for a label outside the beam's top-k), ``cos(x, t_l) = x . t_l``
  (both unit rows), ``lam`` is ``Config.label_text_weight``.  The candidates are the
  beam's top-k plus the ``k`` labels of largest cosine over *all* labels, so a label
  with no training point (its classifier never fires) is ranked by its text alone.

The label space (:func:`label_space`) is the training vocabulary followed by every
label that has a non-empty text but no training point, sorted by name: ``L_ext >= L``
columns; those labels enter the tree (clustered by their text; PIFA is zero) with
no positives.  Labels with neither a training point nor a text stay unpredictable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from jxmc.embed import pifa
from jxmc.errors import ConfigError
from jxmc.ops.sparse import normalise_rows
from jxmc.types import TopK

__all__ = ["check_fit", "label_features", "label_space", "lam_mix", "pad_labels", "pifa_lf_concat", "rescore",
           "stored", "test_labels", "text_scores"]


def label_space(label_names: Sequence[str], label_texts: Mapping[str, str]) -> list[str]:
    """The ``L_ext`` names of the extended label space: ``label_names`` (the training
    vocabulary, in its order) followed by the sorted names with a non-empty text that
    are not in it."""
    known = set(label_names)
    return list(label_names) + sorted(n for n, t in label_texts.items() if t and n not in known)


def label_features(featurizer, names: Sequence[str], label_texts: Mapping[str, str]) -> sp.csr_matrix:
    """``T: csr f32[L_ext, d]``: each label's text featurised by the documents'
    TF-IDF ``featurizer`` (:class:`jxmc.data.tfidf.Featurizer`), unit rows; a label
    without text (or whose terms are all outside the vocabulary) has a zero row."""
    T = featurizer.transform([label_texts.get(n, "") for n in names])
    T = normalise_rows(T)
    T.sort_indices()
    return T


def test_labels(ds, names: Sequence[str]) -> sp.csr_matrix:
    """``ds.test.Y`` re-indexed to the extended space ``names``: ``csr f32[n, L_ext + u]``.

    Column ``j < L_ext`` is ``names[j]``; the ``u`` test labels with neither a training
    point nor a text follow (sorted), so every test label stays in the ground truth
    (metrics over the full test label sets).
    """
    old = list(ds.label_names) + list(ds.extra_label_names)
    index = {n: j for j, n in enumerate(names)}
    rest = sorted(n for n in ds.extra_label_names if n not in index)
    for j, n in enumerate(rest):
        index[n] = len(names) + j
    col = np.asarray([index[n] for n in old], np.int64)
    Y = sp.csr_matrix(ds.test.Y, dtype=np.float32)
    out = sp.csr_matrix((Y.data, col[Y.indices], Y.indptr), shape=(Y.shape[0], len(index)))
    out.sort_indices()
    return out


def pad_labels(Y: sp.csr_matrix, n_labels: int) -> sp.csr_matrix:
    """``Y: csr f32[n, L]`` with zero columns appended up to ``n_labels >= L``."""
    Y = sp.csr_matrix(Y, dtype=np.float32)
    return sp.csr_matrix((Y.data, Y.indices, Y.indptr), shape=(Y.shape[0], n_labels))


def pifa_lf_concat(Y: sp.csr_matrix, X: sp.csr_matrix, T: sp.csr_matrix) -> sp.csr_matrix:
    """PECOS's ``pifa_lf_concat`` label embedding: ``csr f32[L_ext, d_x + d_t]``,
    ``[normalise(PIFA(Y, X)), normalise(T)]`` (each part's rows unit or zero, so a
    row's norm is sqrt(2), 1 or 0).

    Args:
      Y: ``csr f32[n, L]`` training positives, ``L <= L_ext`` (labels ``L ..`` have none).
      X: ``csr f32[n, d_x]`` training features; T: ``csr f32[L_ext, d_t]`` label features.

    Raises:
      ValueError: ``Y`` has more columns than ``T`` rows, or the row counts of Y, X differ.
    """
    if Y.shape[1] > T.shape[0]:
        raise ValueError(f"Y has {Y.shape[1]} labels but T only {T.shape[0]} rows")
    P = pifa(pad_labels(Y, T.shape[0]), X)
    out = sp.csr_matrix(sp.hstack([P, normalise_rows(T)], format="csr"), dtype=np.float32)
    out.sort_indices()
    return out


def stored(T: sp.csr_matrix) -> dict:
    """``T`` as the params' ``label_text`` entry (numpy arrays, saved with the model)."""
    T = sp.csr_matrix(T, dtype=np.float32)
    return {"indptr": T.indptr.astype(np.int64), "indices": T.indices.astype(np.int32),
            "data": T.data, "shape": np.asarray(T.shape, np.int64)}


def _matrix(entry: dict) -> sp.csr_matrix:
    return sp.csr_matrix((entry["data"], entry["indices"], entry["indptr"]),
                         shape=tuple(int(s) for s in entry["shape"]))


def check_fit(Y: sp.csr_matrix, X: sp.csr_matrix, T) -> sp.csr_matrix:
    """``T`` as ``csr f32[L_ext, d]`` after checking it against ``Y``, ``X``.

    Raises:
      ConfigError: ``T`` missing (the CLI does not pass label features yet), fewer rows
        than ``Y``'s labels, or another feature count than ``X``.
    """
    if T is None:
        raise ConfigError("label_text=true needs the labels' text features (fit(..., "
                          "label_features=T), T from jxmc.models.tree_linear.label_text."
                          "label_features); this caller does not pass them")
    T = sp.csr_matrix(T, dtype=np.float32)
    if T.shape[0] < Y.shape[1] or T.shape[1] != X.shape[1]:
        raise ConfigError(f"label_features has shape {T.shape}; expected [L_ext >= "
                          f"{Y.shape[1]}, {X.shape[1]}]")
    return T


def text_scores(T: sp.csr_matrix, X: sp.csr_matrix, k: int, *, batch: int = 512):
    """Cosine of each document with every label text, in batches of ``batch`` rows.

    Yields ``(rows, C, top_ids)``: ``C: f32[b, L_ext]`` dense cosines of the batch's
    rows ``rows`` (``X`` rows and ``T`` rows unit, so ``C = X T^T``) and
    ``top_ids: i64[b, k]`` the ``k`` labels of largest cosine (any order).
    """
    Tt = sp.csc_matrix(T.T)
    for start in range(0, X.shape[0], batch):
        rows = np.arange(start, min(start + batch, X.shape[0]))
        C = (X[rows] @ Tt).toarray().astype(np.float32)
        kk = min(k, C.shape[1])
        top = np.argpartition(-C, kk - 1, axis=1)[:, :kk]
        yield rows, C, top


def rescore(params, X: sp.csr_matrix, top: TopK, weight: float, k: int) -> TopK:
    """The text-backed scores of the module docstring for the rows of ``X``.

    Args:
      params: the model, with ``params["label_text"]`` (:func:`stored`).
      X: ``csr f32[n, d]`` unit rows (no bias column); top: the beam's ``TopK``
        (ids ``-1`` padded) over the same rows.
      weight: ``lam`` in [0, 1]; k: labels kept per row.

    Returns:
      numpy :class:`TopK` ``i32[n, k]`` / ``f32[n, k]``, sorted by decreasing score.
    """
    T = _matrix(params["label_text"])
    X = sp.csr_matrix(X, dtype=np.float32)
    tree_ids = np.asarray(top.ids)
    tree_s = np.where(tree_ids >= 0, np.asarray(top.scores, np.float32), 0.0)
    n = X.shape[0]
    ids = np.full((n, k), -1, np.int32)
    scores = np.full((n, k), -np.inf, np.float32)
    for rows, C, text_top in text_scores(T, X, k):
        t_ids = tree_ids[rows]
        t_safe = np.maximum(t_ids, 0)
        cand = np.concatenate([t_safe, text_top], axis=1)
        s = lam_mix(np.concatenate([tree_s[rows], np.zeros(text_top.shape, np.float32)], 1),
                    np.take_along_axis(C, cand, axis=1), weight)
        valid = np.concatenate([t_ids >= 0, np.ones(text_top.shape, bool)], axis=1)
        # a label in both lists keeps its tree entry (the larger score): drop the text copy
        dup = np.zeros_like(valid)
        dup[:, t_ids.shape[1]:] = (text_top[:, :, None] == t_ids[:, None, :]).any(-1)
        s = np.where(valid & ~dup, s, -np.inf)
        kk = min(k, cand.shape[1])
        order = np.argsort(-s, axis=1, kind="stable")[:, :kk]
        best = np.take_along_axis(s, order, axis=1)
        ids[rows, :kk] = np.where(np.isfinite(best), np.take_along_axis(cand, order, 1), -1)
        scores[rows, :kk] = best
    return TopK(ids, scores)


def lam_mix(tree_scores: np.ndarray, cosines: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * tree_scores + weight * cosines`` (elementwise, f32)."""
    return ((1.0 - weight) * tree_scores + weight * cosines).astype(np.float32)
