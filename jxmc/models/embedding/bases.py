"""The label bases ``V: f32[L, r]`` of PLST and CPLST, exact or randomised.

* PLST (Tai & Lin 2012): the top right singular vectors of ``Z = Y - 1 mu^T``.
* CPLST (Chen & Lin 2012): the top eigenvectors of ``Z^T H Z``, ``H = X1 (X1^T X1
  + lam I)^{-1} X1^T`` the ridge hat matrix.

Exact (``eigh`` of a dense ``L x L`` matrix) when ``L <= exact_max_dim`` (and, for
CPLST, the ridge has its Cholesky factor); else randomised (Halko, Martinsson &
Tropp 2011, Algorithms 4.4 and 5.3) with ``Z`` and ``Z^T H Z`` as operators.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.models.embedding.core import (
    Config,
    Problem,
    dense_gram,
    dense_xtz,
    x_mul,
    xt_mul,
    z_mul,
    zt_mul,
)
from jxmc.models.embedding.ridge import Ridge, ridge_solve
from jxmc.ops import linalg
from jxmc.ops.linalg import mm


@functools.partial(jax.jit, static_argnames=("rank",))
def _exact_top(K, *, rank):
    return linalg.top_eigh(K, rank)


@functools.partial(jax.jit, static_argnames=("rank", "oversample"))
def _plst_randomized(p: Problem, key, *, rank, oversample, power_iters):
    op = linalg.LinearOperator(lambda B: z_mul(p, B), lambda U: zt_mul(p, U), (p.n, p.L))
    _, s, Vt = linalg.randomized_svd(op, rank, key=key, oversample=oversample,
                                     power_iters=power_iters)
    return s * s, Vt.T


def plst_basis(p: Problem, Y: sp.csr_matrix, rank: int, config: Config, key: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """PLST's label basis: the top ``rank`` right singular vectors of ``Z = Y - 1 mu^T``.

    Exact ``eigh`` of ``Z^T Z = Y^T Y - n mu mu^T`` when ``L <= exact_max_dim``,
    else the randomised SVD of ``Z`` as an operator.

    Returns:
      ``(w: f32[rank], V: f32[L, rank])``: the squared singular values
      (decreasing) and the orthonormal basis.
    """
    if p.L <= config.exact_max_dim:
        mu = np.asarray(p.mu, np.float64)
        K = dense_gram(Y) - (p.n * np.outer(mu, mu)).astype(np.float32)
        return _exact_top(jnp.asarray(K), rank=rank)
    return _plst_randomized(p, key, rank=rank, oversample=config.oversample,
                            power_iters=config.power_iters)


@functools.partial(jax.jit, static_argnames=("rank",))
def _cplst_exact(p: Problem, ridge: Ridge, xtz, *, rank):
    A = jax.scipy.linalg.solve_triangular(ridge.chol, xtz, lower=True)  # F^{-1} X1^T Z
    return linalg.top_eigh(mm(A.T, A), rank)


@functools.partial(jax.jit, static_argnames=("rank", "oversample"))
def _cplst_randomized(p: Problem, ridge: Ridge, key, *, rank, oversample, power_iters):
    def K(B):  # Z^T H Z B with H = X1 (X1^T X1 + lam I)^{-1} X1^T
        return zt_mul(p, x_mul(p, ridge_solve(p, ridge, xt_mul(p, z_mul(p, B)))))

    return linalg.randomized_eigh(K, p.L, rank, key=key, oversample=oversample,
                                  power_iters=power_iters)


def cplst_basis(p: Problem, X1: sp.csr_matrix, Y: sp.csr_matrix, ridge: Ridge, rank: int,
                config: Config, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """CPLST's label basis: the top ``rank`` eigenvectors of ``Z^T H Z``.

    ``H = X1 (X1^T X1 + lam I)^{-1} X1^T`` is never formed (it is ``n x n``):
    with ``F F^T = X1^T X1 + lam I`` (``F`` its lower Cholesky factor, ``d1 <=
    exact_max_dim``), ``Z^T H Z = A^T A`` with ``A = F^{-1} X1^T Z: f32[d1, L]``, whose ``eigh`` is
    exact when also ``L <= exact_max_dim``; otherwise ``B -> Z^T H Z B`` is an
    operator (the inner solve by Cholesky or CG) and the eigenvectors are
    randomised (Halko et al. 2011, Algorithms 4.4 and 5.3).

    Returns:
      ``(w: f32[rank], V: f32[L, rank])``: eigenvalues (decreasing), orthonormal basis.
    """
    if ridge.chol is not None and p.L <= config.exact_max_dim:
        return _cplst_exact(p, ridge, jnp.asarray(dense_xtz(p, X1, Y)), rank=rank)
    return _cplst_randomized(p, ridge, key, rank=rank, oversample=config.oversample,
                             power_iters=config.power_iters)

