"""Calibrated top-k probabilities: isotonic regression or Platt scaling of the scores.

A ranking model's top-k scores are not probabilities that the labels are relevant
(Ullah et al. 2025 measure how far they are, per model family). A calibrator is one
monotone map ``score -> probability`` fitted on (score, relevant) pairs of the
top-k predictions of points the model did not train on:

- ``"isotonic"``: isotonic regression (sklearn ``IsotonicRegression``,
  ``out_of_bounds="clip"``; Zadrozny & Elkan, KDD 2002), stored as its
  breakpoints and applied by linear interpolation between them, exactly as
  sklearn's ``transform``. Non-decreasing, so the order of a point's predictions
  is kept (ties can appear: P@k is unchanged because the order is not re-sorted).
- ``"platt"``: ``p = 1 / (1 + exp(-(a * score + b)))`` fitted by logistic
  regression on the score (Platt 1999; sklearn ``LogisticRegression``, L2 with
  ``C=1`` as Ullah et al. use it). Strictly monotone when ``a > 0``.

The pairs come from cross-fitting on the training set (:func:`cross_fit_pairs`):
the training points are split in ``F`` folds, the method is trained on ``F - 1``
of them and predicts the top-k of the held-out fold, for each fold in turn, and
the calibrator is fitted on the pooled pairs of all folds. (Ullah et al. 2025,
https://github.com/xmc-aalto/xmc-topk-calibration ``evaluate_new.py``, cross-fit
the calibrator over 10 folds of the *test* predictions of one model; here the
test set stays untouched, so the calibrated model can be evaluated on it.)

The calibrator is saved in the model directory as ``calibration.json`` (written
atomically) together with the SHA-256 of the model's manifest, so a calibrator
left over from an earlier model in the same directory is refused, not applied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

from jxmc.errors import ConfigError, ModelError
from jxmc.fileio import atomic_write

__all__ = ["CALIBRATION_FILE", "METHODS", "Calibrator", "fit", "cross_fit_pairs", "fold_ids",
           "save", "load"]

CALIBRATION_FILE = "calibration.json"
METHODS = ("isotonic", "platt")
_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Calibrator:
    """A fitted map from raw top-k scores to probabilities.

    Attributes:
      method: ``"isotonic"`` or ``"platt"``.
      x, y: isotonic breakpoints (``f64[B]`` scores ascending, ``f64[B]``
        probabilities non-decreasing); empty for Platt.
      a, b: Platt's slope and intercept (0 for isotonic).
      k: the ranks ``1..k`` whose pairs it was fitted on.
      n_pairs, folds: how many (score, relevant) pairs, from how many folds.
    """

    method: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 0.0
    b: float = 0.0
    k: int = 10
    n_pairs: int = 0
    folds: int = 0

    def __call__(self, scores: Any) -> np.ndarray:
        """Probabilities ``f32[...]`` of ``scores`` (any shape); non-finite scores
        (the ``-inf`` of a missing prediction) stay ``-inf``."""
        s = np.asarray(scores, dtype=np.float64)
        ok = np.isfinite(s)
        out = np.full(s.shape, -np.inf)
        if self.method == "isotonic":
            out[ok] = np.interp(s[ok], np.asarray(self.x), np.asarray(self.y))
        else:
            out[ok] = 1.0 / (1.0 + np.exp(-(self.a * s[ok] + self.b)))
        return out.astype(np.float32)

    def to_json(self) -> dict:
        return {"format": _FORMAT, **dataclasses.asdict(self),
                "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_json(cls, d: dict) -> Calibrator:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["x"], kw["y"] = tuple(map(float, kw.get("x", ()))), tuple(map(float, kw.get("y", ())))
        return cls(**kw)


def _pairs(scores: Any, relevant: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    r = np.asarray(relevant).astype(bool).ravel()
    if s.shape != r.shape:
        raise ValueError(f"scores and relevant differ in size: {s.size} and {r.size}")
    ok = np.isfinite(s)
    return s[ok], r[ok]


def fit(scores: Any, relevant: Any, method: str = "isotonic", *, k: int = 10,
        folds: int = 0) -> Calibrator:
    """Fits a calibrator on pooled (score, relevant) pairs.

    Args:
      scores: ``f[n, k]`` (or any shape) raw top-k scores; non-finite ones (missing
        predictions) are left out.
      relevant: ``bool`` of the same shape (:func:`jxmc.metrics.topk_relevance`).
      method: ``"isotonic"`` or ``"platt"``.
      k, folds: recorded in the calibrator (where the pairs came from).

    Raises:
      ConfigError: an unknown ``method``, or fewer than 2 pairs, or pairs that are
        all relevant or all not (nothing to calibrate).
    """
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    s, r = _pairs(scores, relevant)
    if s.size < 2 or r.all() or not r.any():
        raise ConfigError(f"cannot fit a calibrator on {s.size} (score, relevant) pairs of which "
                          f"{int(r.sum())} are relevant: need both outcomes")
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(s, r.astype(np.float64))
        return Calibrator("isotonic", x=tuple(map(float, iso.X_thresholds_)),
                          y=tuple(map(float, iso.y_thresholds_)), k=k, n_pairs=int(s.size),
                          folds=folds)
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression()
    lr.fit(s.reshape(-1, 1), r.astype(np.int64))
    return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]), k=k,
                      n_pairs=int(s.size), folds=folds)


def fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """``i64[n]``: the fold (``0 .. folds-1``) of each point, a seeded random split into
    folds whose sizes differ by at most one.

    Raises:
      ConfigError: ``folds < 2`` or more folds than points.
    """
    if folds < 2:
        raise ConfigError(f"--folds must be >= 2, got {folds}")
    if folds > n:
        raise ConfigError(f"--folds {folds} is more than the {n} training points")
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, np.int64)
    out[perm] = np.arange(n) % folds
    return out


def cross_fit_pairs(method, X, Y, config, *, folds: int = 3, k: int = 10, seed: int = 0,
                    texts: list[str] | None = None, log=None) -> tuple[np.ndarray, np.ndarray]:
    """Held-out (score, relevant) pairs of the training set by ``folds``-fold cross-fitting.

    For each fold ``f``: ``method.fit`` on the points of the other folds (same
    ``config`` and ``seed``), then ``method.predict`` of the top-``k`` of fold
    ``f``'s points, compared with their labels.

    Args:
      method: a :class:`jxmc.models.base.Method`.
      X: ``csr f32[n, d]`` training features; Y: ``csr f32[n, L]`` training labels.
      config: the method's config (the saved model's).
      folds, k, seed: number of folds, ranks per point, seed of the split and of fitting.
      texts: the ``n`` training texts, for methods that read them.
      log: a ``str -> None`` for progress lines, or None.

    Returns:
      ``(scores: f32[n, k], relevant: bool[n, k])`` in the order of the rows of ``X``.

    Raises:
      ConfigError: bad ``folds`` (:func:`fold_ids`), or what the method raises.
    """
    from jxmc.metrics import topk_relevance

    n = X.shape[0]
    fid = fold_ids(n, folds, seed)
    scores = np.full((n, k), -np.inf, np.float32)
    relevant = np.zeros((n, k), bool)
    texts_for = (lambda idx: [texts[i] for i in idx]) if method.needs_texts else (lambda idx: None)
    for f in range(folds):
        train_idx, held_idx = np.flatnonzero(fid != f), np.flatnonzero(fid == f)
        if log is not None:
            log(f"jxmc: calibration fold {f + 1}/{folds}: training on {train_idx.size} points, "
                f"scoring {held_idx.size}")
        params = method.fit(X[train_idx], Y[train_idx], config, seed=seed, ckpt=None,
                            progress=False, texts=texts_for(train_idx))
        topk = method.predict(params, X[held_idx], config, k=k, texts=texts_for(held_idx))
        kk = topk.ids.shape[1]
        scores[held_idx, :kk] = topk.scores
        relevant[held_idx, :kk] = topk_relevance(topk.ids, Y[held_idx])
    return scores, relevant


def _manifest_digest(model_dir: str) -> str:
    from jxmc.modeldir import MANIFEST

    path = os.path.join(model_dir, MANIFEST)
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise ModelError(f"{path}: cannot read the model manifest: {e}") from None


def save(model_dir: str, calibrator: Calibrator) -> str:
    """Writes ``<model_dir>/calibration.json`` atomically; returns its path.

    Raises:
      ModelError: the directory holds no finished model.
    """
    path = os.path.join(model_dir, CALIBRATION_FILE)
    payload = {**calibrator.to_json(), "model_manifest_sha256": _manifest_digest(model_dir)}
    with atomic_write(path) as f:
        json.dump(payload, f, indent=1)
    return path


def load(model_dir: str) -> Calibrator | None:
    """The model's calibrator, or None when it has none.

    Raises:
      ModelError: ``calibration.json`` unreadable, of another format, or fitted for
        another model (the manifest changed since: the model was retrained).
    """
    path = os.path.join(model_dir, CALIBRATION_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict):
            raise ValueError(f"a JSON {type(d).__name__}, expected an object")
        if d.get("format") != _FORMAT or d.get("method") not in METHODS:
            raise ValueError(f"format {d.get('format')!r}, method {d.get('method')!r}")
        cal = Calibrator.from_json(d)
    except (OSError, ValueError, TypeError) as e:
        raise ModelError(f"{path}: unreadable calibrator: {e}") from None
    if d.get("model_manifest_sha256") != _manifest_digest(model_dir):
        raise ModelError(f"{path}: fitted for an earlier model in this directory; re-run "
                         f"'jxmc calibrate --model-dir {model_dir}'")
    return cal
