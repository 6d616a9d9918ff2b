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
with the Cholesky factor ``C C^T = X1^T X1 + lam I`` (``d + 1 <=
exact_max_dim``) ``Z^T H Z = A^T A`` for ``A = C^{-1} X1^T Z``; otherwise
``B -> Z^T H Z B`` is applied by conjugate gradients and the eigenvectors are
randomised (Halko et al. 2011).  Then regress and decode as PLST
(:mod:`jxmc.models.plst`).

Prediction holds ``f32[predict_batch_size, L]``: for small and medium ``L``;
refuses (:class:`jxmc.errors.ConfigError`) a problem over ``memory_budget_gb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import scipy.sparse as sp

from jxmc.models import label_embedding as le
from jxmc.models.base import Method
from jxmc.types import TopK


@dataclass(frozen=True)
class Config(le.Config):
    """CPLST's options: those of :class:`jxmc.models.label_embedding.Config`;
    ``ridge`` is both the hat matrix's and the regression's ``lam``.

    Defaults (rank 100, ridge 1.0) reach P@1 63.5 on Bibtex and 66.0 on Delicious
    (experiments/results/label_embedding.md).
    """


def fit(X: sp.csr_matrix, Y: sp.csr_matrix, config: Config = Config(), *, seed: int = 0,
        ckpt=None, progress: bool = True) -> dict:
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
    p, X1, Yc, r = le.prepare(X, Y, config, "cplst")
    ridge = le.make_ridge(X1, config)
    _, V = le.cplst_basis(p, X1, Yc, ridge, r, config, jax.random.PRNGKey(seed))
    W1 = le.regress(p, ridge, V)
    return le.pack_params(W1, V, p.mu, X.shape[1], config.bias)


def predict(params: dict, X: sp.csr_matrix, config: Config = Config(), *, k: int = 10) -> TopK:
    """Top-``k`` labels; see :func:`jxmc.models.label_embedding.predict`."""
    return le.predict(params, X, config, k=k, name="cplst")


METHOD = Method("cplst", Config, fit, predict,
                "conditional PLST: label basis from Z^T H Z, ridge to the codes (Chen & Lin 2012)")
