"""Ranking metrics for XMC, exactly as the Extreme Classification Repository defines them.

Precision (P@k), nDCG@k, propensity-scored precision (PSP@k), propensity-scored nDCG
(PSnDCG@k) and recall (R@k), all computed as *streaming sums*: :func:`metric_sums`
turns one fixed-shape batch into dataset-level sums of numerators (and, for the
propensity-scored metrics, of the best achievable values), :func:`add_sums` adds
batches, and :func:`finalize` divides once at the end. Averages of per-batch averages
are never taken, so the result does not depend on the batch size.

Inputs of one batch (symbols as in :mod:`jxmc.types`):

- ``pred: i32[n, k']`` predicted label ids, best first; ``-1`` is "no prediction" and
  is never a hit. Ids are assumed distinct within a row (a repeated id is counted at
  every position where it occurs, as napkinxc does).
- ``truth: i32[n, m]`` positive label ids padded with ``-1``. Ids may be ``>= L``
  (labels seen only at test time): they can never be predicted, but they count in
  nDCG's ideal DCG, in the best achievable PSP/PSnDCG and in recall's denominator.
- ``inv_prop: f32[L_all]`` inverse propensities of every id that can occur in
  ``truth`` (see :func:`inv_propensity`).
- ``valid: bool[n]`` rows that count; padding rows contribute nothing.

Conventions (identical to ``napkinxc.metrics`` 0.7, which the tests check to 1e-6):

With ``hit_i`` = 1 when the prediction at rank ``i`` (0-based) is a true label,
``disc_i = 1 / log2(i + 2)``, ``|y|`` the number of true labels of a point, ``q`` the
inverse propensities and ``q*_0 >= q*_1 >= ...`` the inverse propensities of the
point's true labels sorted in decreasing order:

- ``P@k   = 1/k * sum_{i<k} hit_i`` -- always divided by ``k``, also when a row has
  fewer than ``k`` real predictions (missing ones are misses).
- ``R@k   = sum_{i<k} hit_i / |y|``; 0 for a point with no true labels.
- ``nDCG@k = sum_{i<k} hit_i disc_i / sum_{i<min(k,|y|)} disc_i``; 0 for a point with
  no true labels (napkinxc ``zero_division=0``).
- ``PSP@k``: numerator ``1/k * sum_{i<k} hit_i q_{pred_i}``, best
  ``1/k * sum_{i<min(k,|y|)} q*_i``; the reported ``PSP@k`` is
  ``sum(numerator) / sum(best)`` over the dataset (the XC repository, pyxclib and
  napkinxc ``normalize=True`` convention), and ``PSP@k_unnormalised`` is
  ``sum(numerator) / count``.
- ``PSnDCG@k``: numerator ``sum_{i<k} hit_i q_{pred_i} disc_i / IDCG``, best
  ``sum_{i<min(k,|y|)} q*_i disc_i / IDCG`` with ``IDCG = sum_{i<min(k,|y|)} disc_i``;
  reported as ``sum(numerator) / sum(best)``; a point with no true labels adds 0 to
  both sums.
- Every valid point counts in the denominator ``count`` of P, nDCG, R and
  unnormalised PSP, including points with no true labels (they score 0).
- Truth ids ``>= len(inv_prop)`` (which the contract excludes) are left out of the
  best PSP/PSnDCG, as napkinxc does, and a hit on one has weight 0.

Sources: Jain, Prabhu & Varma, "Extreme Multi-label Loss Functions for Recommendation,
Tagging, Ranking & Other Missing Label Applications", KDD 2016 (propensity model,
PSP@k, PSnDCG@k); the Extreme Classification Repository
(http://manikvarma.org/downloads/XC/XMLRepository.html) and pyxclib for the
normalisation by the best achievable value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_KS",
    "PROPENSITY_AB",
    "DEFAULT_AB",
    "propensity_ab",
    "label_counts",
    "propensity",
    "inv_propensity",
    "metric_sums",
    "empty_sums",
    "add_sums",
    "finalize",
    "truth_to_padded",
    "evaluate",
    "topk_relevance",
    "macro_metrics",
    "calibration_metrics",
    "reliability_bins",
]

DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10)

#: Default propensity-model parameters ``(A, B)`` (Jain et al. 2016).
DEFAULT_AB: tuple[float, float] = (0.55, 1.5)

#: Dataset-specific ``(A, B)`` of the propensity model, keyed by the normalised dataset
#: name (lower case, letters and digits only is what :func:`propensity_ab` compares).
#: Every other dataset uses :data:`DEFAULT_AB`.
PROPENSITY_AB: dict[str, tuple[float, float]] = {
    "amazon-670k": (0.6, 2.6),
    "amazon-3m": (0.6, 2.6),
    "wiki-500k": (0.5, 0.4),
    # Other names of the same Wikipedia data sets (napkinxc / XC repository docs).
    "wikipedia-500k": (0.5, 0.4),
    "wikipedialarge-500k": (0.5, 0.4),
    "wikilshtc-325k": (0.5, 0.4),
}

# Above this padded truth width, hits are found by sorting + binary search instead of
# an all-pairs comparison (which costs n * k * m).
_BROADCAST_MAX_M = 64


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def propensity_ab(dataset_name: str | None) -> tuple[float, float]:
    """The propensity-model parameters ``(A, B)`` for a dataset.

    The name match ignores case and punctuation ("Amazon-670K", "amazon670k" and
    "AMAZON_670K" are the same). Unknown names (and ``None``) give the default
    ``(0.55, 1.5)``.

    Args:
      dataset_name: e.g. ``"Amazon-670K"``, ``"Wiki-500K"``, ``"Eurlex-4K"``.

    Returns:
      ``(A, B)`` as floats.
    """
    if dataset_name is None:
        return DEFAULT_AB
    key = _norm_name(str(dataset_name))
    for name, ab in PROPENSITY_AB.items():
        if _norm_name(name) == key:
            return ab
    return DEFAULT_AB


def label_counts(Y: Any, n_labels: int | None = None) -> np.ndarray:
    """Number of points carrying each label: ``i64[L_all]``.

    Args:
      Y: training labels, a scipy sparse matrix ``(n, L)`` (non-zero = positive), or a
        padded ``i32[n, m]`` array with ``-1`` padding.
      n_labels: length of the result (``L_all``, to cover labels that occur only in
        the test set, whose count is 0); defaults to the number of columns of a
        sparse ``Y``, or ``max id + 1`` of a padded array.

    Raises:
      ValueError: if a label id is ``>= n_labels``.
    """
    if hasattr(Y, "tocsr"):
        Yc = Y.tocsr(copy=True)
        Yc.sum_duplicates()
        Yc.eliminate_zeros()
        ids = Yc.indices
        width = Yc.shape[1]
    else:
        arr = np.asarray(Y)
        ids = arr[arr >= 0].ravel()
        width = int(ids.max()) + 1 if ids.size else 0
    size = width if n_labels is None else int(n_labels)
    if ids.size and int(ids.max()) >= size:
        raise ValueError(f"label id {int(ids.max())} >= n_labels={size}")
    return np.bincount(np.asarray(ids, dtype=np.int64), minlength=size).astype(np.int64)


def inv_propensity(label_counts: Any, n_train: int, A: float = 0.55, B: float = 1.5) -> np.ndarray:
    """Inverse propensities ``f32[L_all]`` of Jain, Prabhu & Varma (KDD 2016).

    ``1 / p_l = 1 + C * exp(-A * log(N_l + B)) = 1 + C * (N_l + B) ** -A`` with
    ``C = (log N - 1) * (B + 1) ** A`` (natural log), ``N_l`` the number of training
    points carrying label ``l`` (0 for labels unseen in training) and ``N`` the number
    of training points. Identical to ``napkinxc.metrics.Jain_et_al_inverse_propensity``.

    Args:
      label_counts: ``array[L_all]`` non-negative training counts per label.
      n_train: ``N``, the number of training points (>= 1).
      A, B: dataset parameters, see :func:`propensity_ab`.

    Raises:
      ValueError: on ``n_train < 1``, negative counts, ``B <= 0`` with a zero count,
        or counts that are not a 1-d array.
    """
    counts = np.asarray(label_counts, dtype=np.float64)
    if counts.ndim != 1:
        raise ValueError(f"label_counts must be 1-d, got shape {counts.shape}")
    if int(n_train) < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    if counts.size and counts.min() < 0:
        raise ValueError("label_counts must be non-negative")
    if counts.size and counts.min() + B <= 0:
        raise ValueError(f"N_l + B must be > 0 (B={B})")
    C = (math.log(int(n_train)) - 1.0) * (B + 1.0) ** A
    return (1.0 + C * np.exp(-A * np.log(counts + B))).astype(np.float32)


def propensity(label_counts: Any, n_train: int, A: float = 0.55, B: float = 1.5) -> np.ndarray:
    """Propensities ``p_l = 1 / (1 + C * exp(-A * log(N_l + B)))``: ``f32[L_all]``.

    ``C = (log N - 1) * (B + 1) ** A`` (Jain, Prabhu & Varma, KDD 2016, eq. in sec. 4);
    the reciprocal of :func:`inv_propensity`, whose arguments and errors it shares.
    """
    inv = inv_propensity(label_counts, n_train, A, B).astype(np.float64)
    return (1.0 / inv).astype(np.float32)


# ----------------------------------------------------------------------------- sums


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"ks must be positive integers, got {k!r}")
        if k < 1:
            raise ValueError(f"ks must be positive integers, got {k}")
        out.append(int(k))
    if not out:
        raise ValueError("ks must not be empty")
    return tuple(sorted(set(out)))


def _sum_keys(ks: Sequence[int]) -> list[str]:
    keys = []
    for k in ks:
        keys += [
            f"sum/P@{k}",
            f"sum/nDCG@{k}",
            f"sum/PSP@{k}",
            f"best/PSP@{k}",
            f"sum/PSnDCG@{k}",
            f"best/PSnDCG@{k}",
            f"sum/R@{k}",
        ]
    return keys + ["count"]


def _hits(pred: jax.Array, truth: jax.Array) -> jax.Array:
    """``bool[n, k]``: whether ``pred[i, j]`` is among the ids of ``truth[i]``."""
    n, m = truth.shape
    if m == 0:
        return jnp.zeros(pred.shape, dtype=bool)
    if m <= _BROADCAST_MAX_M:
        eq = (pred[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
        return jnp.any(eq, axis=-1) & (pred >= 0)
    big = jnp.iinfo(jnp.int32).max
    ts = jnp.sort(jnp.where(truth >= 0, truth, big), axis=1)
    idx = jax.vmap(lambda a, v: jnp.searchsorted(a, v))(ts, pred)
    found = jnp.take_along_axis(ts, jnp.clip(idx, 0, m - 1), axis=1)
    return (found == pred) & (pred >= 0) & (pred != big)


def metric_sums(
    pred: Any,
    truth: Any,
    inv_prop: Any,
    valid: Any = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, jax.Array]:
    """Dataset-level sums of every metric over one batch; jittable (``ks`` static).

    Use as ``jax.jit(metric_sums, static_argnames="ks")``; shapes are static, nothing
    depends on values on the host.

    Args:
      pred: ``i32[n, k']`` predicted ids, best first, ``-1`` = no prediction; only
        the first ``max(ks)`` columns are read.
      truth: ``i32[n, m]`` true ids padded with ``-1`` (``m`` may be 0). Ids may be
        ``>= L`` (never predicted) but must be ``< L_all``.
      inv_prop: ``f32[L_all]`` inverse propensities.
      valid: ``bool[n]``; ``None`` means every row is valid.
      ks: the cut-offs (static).

    Returns:
      ``dict[str, f32[]]`` with, for every ``k`` in ``ks``: ``"sum/P@k"``
      (``sum hits@k / k``), ``"sum/nDCG@k"`` (sum of per-point nDCG@k),
      ``"sum/PSP@k"`` and ``"best/PSP@k"`` (numerator and best achievable PSP@k),
      ``"sum/PSnDCG@k"`` and ``"best/PSnDCG@k"``, ``"sum/R@k"`` (sum of per-point
      recall); and ``"count"``, the number of valid rows. Formulas in the module
      docstring.

    Raises:
      ValueError: (at trace time) on bad ranks or mismatched ``n``, on ``max(ks)``
        larger than ``pred``'s width ``k'`` (pad ``pred`` with ``-1`` columns to get
        napkinxc's behaviour, where missing predictions are misses), or on bad ``ks``.
    """
    ks = _check_ks(ks)
    kmax = max(ks)
    pred = jnp.asarray(pred)
    truth = jnp.asarray(truth)
    inv_prop = jnp.asarray(inv_prop, dtype=jnp.float32)
    if pred.ndim != 2 or truth.ndim != 2:
        raise ValueError(f"pred and truth must be 2-d, got {pred.shape} and {truth.shape}")
    if inv_prop.ndim != 1:
        raise ValueError(f"inv_prop must be 1-d, got shape {inv_prop.shape}")
    n = pred.shape[0]
    if truth.shape[0] != n:
        raise ValueError(f"pred has {n} rows but truth has {truth.shape[0]}")
    if kmax > pred.shape[1]:
        raise ValueError(f"k={kmax} is larger than the number of predictions {pred.shape[1]}")
    if valid is None:
        valid = jnp.ones((n,), dtype=bool)
    else:
        valid = jnp.asarray(valid).astype(bool)
        if valid.shape != (n,):
            raise ValueError(f"valid must have shape ({n},), got {valid.shape}")

    pred = pred[:, :kmax].astype(jnp.int32)
    truth = truth.astype(jnp.int32)
    if inv_prop.shape[0] == 0:
        inv_prop = jnp.zeros((1,), jnp.float32)
    n_all = inv_prop.shape[0]
    m = truth.shape[1]

    f32 = jnp.float32
    pos = jnp.arange(kmax, dtype=f32)
    disc = 1.0 / jnp.log2(pos + 2.0)  # f32[kmax]
    ideal_cum = jnp.cumsum(disc)  # f32[kmax]

    truth_mask = truth >= 0
    n_true = jnp.sum(truth_mask, axis=1)  # i32[n]

    hits = _hits(pred, truth)  # bool[n, kmax]
    hitf = hits.astype(f32)
    pred_q = jnp.take(inv_prop, jnp.clip(pred, 0, n_all - 1), axis=0)
    pred_q = jnp.where(hits & (pred < n_all), pred_q, 0.0)  # f32[n, kmax]

    # Best achievable: the point's true labels sorted by decreasing inverse propensity.
    true_q = jnp.take(inv_prop, jnp.clip(truth, 0, n_all - 1), axis=0)
    true_q = jnp.where(truth_mask & (truth < n_all), true_q, -jnp.inf)
    if m < kmax:
        true_q = jnp.pad(true_q, ((0, 0), (0, kmax - m)), constant_values=-jnp.inf)
    top_q = jax.lax.top_k(true_q, kmax)[0]
    top_q = jnp.where(top_q > -jnp.inf, top_q, 0.0)  # f32[n, kmax]

    cum_hits = jnp.cumsum(hitf, axis=1)
    cum_dcg = jnp.cumsum(hitf * disc, axis=1)
    cum_ps = jnp.cumsum(pred_q, axis=1)
    cum_psdcg = jnp.cumsum(pred_q * disc, axis=1)
    cum_best = jnp.cumsum(top_q, axis=1)
    cum_best_dcg = jnp.cumsum(top_q * disc, axis=1)

    def total(x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(valid, x, 0.0)).astype(f32)

    has_true = n_true > 0
    recall_den = jnp.maximum(n_true, 1).astype(f32)
    out: dict[str, jax.Array] = {}
    for k in ks:
        j = k - 1
        ideal_len = jnp.minimum(n_true, k)
        idcg = jnp.where(has_true, ideal_cum[jnp.maximum(ideal_len - 1, 0)], 1.0)
        out[f"sum/P@{k}"] = total(cum_hits[:, j] / k)
        out[f"sum/nDCG@{k}"] = total(jnp.where(has_true, cum_dcg[:, j] / idcg, 0.0))
        out[f"sum/PSP@{k}"] = total(cum_ps[:, j] / k)
        out[f"best/PSP@{k}"] = total(cum_best[:, j] / k)
        out[f"sum/PSnDCG@{k}"] = total(jnp.where(has_true, cum_psdcg[:, j] / idcg, 0.0))
        out[f"best/PSnDCG@{k}"] = total(jnp.where(has_true, cum_best_dcg[:, j] / idcg, 0.0))
        out[f"sum/R@{k}"] = total(jnp.where(has_true, cum_hits[:, j] / recall_den, 0.0))
    out["count"] = jnp.sum(valid).astype(f32)
    return out


_metric_sums_jit = jax.jit(metric_sums, static_argnames=("ks",))


def empty_sums(ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Zero sums (``f64[]`` each) with the keys :func:`metric_sums` returns for ``ks``."""
    return {key: np.zeros((), np.float64) for key in _sum_keys(_check_ks(ks))}


def add_sums(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Key-wise ``a + b`` of two sums dicts (jittable; works on numpy or jax scalars).

    Raises:
      ValueError: if the keys differ (sums over different ``ks``).
    """
    if set(a) != set(b):
        raise ValueError(f"sums have different keys: {sorted(set(a) ^ set(b))}")
    return {key: a[key] + b[key] for key in a}


def _ks_of(sums: Mapping[str, Any]) -> tuple[int, ...]:
    ks = sorted({int(key.split("@", 1)[1]) for key in sums if key.startswith("sum/P@")})
    if not ks or "count" not in sums:
        raise ValueError("not a sums dict from metric_sums (no 'count' or 'sum/P@k' keys)")
    missing = set(_sum_keys(ks)) - set(sums)
    if missing:
        raise ValueError(f"sums dict lacks keys {sorted(missing)}")
    return tuple(ks)


def finalize(sums: Mapping[str, Any]) -> dict[str, float]:
    """Divide the dataset-level sums: ``dict[str, float]`` of fractions (not percent).

    Keys per ``k``: ``"P@k"``, ``"nDCG@k"``, ``"R@k"`` (sum / count),
    ``"PSP@k"`` (sum / best sum; XC repository and pyxclib convention),
    ``"PSP@k_unnormalised"`` (sum / count), ``"PSnDCG@k"`` (sum / best sum).
    A zero denominator (no valid rows, or no true labels at all) gives ``0.0``, never
    NaN.

    Raises:
      ValueError: if ``sums`` is not a dict from :func:`metric_sums` /
        :func:`add_sums`.
    """
    ks = _ks_of(sums)

    def get(key: str) -> float:
        return float(np.asarray(sums[key], dtype=np.float64))

    def div(num: float, den: float) -> float:
        return num / den if den != 0 else 0.0

    count = get("count")
    res: dict[str, float] = {}
    for k in ks:
        res[f"P@{k}"] = div(get(f"sum/P@{k}"), count)
    for k in ks:
        res[f"nDCG@{k}"] = div(get(f"sum/nDCG@{k}"), count)
    for k in ks:
        res[f"PSP@{k}"] = div(get(f"sum/PSP@{k}"), get(f"best/PSP@{k}"))
    for k in ks:
        res[f"PSP@{k}_unnormalised"] = div(get(f"sum/PSP@{k}"), count)
    for k in ks:
        res[f"PSnDCG@{k}"] = div(get(f"sum/PSnDCG@{k}"), get(f"best/PSnDCG@{k}"))
    for k in ks:
        res[f"R@{k}"] = div(get(f"sum/R@{k}"), count)
    return res


# ------------------------------------------------------------------------------ host


def _canonical_csr(Y: Any) -> Any:
    Yc = Y.tocsr(copy=True)
    Yc.sum_duplicates()
    Yc.eliminate_zeros()
    return Yc


def _csr_rows_to_padded(Yc: Any, width: int) -> np.ndarray:
    n = Yc.shape[0]
    lengths = np.diff(Yc.indptr)
    if n and int(lengths.max(initial=0)) > width:
        raise ValueError(f"a row has {int(lengths.max())} labels, more than width={width}")
    out = np.full((n, width), -1, dtype=np.int32)
    start, stop = int(Yc.indptr[0]), int(Yc.indptr[-1])
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(stop - start) - np.repeat(Yc.indptr[:-1] - start, lengths)
    out[rows, cols] = Yc.indices[start:stop]
    return out


def truth_to_padded(Y: Any, width: int | None = None) -> np.ndarray:
    """Ground truth as ``i32[n, m]`` label ids padded with ``-1``.

    Args:
      Y: a scipy sparse matrix/array ``(n, L_all)`` whose non-zero entries are the
        positives (explicit zeros are dropped, duplicates merged), or a sequence of
        sequences of label ids.
      width: ``m``; defaults to the largest number of labels of a row (at least 1).

    Returns:
      ``np.ndarray`` ``i32[n, m]``; ids ascending within a row for sparse input, in
      the given order for sequences.

    Raises:
      ValueError: if a row has more than ``width`` labels, or an id is negative.
    """
    if hasattr(Y, "tocsr"):
        Yc = _canonical_csr(Y)
        if width is None:
            width = max(int(np.diff(Yc.indptr).max(initial=0)), 1)
        return _csr_rows_to_padded(Yc, int(width))
    rows = [np.asarray(list(r), dtype=np.int64).ravel() for r in Y]
    if width is None:
        width = max([len(r) for r in rows] + [1])
    out = np.full((len(rows), int(width)), -1, dtype=np.int32)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"row {i} has {len(r)} labels, more than width={width}")
        if r.size and r.min() < 0:
            raise ValueError(f"row {i} has a negative label id")
        out[i, : len(r)] = r
    return out


def evaluate(
    pred_ids: Any,
    truth: Any,
    inv_prop: Any = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 4096,
) -> dict[str, float]:
    """All metrics of a whole split, streamed through one compiled :func:`metric_sums`.

    Every batch has the same shape (the last one is padded and masked with
    ``valid``), so ``metric_sums`` compiles once per (batch size, k, m) shape. The
    per-batch ``f32`` sums are added in ``float64`` on the host.

    Args:
      pred_ids: ``i32[n, k']`` predicted ids, best first, ``-1`` = none (numpy or jax
        array, or a :class:`jxmc.types.TopK`, whose ``ids`` are used).
      truth: scipy sparse ``(n, L_all)`` labels, or a padded ``i32[n, m]`` array.
      inv_prop: ``f32[L_all]`` inverse propensities; ``None`` leaves out the
        propensity-scored metrics.
      ks: cut-offs.
      batch_size: rows per device batch.

    Returns:
      :func:`finalize`'s dict.

    Raises:
      ValueError: on mismatched row counts, ``max(ks)`` wider than ``pred_ids``, a
        truth id ``>= len(inv_prop)``, or ``batch_size < 1``.
    """
    ks = _check_ks(ks)
    kmax = max(ks)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = getattr(pred_ids, "ids", pred_ids)
    pred = np.asarray(ids)
    if pred.ndim != 2:
        raise ValueError(f"pred_ids must be 2-d, got shape {pred.shape}")
    if kmax > pred.shape[1]:
        raise ValueError(f"k={kmax} is larger than the number of predictions {pred.shape[1]}")
    pred = pred[:, :kmax].astype(np.int32)
    n = pred.shape[0]

    sparse = hasattr(truth, "tocsr")
    if sparse:
        Yc = _canonical_csr(truth)
        width = max(int(np.diff(Yc.indptr).max(initial=0)), 1)
        max_id = int(Yc.indices.max()) if Yc.nnz else -1
        n_truth = Yc.shape[0]
    else:
        tr = np.asarray(truth)
        if tr.ndim != 2:
            raise ValueError(f"truth must be sparse or 2-d padded ids, got shape {tr.shape}")
        tr = tr.astype(np.int32)
        width = tr.shape[1]
        max_id = int(tr.max(initial=-1))
        n_truth = tr.shape[0]
    if n_truth != n:
        raise ValueError(f"pred_ids has {n} rows but truth has {n_truth}")

    drop_ps = inv_prop is None
    if drop_ps:
        q = np.ones((max(max_id + 1, 1),), np.float32)
    else:
        q = np.asarray(inv_prop, dtype=np.float32)
        if q.ndim != 1:
            raise ValueError(f"inv_prop must be 1-d, got shape {q.shape}")
        if max_id >= q.shape[0]:
            raise ValueError(f"truth has label id {max_id} but inv_prop covers {q.shape[0]}")

    total = empty_sums(ks)
    if n > 0:
        bs = min(int(batch_size), n)
        q_dev = jnp.asarray(q)
        parts = []
        for start in range(0, n, bs):
            stop = min(start + bs, n)
            rows = stop - start
            p = np.full((bs, kmax), -1, np.int32)
            p[:rows] = pred[start:stop]
            t = np.full((bs, width), -1, np.int32)
            t[:rows] = _csr_rows_to_padded(Yc[start:stop], width) if sparse else tr[start:stop]
            v = np.zeros((bs,), bool)
            v[:rows] = True
            parts.append(_metric_sums_jit(p, t, q_dev, v, ks=ks))
        for part in parts:
            total = add_sums(total, {key: np.asarray(val, np.float64) for key, val in part.items()})
    res = finalize(total)
    if drop_ps:
        res = {key: val for key, val in res.items() if not key.startswith("PS")}
    return res


# ---------------------------------------------------- macro-averaged and calibration


def _pred_matrix(pred_ids: Any, kmax: int) -> np.ndarray:
    ids = getattr(pred_ids, "ids", pred_ids)
    pred = np.asarray(ids)
    if pred.ndim != 2:
        raise ValueError(f"pred_ids must be 2-d, got shape {pred.shape}")
    if kmax > pred.shape[1]:
        raise ValueError(f"k={kmax} is larger than the number of predictions {pred.shape[1]}")
    return (pred[:, :kmax] if kmax else pred).astype(np.int64)


def _truth_csr(truth: Any, n: int) -> Any:
    import scipy.sparse as sp

    if hasattr(truth, "tocsr"):
        Yc = _canonical_csr(truth)
    else:
        tr = np.asarray(truth)
        if tr.ndim != 2:
            raise ValueError(f"truth must be sparse or 2-d padded ids, got shape {tr.shape}")
        rows, cols = np.nonzero(tr >= 0)
        ids = tr[rows, cols].astype(np.int64)
        width = int(ids.max()) + 1 if ids.size else 0
        Yc = _canonical_csr(sp.csr_matrix((np.ones(ids.size, np.float32), (rows, ids)),
                                          shape=(tr.shape[0], width)))
    if Yc.shape[0] != n:
        raise ValueError(f"pred_ids has {n} rows but truth has {Yc.shape[0]}")
    return Yc


def topk_relevance(pred_ids: Any, truth: Any) -> np.ndarray:
    """Whether each prediction is a true label: ``bool[n, k]``.

    Args:
      pred_ids: ``i32[n, k]`` predicted ids (``-1`` = none, never relevant), or a
        :class:`jxmc.types.TopK`.
      truth: scipy sparse ``(n, L_all)`` labels, or padded ``i32[n, m]`` ids.

    Raises:
      ValueError: on mismatched row counts or a non-2-d ``pred_ids``.
    """
    pred = _pred_matrix(pred_ids, 0)
    n, k = pred.shape
    Yc = _truth_csr(truth, n)
    valid = (pred >= 0) & (pred < Yc.shape[1])
    out = np.zeros((n, k), bool)
    if n and k and Yc.nnz:
        rows = np.repeat(np.arange(n), k)[valid.ravel()]
        vals = np.asarray(Yc[rows, pred.ravel()[valid.ravel()]]).ravel()
        out[valid] = vals != 0
    return out


def macro_metrics(
    pred_ids: Any,
    truth: Any,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    n_labels: int | None = None,
    epsilon: float = 0.0,
) -> dict[str, float]:
    """Label-wise metrics of the top-k predictions, as xCOLUMNs defines them.

    The top-k predictions of the ``n`` points form a binary prediction matrix
    ``y_pred`` (``n x L``, ``k`` ones per row when every row has ``k`` predictions);
    with the test labels ``y_true`` (``n x L``), per label ``l``:
    ``TP_l = sum_i y_true[i,l] y_pred[i,l]``, ``FP_l = sum_i (1 - y_true[i,l]) y_pred[i,l]``,
    ``FN_l = sum_i y_true[i,l] (1 - y_pred[i,l])``, and

    - ``macro-P@k = 1/L sum_l TP_l / (TP_l + FP_l)`` (precision of each label's
      predictions, averaged over labels);
    - ``macro-R@k = 1/L sum_l TP_l / (TP_l + FN_l)`` (recall of each label);
    - ``coverage@k = 1/L sum_l [TP_l > 0]`` (share of labels predicted correctly at
      least once).

    The average is over *all* ``L`` labels; a label never predicted (precision) or
    without test positives (recall) scores 0, as in xCOLUMNs, whose
    ``TP / (TP + FP + epsilon)`` with ``epsilon = 1e-6`` on counts divided by ``n``
    is 0 there too. With ``epsilon=0`` (the default) the ratios are exact and a zero
    denominator gives 0; ``epsilon=1e-6`` reproduces xCOLUMNs' numbers (its
    ``macro_precision`` / ``macro_recall`` / ``coverage`` of version 0.0.2,
    ``xcolumns/metrics.py``) to rounding.

    Source: xCOLUMNs (Wydmuch et al., https://github.com/mwydmuch/xCOLUMNs),
    ``binary_precision_on_conf_matrix``, ``binary_recall_on_conf_matrix``,
    ``coverage_on_conf_matrix`` averaged by ``make_macro_metric_on_conf_matrix``;
    Schultheis, Wydmuch, Babbar & Dembczynski, "Generalized test utilities for
    long-tail performance in extreme multi-label classification", NeurIPS 2023.

    Args:
      pred_ids: ``i32[n, k']`` predicted ids, best first, ``-1`` = none (a missing
        prediction counts nowhere); ids assumed distinct within a row.
      truth: scipy sparse ``(n, L_all)`` labels (non-zero = positive), or padded
        ``i32[n, m]`` ids.
      ks: cut-offs.
      n_labels: ``L``, the labels averaged over; default the number of columns of a
        sparse ``truth`` (``L_all``, test-only labels included: they count with
        recall 0), or ``max id + 1`` of predictions and padded truth.
      epsilon: added to each denominator after dividing the counts by ``n``
        (xCOLUMNs: ``1e-6``).

    Returns:
      ``{"macro-P@k", "macro-R@k", "coverage@k"}`` for every ``k``, fractions.

    Raises:
      ValueError: mismatched row counts, ``max(ks)`` wider than ``pred_ids``, bad
        ``ks``, ``epsilon < 0``, or an id ``>= n_labels``.
    """
    ks = _check_ks(ks)
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    pred = _pred_matrix(pred_ids, max(ks))
    n = pred.shape[0]
    Yc = _truth_csr(truth, n)
    max_pred = int(pred.max(initial=-1))
    L = int(n_labels) if n_labels is not None else max(Yc.shape[1], max_pred + 1)
    if max_pred >= L or Yc.shape[1] > L and Yc.nnz and int(Yc.indices.max()) >= L:
        raise ValueError(f"a label id is >= n_labels={L}")
    rel = topk_relevance(pred, Yc)
    pos = np.bincount(Yc.indices, minlength=L)[:L].astype(np.float64)
    res: dict[str, float] = {}
    for k in ks:
        p, r = pred[:, :k], rel[:, :k]
        ok = p >= 0
        n_pred = np.bincount(p[ok], minlength=L).astype(np.float64)
        tp = np.bincount(p[ok & r], minlength=L).astype(np.float64)
        scale = 1.0 / n if n else 1.0
        den_p = (n_pred * scale) + epsilon
        den_r = (pos * scale) + epsilon
        prec = np.divide(tp * scale, den_p, out=np.zeros(L), where=den_p > 0)
        rec = np.divide(tp * scale, den_r, out=np.zeros(L), where=den_r > 0)
        res[f"macro-P@{k}"] = float(prec.mean()) if L else 0.0
        res[f"macro-R@{k}"] = float(rec.mean()) if L else 0.0
        res[f"coverage@{k}"] = float((tp > 0).mean()) if L else 0.0
    return res


def _check_probs(probs: Any, relevant: Any, kmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    r = np.asarray(relevant).astype(bool)
    if p.ndim != 2 or p.shape != r.shape:
        raise ValueError(f"probs and relevant must be 2-d of one shape, got {p.shape} and {r.shape}")
    if kmax > p.shape[1]:
        raise ValueError(f"k={kmax} is larger than the number of predictions {p.shape[1]}")
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("probs must lie in [0, 1] (apply a calibrator to raw scores first)")
    return p, r, ok


def reliability_bins(probs: Any, relevant: Any, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width reliability-diagram bins of (probability, outcome) pairs.

    Bin ``b`` (``0 <= b < n_bins``) holds the probabilities in
    ``[b / n_bins, (b + 1) / n_bins)`` (edges as the float nearest to ``b / n_bins``);
    the last bin also holds 1.0 (torchmetrics' ``BinaryCalibrationError`` binning,
    which Ullah et al. 2025 use, up to the rounding of its edges). Non-finite
    probabilities (missing predictions, score ``-inf``) are left out.

    Args:
      probs: ``f[...]`` predicted probabilities in ``[0, 1]``.
      relevant: ``bool[...]`` of the same shape: the outcome of each prediction.
      n_bins: number of bins.

    Returns:
      ``{"count": i64[n_bins], "confidence": f64[n_bins] (mean probability),
      "accuracy": f64[n_bins] (share relevant)}``; empty bins have 0 for both means.

    Raises:
      ValueError: shapes differ, probabilities outside ``[0, 1]``, ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = np.asarray(probs, dtype=np.float64).ravel()
    r = np.asarray(relevant).astype(bool).ravel()
    if p.shape != r.shape:
        raise ValueError(f"probs and relevant differ in size: {p.size} and {r.size}")
    ok = np.isfinite(p)
    p, r = p[ok], r[ok]
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probs must lie in [0, 1] (apply a calibrator to raw scores first)")
    edges = np.arange(n_bins + 1) / n_bins  # b / n_bins, correctly rounded (0.3 is in bin 3)
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.int64)
    conf_sum = np.bincount(b, weights=p, minlength=n_bins)
    acc_sum = np.bincount(b, weights=r.astype(np.float64), minlength=n_bins)
    den = np.maximum(count, 1)
    return {"count": count, "confidence": conf_sum / den, "accuracy": acc_sum / den}


def calibration_metrics(
    probs: Any,
    relevant: Any,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    n_bins: int = 10,
) -> dict[str, float]:
    """Calibration of the top-k probabilities: ``ECE@k`` and ``Brier@k``.

    The pairs are every (probability, relevant) of ranks ``1..k`` of every point,
    pooled (Ullah et al. 2025, Section 3: each top-k score is read as the
    probability that that label is relevant).

    - ``ECE@k = sum_b (n_b / N) |acc_b - conf_b|`` (L1) over :func:`reliability_bins`
      with ``n_bins`` equal-width bins, ``N`` the number of pairs, ``acc_b`` the share
      of relevant pairs and ``conf_b`` the mean probability in bin ``b``
      (Guo et al., "On calibration of modern neural networks", ICML 2017, eq. 3).
    - ``Brier@k = 1/N sum (p - relevant)^2`` (Brier 1950; sklearn's
      ``brier_score_loss`` on the pooled pairs).

    Missing predictions (non-finite probability, e.g. the ``-inf`` of an id ``-1``)
    are left out of both; with no pairs at all both are 0.

    Source: Ullah, Schultheis, Wydmuch, Babbar et al., "How Well Calibrated are
    Extreme Multi-label Classifiers? An Empirical Analysis", 2025
    (https://github.com/xmc-aalto/xmc-topk-calibration, ``evaluate_new.py``).

    Args:
      probs: ``f[n, k']`` probabilities of the top-``k'`` predictions, best first.
      relevant: ``bool[n, k']`` whether each is a true label (:func:`topk_relevance`).
      ks: cut-offs.
      n_bins: ECE bins.

    Returns:
      ``{"ECE@k", "Brier@k"}`` for every ``k``, fractions.

    Raises:
      ValueError: shapes differ, ``max(ks) > k'``, probabilities outside ``[0, 1]``.
    """
    ks = _check_ks(ks)
    p, r, ok = _check_probs(probs, relevant, max(ks))
    res: dict[str, float] = {}
    for k in ks:
        pk, rk, okk = p[:, :k][ok[:, :k]], r[:, :k][ok[:, :k]], ok[:, :k]
        bins = reliability_bins(pk, rk, n_bins)
        N = int(okk.sum())
        ece = float(np.sum(bins["count"] * np.abs(bins["accuracy"] - bins["confidence"])) / N) if N else 0.0
        brier = float(np.mean((pk - rk.astype(np.float64)) ** 2)) if N else 0.0
        res[f"ECE@{k}"] = ece
        res[f"Brier@{k}"] = brier
    return res
