"""Label texts for XR-Linear (``--set label_text=true``): unseen labels made predictable.

Sources:

* clustering -- PECOS (Yu et al., JMLR 2022, Section 4.1 and
  ``pecos.xmc.base.LabelEmbeddingFactory.pifa_lf_concat``): the label embedding is
  PIFA concatenated with the label's own features, each part L2-normalised,
  ``z_l = [ normalise(PIFA_l) , normalise(t_l) ]``, :func:`pifa_lf_concat`
  (``label_text_tree="pifa_or_text"``: PIFA for a label with training points, its
  text for one without, :func:`pifa_or_text`);
* scoring -- the label-text backing of ECLARE (Mittal et al., WWW 2021, Section 3:
  a label's classifier is combined with a representation of the label's text, so
  that labels with few or no training points are still scored).  Here the text
  representation is the label text's TF-IDF vector ``t_l`` in the documents' own
  feature space (the featuriser fitted on the training documents), L2-normalised,
  and the combination is a convex one per label (:func:`rescore`)::

      score(x, l) = (1 - lam_l) * s_tree(x, l) + lam_l * cos(x, t_l)
      lam_l       = lam / (1 + decay * n_l)                     (label_weights)

  ``s_tree(x, l)`` is the tree's beam score (XR-Linear's product of l3-hinge node
  probabilities, or the tree average of Parabel / Bonsai; 0 for a label outside the
  beam's top-k), ``cos(x, t_l) = x . t_l`` (both unit rows), ``n_l`` the label's
  training positives, ``lam`` ``Config.label_text_weight`` and ``decay``
  ``Config.label_text_decay``.  ``decay = 0`` mixes every label alike; a larger
  ``decay`` leaves the head labels their tree scores (``lam_l -> 0`` as ``n_l``
  grows: the top of the ranking, P@1, stays the tree's) and gives the tail and the
  labels never seen in training (``n_l = 0``: ``lam_l = lam``) their text.  The
  candidates are the beam's top-k plus the ``k`` labels of largest text term
  ``lam_l * cos(x, t_l)`` over *all* labels, so a label with no training point (its
  classifier never fires) is ranked by its text alone.

The label space (:func:`label_space`) is the training vocabulary followed by every
label that has a non-empty text but no training point, sorted by name: ``L_ext >= L``
columns; those labels enter the tree (clustered by their text; PIFA is zero) with
no positives.  Labels with neither a training point nor a text stay unpredictable.
:func:`for_dataset` gives a dataset's extended space and label features (what
``jxmc train --set label_text=true`` reads), :func:`fit` trains a tree method with
them, and :func:`unseen_recall` is the recall@k on the labels unseen in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from jxmc.embed import pifa
from jxmc.errors import ConfigError
from jxmc.ops.sparse import normalise_rows
from jxmc.types import TopK

__all__ = ["EMBEDDINGS", "LabelSpace", "check_fit", "fit", "for_dataset", "label_embedding",
           "label_features", "label_space", "label_weights", "lam_mix", "pad_labels",
           "pifa_lf_concat", "pifa_or_text", "rescore", "rescore_grid", "stored", "test_labels",
           "text_scores", "unseen_recall"]


class LabelSpace(NamedTuple):
    """A dataset's extended label space (:func:`for_dataset`).

    ``names``: the ``L_ext`` label names (:func:`label_space`); ``features``:
    ``T: csr f32[L_ext, d]`` their text features (:func:`label_features`);
    ``n_train_labels``: ``L``, the training vocabulary's size (``names[:L]``).
    """

    names: list[str]
    features: sp.csr_matrix
    n_train_labels: int


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


def for_dataset(ds) -> LabelSpace:
    """The extended label space of a raw-text :class:`jxmc.data.types.Dataset` whose
    folder has a ``label_texts.txt`` (``Dataset.label_texts``).

    Raises:
      ConfigError: the dataset has no label texts (no ``label_texts.txt`` or
        ``label_texts.txt.xz`` in its folder, or not raw-text data); the message names
        the data source.
    """
    if not ds.label_texts or ds.featurizer is None or ds.label_names is None:
        why = ("is not raw-text data" if ds.featurizer is None or ds.label_names is None
               else "has no label_texts.txt (or label_texts.txt.xz, 'name<TAB>text' per line)")
        raise ConfigError(f"label_text=true needs the labels' texts, but {ds.source} {why}")
    names = label_space(ds.label_names, ds.label_texts)
    return LabelSpace(names, label_features(ds.featurizer, names, ds.label_texts),
                      len(ds.label_names))


def fit(method, X, Y, config, space: LabelSpace, *, seed: int = 0, ckpt=None,
        progress: bool = True, mesh=None):
    """Trains tree method ``method`` (a :class:`jxmc.models.base.Method` whose config
    has ``label_text``: xr-linear, parabel, bonsai) with the label features of
    ``space``: its module's ``fit(..., label_features=space.features)``.

    Args:
      X: ``csr f32[n, d]``; Y: ``csr f32[n, L]`` (the columns ``space.names[:L]``).

    Raises:
      ConfigError: a method without the option, or ``label_text`` off.
    """
    import importlib

    from jxmc.models import METHODS

    if not getattr(config, "label_text", False):
        raise ConfigError(f"--method {method.name}: label_text is off; train with method.fit")
    module = importlib.import_module(METHODS[method.name])
    return module.fit(X, Y, config, seed=seed, ckpt=ckpt, progress=progress, mesh=mesh,
                      label_features=space.features)


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


def pifa_or_text(Y: sp.csr_matrix, X: sp.csr_matrix, T: sp.csr_matrix) -> sp.csr_matrix:
    """``csr f32[L_ext, d]``: a label's PIFA where it has training positives, else its
    normalised text features (a label with neither: zero).  ``T`` lives in ``X``'s
    feature space (the documents' TF-IDF), so both kinds of row are comparable and a
    label with positives is clustered as without label texts.

    Raises:
      ValueError: ``Y`` has more columns than ``T`` rows, or ``T`` another width than ``X``.
    """
    if Y.shape[1] > T.shape[0] or T.shape[1] != X.shape[1]:
        raise ValueError(f"T has shape {T.shape}; expected [>= {Y.shape[1]}, {X.shape[1]}]")
    P = pifa(pad_labels(Y, T.shape[0]), X)
    has_pos = np.diff(P.indptr) > 0
    keep = sp.diags(has_pos.astype(np.float32))
    out = sp.csr_matrix(keep @ P + sp.diags((~has_pos).astype(np.float32)) @ normalise_rows(T),
                        dtype=np.float32)
    out.sort_indices()
    return out


#: ``Config.label_text_tree``: the label embedding the tree is clustered on.
EMBEDDINGS = {"pifa_lf_concat": pifa_lf_concat, "pifa_or_text": pifa_or_text}


def label_embedding(name: str, Y: sp.csr_matrix, X: sp.csr_matrix, T: sp.csr_matrix):
    """The label embedding ``name`` of :data:`EMBEDDINGS` (``csr f32[L_ext, *]``).

    Raises:
      ConfigError: an unknown ``name``.
    """
    if name not in EMBEDDINGS:
        raise ConfigError(f"label_text_tree must be one of {', '.join(EMBEDDINGS)}, got {name!r}")
    return EMBEDDINGS[name](Y, X, T)


def stored(T: sp.csr_matrix, counts=None) -> dict:
    """``T`` (and ``counts: i64[L_ext]``, each label's training positives; zeros when
    not given) as the params' ``label_text`` entry (numpy arrays, saved with the model)."""
    T = sp.csr_matrix(T, dtype=np.float32)
    counts = np.zeros(T.shape[0], np.int64) if counts is None else np.asarray(counts, np.int64)
    if counts.shape != (T.shape[0],):
        raise ValueError(f"counts has shape {counts.shape}, expected ({T.shape[0]},)")
    return {"indptr": T.indptr.astype(np.int64), "indices": T.indices.astype(np.int32),
            "data": T.data, "shape": np.asarray(T.shape, np.int64), "counts": counts}


def _matrix(entry: dict) -> sp.csr_matrix:
    return sp.csr_matrix((entry["data"], entry["indices"], entry["indptr"]),
                         shape=tuple(int(s) for s in entry["shape"]))


def check_fit(Y: sp.csr_matrix, X: sp.csr_matrix, T) -> sp.csr_matrix:
    """``T`` as ``csr f32[L_ext, d]`` after checking it against ``Y``, ``X``.

    Raises:
      ConfigError: ``T`` missing (a caller that does not pass label features: train
        through :func:`fit`, or ``jxmc train`` on a folder with ``label_texts.txt``),
        fewer rows than ``Y``'s labels, or another feature count than ``X``.
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


def label_weights(counts, weight: float, decay: float = 0.0) -> np.ndarray:
    """``lam: f32[L_ext]``, the text's share of each label's score:
    ``lam_l = weight / (1 + decay * counts_l)``.

    ``decay = 0``: ``weight`` for every label; ``decay > 0``: ``weight`` for a label
    with no training point, decreasing as ``1 / counts_l`` for the head (a label with
    ``counts_l = 1 / decay`` positives gets half).

    Raises:
      ConfigError: ``weight`` outside [0, 1] or ``decay < 0``.
    """
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"label_text_weight must be in [0, 1], got {weight}")
    if not decay >= 0.0:
        raise ConfigError(f"label_text_decay must be >= 0, got {decay}")
    counts = np.asarray(counts, np.float64)
    return (weight / (1.0 + decay * counts)).astype(np.float32)


def text_scores(T: sp.csr_matrix, X: sp.csr_matrix, k: int, *, batch: int = 512, lams=None):
    """Cosine of each document with every label text, in batches of ``batch`` rows.

    Yields ``(rows, C, tops)``: ``C: f32[b, L_ext]`` dense cosines of the batch's
    rows ``rows`` (``X`` rows and ``T`` rows unit, so ``C = X T^T``) and, for each
    ``lam: f32[L_ext]`` of ``lams`` (default one of ones), ``i64[b, k]``: the ``k``
    labels of largest ``lam * C`` (any order).
    """
    Tt = sp.csc_matrix(T.T)
    lams = [None] if lams is None else list(lams)
    for start in range(0, X.shape[0], batch):
        rows = np.arange(start, min(start + batch, X.shape[0]))
        C = (X[rows] @ Tt).toarray().astype(np.float32)
        kk = min(k, C.shape[1])
        tops = [np.argpartition(-(C if lam is None else C * lam[None, :]), kk - 1, axis=1)[:, :kk]
                for lam in lams]
        yield rows, C, tops


def rescore_grid(params, X: sp.csr_matrix, top: TopK, settings, k: int) -> list[TopK]:
    """:func:`rescore` for each ``(weight, decay)`` of ``settings``, the cosines
    computed once (what the held-out choice of the two needs)."""
    entry = params["label_text"]
    T = _matrix(entry)
    counts = np.asarray(entry.get("counts", np.zeros(T.shape[0], np.int64)))
    lams = [label_weights(counts, w, d) for w, d in settings]
    X = sp.csr_matrix(X, dtype=np.float32)
    tree_ids = np.asarray(top.ids)
    tree_s = np.where(tree_ids >= 0, np.asarray(top.scores, np.float32), 0.0)
    n = X.shape[0]
    out = [(np.full((n, k), -1, np.int32), np.full((n, k), -np.inf, np.float32)) for _ in lams]
    for rows, C, text_tops in text_scores(T, X, k, lams=lams):
        t_ids = tree_ids[rows]
        t_safe = np.maximum(t_ids, 0)
        for lam, text_top, (ids, scores) in zip(lams, text_tops, out, strict=True):
            cand = np.concatenate([t_safe, text_top], axis=1)
            s = lam_mix(np.concatenate([tree_s[rows], np.zeros(text_top.shape, np.float32)], 1),
                        np.take_along_axis(C, cand, axis=1), lam[cand])
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
    return [TopK(ids, scores) for ids, scores in out]


def rescore(params, X: sp.csr_matrix, top: TopK, weight: float, k: int,
            decay: float = 0.0) -> TopK:
    """The text-backed scores of the module docstring for the rows of ``X``.

    Args:
      params: the model, with ``params["label_text"]`` (:func:`stored`).
      X: ``csr f32[n, d]`` unit rows (no bias column); top: the tree's ``TopK``
        (ids ``-1`` padded) over the same rows.
      weight: ``lam`` in [0, 1]; k: labels kept per row; decay: ``decay >= 0`` of
        :func:`label_weights` (0: every label mixed alike).

    Returns:
      numpy :class:`TopK` ``i32[n, k]`` / ``f32[n, k]``, sorted by decreasing score.
    """
    return rescore_grid(params, X, top, [(weight, decay)], k)[0]


def lam_mix(tree_scores: np.ndarray, cosines: np.ndarray, weight) -> np.ndarray:
    """``(1 - weight) * tree_scores + weight * cosines`` (elementwise, f32; ``weight``
    a scalar or an array broadcasting with the scores)."""
    weight = np.asarray(weight, np.float32)
    return ((1.0 - weight) * tree_scores + weight * cosines).astype(np.float32)


def unseen_recall(ids: np.ndarray, Y: sp.csr_matrix, counts, k: int = 10) -> dict:
    """Recall@``k`` on the labels unseen in training (``counts_l == 0``).

    Args:
      ids: ``i32[n, >= k]`` predictions, best first (-1 padded); Y: ``csr [n, L_all]``
        truth; counts: ``i64[<= L_all]`` training positives per label (columns past its
        end count 0).

    Returns:
      ``{"points": test points with an unseen positive, "positives": such positives,
      "labels": distinct unseen labels among them, "R@k": found in the top k /
      positives (micro-averaged; 0.0 when there are none)}``.
    """
    Y = sp.csr_matrix(Y)
    seen = np.zeros(Y.shape[1], bool)
    c = np.asarray(counts)
    seen[: len(c)] = c[: Y.shape[1]] > 0
    U = sp.csr_matrix(Y[:, np.flatnonzero(~seen)])
    unseen_ids = np.flatnonzero(~seen)
    rows = np.flatnonzero(np.diff(U.indptr) > 0)
    hits = 0
    top = np.asarray(ids)[:, :k]
    for i in rows:
        pos = unseen_ids[U.indices[U.indptr[i]:U.indptr[i + 1]]]
        hits += int(np.isin(pos, top[i]).sum())
    return {"points": int(len(rows)), "positives": int(U.nnz),
            "labels": int((np.diff(sp.csc_matrix(U).indptr) > 0).sum()),
            f"R@{k}": hits / U.nnz if U.nnz else 0.0}
