"""A saved model loaded once and kept ready to predict: :class:`Predictor`.

``jxmc predict``, ``jxmc serve`` and the notebooks all predict through it, so
their answers are the same by construction::

    p = Predictor("model_dir")                       # read, laid out on the device once
    out = p.predict(features=["3:0.5 17:1", "4:2"], k=5)   # or texts=[...] (raw-text models)
    out.ids, out.scores, out.labels                  # i32[n, k], f32[n, k], names
    p.predict_one(text="a package description")      # one point: a Prediction of 1 row

Inputs are read exactly as ``jxmc predict`` reads its files
(:func:`jxmc.data.inputs.read_predict_inputs`): texts through the model's saved
TF-IDF featuriser (raw-text models); sparse rows (``"f:v f:v"`` strings, parsed as
a line of an XC features file, or a ``scipy.sparse`` matrix) L2-normalised when
the model's training data were (``manifest["data"]["normalise"]``).  Labels are
named as ``jxmc predict`` names them: the model's label names (raw-text data), or
the label id as text.

Calibration: when the model directory holds a calibrator (``jxmc calibrate``,
:func:`jxmc.calibration.load`), :attr:`Predictor.calibrator` is it and every
:class:`Prediction` carries ``probabilities`` (the calibrated top-k scores)
beside the raw ``scores``; otherwise ``calibrator`` and ``probabilities`` are None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from jxmc import modeldir
from jxmc.errors import ConfigError, DataError
from jxmc.models import get_method
from jxmc.models.base import config_from_dict, usable_mesh, with_predict_fields
from jxmc.ops.sparse import normalise_rows
from jxmc.types import TopK

try:  # calibration is optional (another module's work); a model without it predicts as before
    from jxmc import calibration as _calibration
except ImportError:  # pragma: no cover
    _calibration = None


class Prediction(NamedTuple):
    """The top-k of ``n`` points.

    Attributes:
      ids: ``i32[n, k]`` label ids, best first, ``-1`` where fewer than ``k`` were scored.
      scores: ``f32[n, k]`` the method's scores, decreasing along a row (``-inf`` at ``-1``).
      labels: per point the names of its valid ids (``-1`` left out), as ``jxmc predict``
        writes them.
      probabilities: ``f32[n, k]`` calibrated scores (:attr:`Predictor.calibrator`), or None.
    """

    ids: np.ndarray
    scores: np.ndarray
    labels: list[list[str]]
    probabilities: np.ndarray | None = None

    def rows(self) -> list[list[dict[str, Any]]]:
        """Per point ``[{"label": name, "id": int, "score": float[, "probability": float]}, ...]``
        (valid ids only, best first): the JSON answer of ``jxmc serve``."""
        out = []
        for i, names in enumerate(self.labels):
            row = []
            for j, name in enumerate(names):
                item = {"label": name, "id": int(self.ids[i, j]), "score": float(self.scores[i, j])}
                if self.probabilities is not None:
                    item["probability"] = float(self.probabilities[i, j])
                row.append(item)
            out.append(row)
        return out


class Predictor:
    """A model directory read once and laid out for prediction (the method's ``prepare``).

    Args:
      model_dir: a finished ``jxmc train`` directory (:mod:`jxmc.modeldir`).
      overrides: ``key=value`` changes to the method's prediction fields (``--set``
        of ``jxmc predict``: beam size, prediction batch size, score transform).
      mesh: a :class:`jax.sharding.Mesh` to predict on (methods with mesh support), or None.

    Attributes:
      model: the :class:`jxmc.modeldir.SavedModel`; method: its :class:`Method`;
      config: its training config with ``overrides``; prepared: the method's
      :class:`~jxmc.models.base.Prepared`; n_features: ``d``; label_names: the
      ``L`` names or None (id-labelled data); reads_texts: the model has a text
      featuriser (accepts ``texts=``); needs_texts: the method itself reads texts
      (accepts no ``features=``); calibrator: see the module docstring.

    Raises:
      ModelError: no finished model in ``model_dir``.
      ConfigError: an override outside the method's prediction fields; a mesh the
        method cannot use.
    """

    def __init__(self, model_dir: str, *, overrides: Sequence[str] = (), mesh=None):
        self.model_dir = model_dir
        self.model = modeldir.load(model_dir)
        self.method = get_method(self.model.method)
        config = config_from_dict(self.method.Config, self.model.manifest["config"])
        self.config = with_predict_fields(self.method.Config, config, list(overrides),
                                          self.method.predict_fields, self.method.name)
        self.mesh = usable_mesh(self.method, mesh, "prediction")
        self.prepared = self.method.prepare(self.model.params, self.config, self.mesh)
        data = self.model.manifest["data"]
        self.n_features = int(data["n_features"])
        self.n_labels = int(data["n_labels"])
        self.normalise = bool(data.get("normalise", True))
        self.label_names = self.model.label_names
        self.reads_texts = self.model.featurizer is not None
        self.needs_texts = bool(self.method.needs_texts)
        load = getattr(_calibration, "load", None)
        self.calibrator = load(model_dir) if load is not None else None

    # -- inputs ---------------------------------------------------------------------------

    def features(self, rows) -> sp.csr_matrix:
        """Sparse rows as the model reads them: ``csr f32[n, d]``, sorted indices, no
        stored zeros, L2-normalised (when the training data were).

        Args:
          rows: ``"f:v f:v ..."`` strings (0-based feature ids, one point each, as a
            line of an XC features file; ``""`` is an empty row), or a scipy sparse /
            dense ``[n, d]`` matrix.

        Raises:
          DataError: a malformed pair, a feature id outside ``[0, d)``, a duplicate id,
            a non-finite value (``features[i]`` names the row), or a matrix of another width.
        """
        if isinstance(rows, str):
            raise DataError("features", None, "expected a list of 'f:v f:v' strings, got one string")
        if sp.issparse(rows) or isinstance(rows, np.ndarray):
            X = sp.csr_matrix(rows, dtype=np.float32, copy=True)
            if X.ndim != 2 or X.shape[1] != self.n_features:
                raise DataError("features", None, f"{X.shape[1]} features, but the model was "
                                                  f"trained on {self.n_features}")
            X.sum_duplicates()
            X.sort_indices()
            X.eliminate_zeros()
        else:
            X = parse_feature_rows(rows, self.n_features)
        return normalise_rows(X) if self.normalise else X

    def featurise(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Texts through the model's TF-IDF featuriser: ``csr f32[n, d]`` (L2-normalised).

        Raises:
          DataError: the model was trained on sparse features (it has no featuriser),
            or an item is not a string.
        """
        if self.model.featurizer is None:
            raise DataError("texts", None, "this model was trained on sparse features, not raw "
                                           "text; send 'features'")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"texts[{bad}]", None, "not a string")
        return self.model.featurizer.transform(list(texts))

    # -- prediction -----------------------------------------------------------------------

    def topk(self, X: sp.csr_matrix, texts: Sequence[str] | None = None, *, k: int = 10) -> TopK:
        """The method's top-``k`` of rows already read as the model reads them
        (:meth:`features`, :meth:`featurise`, :func:`jxmc.data.inputs.read_predict_inputs`).

        Args:
          X: ``csr f32[n, d]``; texts: the ``n`` texts (passed on to methods that read them).

        Returns:
          numpy :class:`TopK`: ``ids: i32[n, k]`` (-1 padded), ``scores: f32[n, k]``.

        Raises:
          ConfigError: ``k < 1``; texts missing for a text method.
        """
        texts = list(texts) if (self.needs_texts and texts is not None) else None
        return self.method.predict(self.prepared, X, self.config, k=k, texts=texts)

    def name(self, label_id: int) -> str:
        """Label ``label_id``'s name as ``jxmc predict`` writes it."""
        names = self.label_names
        return names[label_id] if names is not None else str(label_id)

    def result(self, topk: TopK) -> Prediction:
        """A :class:`Prediction` of a :class:`TopK` (names; calibrated scores when calibrated)."""
        ids = np.asarray(topk.ids)
        scores = np.asarray(topk.scores)
        labels = [[self.name(i) for i in row.tolist() if i >= 0] for row in ids]
        probs = None if self.calibrator is None else np.asarray(self.calibrator(scores), np.float32)
        return Prediction(ids, scores, labels, probs)

    def predict(self, *, texts: Sequence[str] | None = None, features=None, k: int = 10) -> Prediction:
        """The top-``k`` of a batch of points, given as ``texts`` (raw-text models) or
        ``features`` (see :meth:`features`); exactly one of the two.

        Raises:
          ConfigError: neither or both given; ``features`` for a method that reads texts; ``k < 1``.
          DataError: inputs the model cannot read (see :meth:`features`, :meth:`featurise`).
        """
        if (texts is None) == (features is None):
            raise ConfigError("give exactly one of texts= or features=")
        if texts is not None:
            if isinstance(texts, str):
                raise DataError("texts", None, "expected a list of strings, got one string")
            X = self.featurise(texts)
        else:
            if self.needs_texts:
                raise ConfigError(f"--method {self.method.name} reads the raw texts; send texts, "
                                  f"not features")
            X = self.features(features)
        return self.result(self.topk(X, texts, k=k))

    def predict_one(self, *, text: str | None = None, features=None, k: int = 10) -> Prediction:
        """:meth:`predict` of one point (``text``, or one ``"f:v ..."`` string / ``[1, d]`` row)."""
        if text is not None:
            return self.predict(texts=[text], features=None if features is None else features, k=k)
        if isinstance(features, str):
            features = [features]
        return self.predict(features=features, k=k)


