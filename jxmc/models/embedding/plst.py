"""``--method plst``: Principal Label Space Transformation.

Tai & Lin, "Multilabel classification with principal label space
transformation", Neural Computation 24(9), 2012, Section 3 (the PLST algorithm):

1. shift the labels by their mean, ``Z = Y - 1 mu^T`` with ``mu = Y^T 1 / n``;
2. take the top ``r`` right singular vectors ``V: f32[L, r]`` of ``Z`` (the
   principal directions of the label space; ``Z V`` is the best rank-``r``
   projection of the labels in the squared (Hamming-bounding) error);
3. learn a ridge regression from features to the codes ``Z V``:
   ``W = (X1^T X1 + lam I)^{-1} X1^T Z V: f32[d + 1, r]`` (``X1`` is ``X`` with a
   constant bias feature);
4. decode ``scores(x) = (x^T W + b) V^T + mu`` and rank.  The paper rounds the
   decoded vector to ``{0, 1}``; for ranking metrics (P@k) the continuous scores
   are ranked instead, and the top ``k`` come from ``lax.top_k`` over all ``L``.

With ``r = L`` and ``lam -> 0`` the scores equal those of least-squares
one-vs-rest regression (``V V^T = I``).

Costs: the basis is an exact ``eigh`` of ``Z^T Z`` (``L <= exact_max_dim``) or
a randomised SVD of ``Z`` (Halko et al. 2011); the regression a Cholesky solve
(``d + 1 <= exact_max_dim``) or conjugate gradients.  Prediction holds
``f32[predict_batch_size, L]``: the method is for small and medium ``L``, and
refuses (:class:`jxmc.errors.ConfigError`) a problem over ``memory_budget_gb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import scipy.sparse as sp

from jxmc.models import base
from jxmc.models.embedding import core
from jxmc.models.embedding.bases import plst_basis
from jxmc.models.embedding.ridge import make_ridge, regress


@dataclass(frozen=True)
class Config(core.Config):
    """PLST's options: those of :class:`jxmc.models.embedding.core.Config`.

    Defaults (rank 100, ridge 1.0) reach P@1 62.6 on Bibtex and 65.8 on Delicious
    (experiments/results/label_embedding.md).
    """


def _fit(X: sp.csr_matrix, Y: sp.csr_matrix, config: Config, *, seed: int, ckpt,
         progress: bool) -> dict:
    """Fits PLST (closed form: one SVD and one ridge solve).

    Args:
      X: ``csr f32[n, d]`` features (rows L2-normalised).
      Y: ``csr f32[n, L]`` positives.
      config: :class:`Config`.
      seed: seeds the randomised SVD (used only when ``L > exact_max_dim``).
      ckpt: unused (the fit has no iterations to resume).
      progress: unused.

    Returns:
      ``{"W": f32[d, r], "b": f32[r], "V": f32[L, r], "mu": f32[L]}``.

    Raises:
      ConfigError: bad options or over ``memory_budget_gb``.
      ValueError: ``X`` and ``Y`` have different row counts.
    """
    del ckpt, progress
    p, X1, Yc, r = core.setup_problem(X, Y, config, "plst")
    _, V = plst_basis(p, Yc, r, config, jax.random.PRNGKey(seed))
    ridge = make_ridge(X1, config)
    W1 = regress(p, ridge, V)
    return core.pack_params(W1, V, p.mu, X.shape[1], config.bias)



METHOD = base.method(
    "plst", Config, fit=_fit, predict=core.predictor("plst"), prepare=core.prepare, needs_texts=False,
    supports_mesh=False, predict_fields=core.PREDICT_FIELDS,
    summary="principal label space transformation: SVD of Y, ridge to the codes (Tai & Lin 2012)")
fit = METHOD.fit  # fit(X, Y, config=None, *, seed=0, ckpt=None, progress=True)
predict = METHOD.predict  # predict(params or prepared, X, config=None, *, k=10)
