"""``--method cplst``: Conditional Principal Label Space Transformation.

Chen & Lin, "Feature-aware label space dimension reduction for multi-label
classification", NIPS 2012, Section 3.  PLST chooses the label basis from the
labels alone; CPLST chooses it so that the codes are also *predictable* from
the features.  With a ridge regression ``W = (X1^T X1 + lam I)^{-1} X1^T Z V``
as the learner and orthonormal ``V: f32[L, r]``, the upper bound on the
training error (prediction error of the codes plus the encoding error)

    ||X1 W - Z V||_F^2 + ||Z - Z V V^T||_F^2

is minimised by maximising ``tr(V^T Z^T H Z V)`` with the hat matrix
``H = X1 (X1^T X1 + lam I)^{-1} X1^T``: ``V`` holds the top ``r`` eigenvectors of
``Z^T H Z`` (``Z = Y - 1 mu^T`` as in PLST).  ``H`` (``n x n``) is never formed:
with the lower Cholesky factor ``F`` of ``F F^T = X1^T X1 + lam I`` (``d + 1 <=
exact_max_dim``) ``Z^T H Z = A^T A`` for ``A = F^{-1} X1^T Z``; otherwise
``B -> Z^T H Z B`` is applied by conjugate gradients and the eigenvectors are
randomised (Halko et al. 2011).  Then regress and decode as PLST
(:mod:`jxmc.models.embedding.plst`).

Prediction holds ``f32[predict_batch_size, L]``: for small and medium ``L``;
refuses (:class:`jxmc.errors.ConfigError`) a problem over ``memory_budget_gb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import scipy.sparse as sp

from jxmc.models import base
from jxmc.models.embedding import core
from jxmc.models.embedding.bases import cplst_basis
from jxmc.models.embedding.ridge import make_ridge, regress


@dataclass(frozen=True)
class Config(core.Config):
    """CPLST's options: those of :class:`jxmc.models.embedding.core.Config`;
    ``ridge`` is both the hat matrix's and the regression's ``lam``.

    Defaults (rank 100, ridge 1.0) reach P@1 63.5 on Bibtex and 66.0 on Delicious
    (experiments/results/label_embedding.md).
    """


def _fit(X: sp.csr_matrix, Y: sp.csr_matrix, config: Config, *, seed: int, ckpt,
         progress: bool) -> dict:
    """Fits CPLST (closed form: one eigendecomposition and one ridge solve).

    Args:
      X: ``csr f32[n, d]`` features (rows L2-normalised).
      Y: ``csr f32[n, L]`` positives.
      config: :class:`Config`.
      seed: seeds the randomised eigendecomposition (when ``d + 1`` or ``L``
        exceeds ``exact_max_dim``).
      ckpt: unused (no iterations to resume).
      progress: unused.

    Returns:
      ``{"W": f32[d, r], "b": f32[r], "V": f32[L, r], "mu": f32[L]}``.

    Raises:
      ConfigError: bad options or over ``memory_budget_gb``.
      ValueError: ``X`` and ``Y`` have different row counts.
    """
    del ckpt, progress
    p, X1, Yc, r = core.setup_problem(X, Y, config, "cplst")
    ridge = make_ridge(X1, config)
    _, V = cplst_basis(p, X1, Yc, ridge, r, config, jax.random.PRNGKey(seed))
    W1 = regress(p, ridge, V)
    return core.pack_params(W1, V, p.mu, X.shape[1], config.bias)



METHOD = base.method(
    "cplst", Config, fit=_fit, predict=core.predictor("cplst"), prepare=core.prepare, needs_texts=False,
    supports_mesh=False, predict_fields=core.PREDICT_FIELDS,
    summary="conditional PLST: label basis from Z^T H Z, ridge to the codes (Chen & Lin 2012)")
fit = METHOD.fit  # fit(X, Y, config=None, *, seed=0, ckpt=None, progress=True)
predict = METHOD.predict  # predict(params or prepared, X, config=None, *, k=10)