def parse_feature_rows(rows: Sequence[str], n_features: int) -> sp.csr_matrix:
    """``"f:v f:v"`` strings as ``csr f32[n, d]`` (sorted indices, stored zeros dropped),
    read as the lines of an XC features file are (:func:`jxmc.data.xc.read_sparse_matrix`).

    Raises:
      DataError: an item that is not a string; a malformed pair; a feature id outside
        ``[0, n_features)``; a duplicate id; a non-finite value. The message names
        ``features[i]`` (0-based).
    """
    from jxmc.data import xc

    ptr, ind, val = [0], [], []
    for i, row in enumerate(rows):
        if not isinstance(row, str):
            raise DataError(f"features[{i}]", None, "not a string of 'f:v' pairs")
        try:
            ids, vals = xc._parse_pairs(f"features[{i}]", None, row.split(), n_features, "feature")
        except DataError as e:
            raise DataError(f"features[{i}]", None, e.message) from None
        ind.extend(ids)
        val.extend(vals)
        ptr.append(len(ind))
    X = sp.csr_matrix((np.asarray(val, np.float32), np.asarray(ind, np.int64),
                       np.asarray(ptr, np.int64)), shape=(len(ptr) - 1, n_features))
    X.sort_indices()
    X.eliminate_zeros()
    return X
