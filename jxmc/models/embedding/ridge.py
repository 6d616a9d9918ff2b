"""The ridge regression from features to label codes, shared by PLST and CPLST.

``W = argmin_W ||X1 W - Z V||^2 + lam ||W||^2 = (X1^T X1 + lam I)^{-1} X1^T Z V``
(Tai & Lin 2012, Section 3, with linear regression as the base learner).  The
inverse is applied through the lower Cholesky factor of the dense ``X1^T X1 + lam
I`` when ``d1 <= exact_max_dim``, else matrix-free by conjugate gradients with the
Jacobi preconditioner (:func:`jxmc.ops.linalg.cg`).  CPLST's hat matrix ``H = X1
(X1^T X1 + lam I)^{-1} X1^T`` is applied with the same solve
(:mod:`jxmc.models.embedding.bases`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import scipy.sparse as sp

from jxmc.models.embedding.core import Config, Problem, dense_gram, x_mul, xt_mul, z_mul
from jxmc.ops import linalg


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["chol", "lam", "cg_iters", "cg_tol"], meta_fields=[])
@dataclass(frozen=True)
class Ridge:
    """How ``(X1^T X1 + lam I)^{-1}`` is applied.

    Attributes:
      chol: f32[d1, d1] lower Cholesky factor of ``X1^T X1 + lam I`` (exact), or
        None (matrix-free conjugate gradients with the Jacobi preconditioner).
      lam, cg_iters, cg_tol: scalars (traced, so changing them does not recompile).
    """

    chol: jax.Array | None
    lam: jax.Array
    cg_iters: jax.Array
    cg_tol: jax.Array


def make_ridge(X1: sp.csr_matrix, config: Config) -> Ridge:
    """Cholesky of the dense ``X1^T X1 + lam I`` when ``d1 <= exact_max_dim``, else CG."""
    chol = None
    if X1.shape[1] <= config.exact_max_dim:
        chol = _cholesky(jnp.asarray(dense_gram(X1)), config.ridge)
    return Ridge(chol, jnp.float32(config.ridge), jnp.int32(config.cg_iters),
                 jnp.float32(config.cg_tol))


@jax.jit
def _cholesky(G, lam):
    return linalg.ridge_cholesky(G, lam)


def ridge_solve(p: Problem, ridge: Ridge, B: jax.Array) -> jax.Array:
    """``(X1^T X1 + lam I)^{-1} B`` for ``B: f32[d1, q]`` (jnp-pure; call inside ``jit``)."""
    if ridge.chol is not None:
        return linalg.cho_solve(ridge.chol, B)

    def op(W):
        return xt_mul(p, x_mul(p, W)) + ridge.lam * W

    return linalg.cg(op, B, precond=(p.diag + ridge.lam)[:, None], iters=ridge.cg_iters,
                     tol=ridge.cg_tol, columnwise=True)


@jax.jit
def regress(p: Problem, ridge: Ridge, V: jax.Array) -> jax.Array:
    """The ridge regression of the embedding ``Z V`` on ``X1``.

    ``W = argmin_W ||X1 W - Z V||^2 + lam ||W||^2 = (X1^T X1 + lam I)^{-1} X1^T Z V``
    (Tai & Lin 2012, Section 3, with linear regression as the base learner).

    Args:
      V: f32[L, r].

    Returns:
      ``W: f32[d1, r]``.
    """
    return ridge_solve(p, ridge, xt_mul(p, z_mul(p, V)))

