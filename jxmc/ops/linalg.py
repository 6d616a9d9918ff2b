"""Linear algebra for the label-embedding methods (PLST, CPLST, LEML), in jitted JAX.

Four pieces, each a pure function of arrays:

* **Sparse products on device.**  A host CSR matrix becomes a :class:`Coo` of
  fixed-size chunks of non-zeros (:func:`coo_from_csr`); :func:`spmm` computes
  ``A @ B`` and :func:`spmm_t` computes ``A^T @ U`` with a ``lax.scan`` over the
  chunks, so memory stays ``chunk * p`` however many non-zeros ``A`` has.
* **Ridge solves** ``(G + lam I)^{-1} B``: by Cholesky when the Gram matrix ``G``
  is dense (:func:`ridge_cholesky`), or matrix-free by Jacobi-preconditioned
  conjugate gradients (:func:`cg`).
* **Randomised SVD and eigendecomposition** (Halko, Martinsson & Tropp,
  "Finding structure with randomness", SIAM Review 2011): the range of ``A`` is
  captured by ``Q = orth(A Omega)`` with a Gaussian ``Omega`` of ``rank +
  oversample`` columns, sharpened by randomised subspace iteration (their
  Algorithm 4.4); then the small problem is solved exactly: ``svd(Q^T A)``
  (Algorithm 5.1) or ``eigh(Q^T A Q)`` for a symmetric ``A`` (Algorithm 5.3).
* **Exact top eigenvectors** of a small dense symmetric matrix (:func:`top_eigh`).

A linear map is either a dense array or a :class:`LinearOperator` of two
jnp-pure functions, so the randomised routines run inside ``jax.jit`` for both.

Every product here asks for ``Precision.HIGHEST``: on TPU the default f32
matmul rounds to bf16 passes, which spoils Gram matrices and orthogonalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.ops.ids import pow2
from jxmc.ops.sparse import coo_matmul

HIGHEST = jax.lax.Precision.HIGHEST


def mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at full f32 precision on every backend."""
    return jnp.matmul(a, b, precision=HIGHEST)


# --------------------------------------------------------------------------- sparse products


class Coo(NamedTuple):
    """A sparse ``[m, n]`` matrix as chunks of non-zeros (device side).

    Attributes:
      rows: i32[n_chunks, T] row of each non-zero, in ``[0, m)``.
      cols: i32[n_chunks, T] column of each non-zero, in ``[0, n)``.
      vals: f32[n_chunks, T] values; padding entries are ``(0, 0, 0.0)``, so inert.

    ``n_chunks`` chunks of ``T`` non-zeros each; the shape ``(m, n)`` is kept by
    the caller (it is static under ``jit``).
    """

    rows: jax.Array
    cols: jax.Array
    vals: jax.Array

    @property
    def T(self) -> Coo:
        """The transpose: rows and columns swapped (no copy)."""
        return Coo(self.cols, self.rows, self.vals)


CHUNK = 1 << 18  # default most non-zeros per chunk of a Coo


def chunk_length(nnz: int, chunk: int = CHUNK) -> int:
    """``T``: the non-zeros per chunk that :func:`coo_from_csr` uses for ``nnz`` non-zeros."""
    return min(pow2(max(nnz, 1)), pow2(chunk))


def coo_from_csr(A: sp.spmatrix, *, chunk: int = CHUNK) -> Coo:
    """Host CSR ``f32[m, n]`` to a device :class:`Coo`.

    Args:
      A: any scipy sparse matrix (converted to CSR, f32).
      chunk: the most non-zeros per chunk; a matrix with fewer non-zeros gets one
        chunk of the next power of two (so few distinct shapes compile).

    Returns:
      :class:`Coo` with ``n_chunks * T >= nnz(A)``, ``T`` a power of two.
    """
    A = sp.csr_matrix(A, dtype=np.float32)
    nnz = A.nnz
    T = chunk_length(nnz, chunk)
    n_chunks = max(-(-nnz // T), 1)
    rows = np.zeros(n_chunks * T, np.int32)
    cols = np.zeros(n_chunks * T, np.int32)
    vals = np.zeros(n_chunks * T, np.float32)
    rows[:nnz] = np.repeat(np.arange(A.shape[0], dtype=np.int32), np.diff(A.indptr))
    cols[:nnz] = A.indices
    vals[:nnz] = A.data
    return Coo(*(jnp.asarray(a.reshape(n_chunks, T)) for a in (rows, cols, vals)))


def spmm(A: Coo, B: jax.Array, m: int) -> jax.Array:
    """``A @ B`` for a sparse ``A: [m, n]`` and a dense ``B: f32[n, p]``.

    Returns:
      ``f32[m, p]``, ``out[i] = sum_{(i, j, v) in A} v * B[j]``; one chunk of
      ``T * p`` gathered rows is live at a time (each chunk's product is
      :func:`jxmc.ops.sparse.coo_matmul`).  Use ``spmm(A.T, U, n)`` for ``A^T @ U``.
    """

    def body(acc, chunk):
        rows, cols, vals = chunk
        return acc + coo_matmul(rows, cols, vals, B, m), None

    out, _ = jax.lax.scan(body, jnp.zeros((m, B.shape[1]), B.dtype), (A.rows, A.cols, A.vals))
    return out


def spmm_t(A: Coo, U: jax.Array, n: int) -> jax.Array:
    """``A^T @ U`` for a sparse ``A: [m, n]`` and ``U: f32[m, p]``; returns ``f32[n, p]``."""
    return spmm(A.T, U, n)


# --------------------------------------------------------------------------- operators


class LinearOperator(NamedTuple):
    """A matrix ``A: f32[m, n]`` known by its products (jnp-pure functions).

    Attributes:
      matmul: ``B: f32[n, p] -> A @ B: f32[m, p]``.
      rmatmul: ``U: f32[m, p] -> A^T @ U: f32[n, p]``.
      shape: ``(m, n)``.
    """

    matmul: Callable[[jax.Array], jax.Array]
    rmatmul: Callable[[jax.Array], jax.Array]
    shape: tuple[int, int]


def as_operator(A: jax.Array | LinearOperator) -> LinearOperator:
    """A dense ``f32[m, n]`` array as a :class:`LinearOperator` (an operator is returned as is)."""
    if isinstance(A, LinearOperator):
        return A
    A = jnp.asarray(A)
    return LinearOperator(lambda B: mm(A, B), lambda U: mm(A.T, U), tuple(A.shape))


# --------------------------------------------------------------------------- ridge solves


def ridge_cholesky(G: jax.Array, lam: float | jax.Array) -> jax.Array:
    """The lower Cholesky factor ``chol`` of ``G + lam I`` (``chol chol^T = G + lam I``).

    Args:
      G: f32[d, d] symmetric positive semi-definite (a Gram matrix ``X^T X``).
      lam: ridge ``> 0``.

    Returns:
      ``chol: f32[d, d]`` lower triangular; solve with :func:`cho_solve`.
    """
    d = G.shape[0]
    G = 0.5 * (G + G.T)
    return jnp.linalg.cholesky(G + lam * jnp.eye(d, dtype=G.dtype))


def cho_solve(chol: jax.Array, B: jax.Array) -> jax.Array:
    """``(chol chol^T)^{-1} B`` for a lower-triangular ``chol: f32[d, d]`` and ``B: f32[d, p]``."""
    return jax.scipy.linalg.cho_solve((chol, True), B)


def cg(op: Callable[[jax.Array], jax.Array], B: jax.Array, X0: jax.Array | None = None, *,
       precond: jax.Array | None = None, iters: int = 100, tol: float = 1e-5,
       columnwise: bool = True) -> jax.Array:
    """Preconditioned conjugate gradients for ``op(X) = B`` with ``op`` symmetric positive definite.

    Args:
      op: ``f32[d, p] -> f32[d, p]``, symmetric positive definite in the
        Frobenius inner product.
      B: f32[d, p] right-hand sides.
      X0: f32[d, p] start (default zeros); from a warm start every iterate has a
        quadratic objective ``<X, op(X)>/2 - <B, X>`` no larger than the start's.
      precond: f32[d, p] (or broadcastable) positive diagonal ``diag``; the
        preconditioned residual is ``r / diag`` (Jacobi: ``diag = diag(op)``).
      iters: the most iterations.
      tol: stop when ``||r|| <= tol * ||B||`` (per column with ``columnwise``).
      columnwise: ``op`` acts on each column on its own (``op(X) = A X``), so
        every column runs its own CG recursion (independent step sizes);
        otherwise one CG over the whole ``[d, p]`` unknown (needed when ``op``
        mixes columns, e.g. ``X -> A X S + lam X``).

    Returns:
      ``X: f32[d, p]``.

    Reference: Hestenes & Stiefel (1952); Golub & Van Loan, Matrix
    Computations, Algorithm 11.5.1 (preconditioned CG).
    """
    axis = 0 if columnwise else None

    def dot(a, b):
        return jnp.sum(a * b, axis=axis, keepdims=columnwise)

    diag = jnp.ones((), B.dtype) if precond is None else precond
    X = jnp.zeros_like(B) if X0 is None else X0
    R = B - op(X)
    Zr = R / diag
    P = Zr
    rz = dot(R, Zr)
    bnorm2 = jnp.maximum(dot(B, B), jnp.finfo(B.dtype).tiny)

    def cond(state):
        i, _, R, _, _ = state
        return (i < iters) & jnp.any(dot(R, R) > (tol * tol) * bnorm2)

    def body(state):
        i, X, R, P, rz = state
        AP = op(P)
        pAp = dot(P, AP)
        alpha = jnp.where(pAp > 0, rz / jnp.where(pAp > 0, pAp, 1.0), 0.0)
        X = X + alpha * P
        R = R - alpha * AP
        Zr = R / diag
        rz_new = dot(R, Zr)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        return i + 1, X, R, Zr + beta * P, rz_new

    _, X, _, _, _ = jax.lax.while_loop(cond, body, (0, X, R, P, rz))
    return X


# --------------------------------------------------------------------------- decompositions


def _orth(A: jax.Array) -> jax.Array:
    return jnp.linalg.qr(A)[0]


def randomized_range(A: jax.Array | LinearOperator, size: int, *, key: jax.Array,
                     power_iters: int = 4) -> jax.Array:
    """An orthonormal basis ``Q: f32[m, size]`` of (nearly) the top ``size``-dimensional range of ``A``.

    Randomised subspace iteration (Halko et al. 2011, Algorithm 4.4):
    ``Q = orth(A Omega)``, then ``power_iters`` times ``Q = orth(A orth(A^T Q))``,
    with ``Omega: f32[n, size]`` standard normal.  Each pass raises the singular
    values to a higher power, so the basis concentrates on the top of the spectrum.
    """
    op = as_operator(A)
    omega = jax.random.normal(key, (op.shape[1], size), jnp.float32)
    Q = _orth(op.matmul(omega))
    return jax.lax.fori_loop(0, power_iters, lambda _, Q: _orth(op.matmul(_orth(op.rmatmul(Q)))),
                             Q)


def randomized_svd(A: jax.Array | LinearOperator, rank: int, *, key: jax.Array,
                   oversample: int = 10, power_iters: int = 4
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The top ``rank`` singular triplets of ``A: f32[m, n]`` (Halko et al. 2011, Alg. 4.4 + 5.1).

    Args:
      A: a dense array or a :class:`LinearOperator`.
      rank: ``r``, at most ``min(m, n)``.
      key: PRNG key of the Gaussian test matrix.
      oversample: extra columns ``p`` of the sketch (``r + p`` in all, capped at
        ``min(m, n)``); 5-10 is the paper's advice.
      power_iters: subspace iterations ``q``; the error bound decays like
        ``(sigma_{r+1} / sigma_r)^(2q+1)``.

    Returns:
      ``U: f32[m, r]``, ``s: f32[r]`` (decreasing), ``Vt: f32[r, n]`` with
      ``A ~= U diag(s) Vt``.

    Raises:
      ValueError: ``rank`` outside ``[1, min(m, n)]``.
    """
    op = as_operator(A)
    m, n = op.shape
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"rank must be in [1, {min(m, n)}], got {rank}")
    size = min(rank + oversample, m, n)
    Q = randomized_range(op, size, key=key, power_iters=power_iters)  # [m, l]
    Bt = op.rmatmul(Q)  # [n, l] = (Q^T A)^T
    Ub, s, Vbt = jnp.linalg.svd(Bt.T, full_matrices=False)  # [l, l], [l], [l, n]
    return mm(Q, Ub[:, :rank]), s[:rank], Vbt[:rank]


def randomized_eigh(A: jax.Array | Callable[[jax.Array], jax.Array], n: int, rank: int, *,
                    key: jax.Array, oversample: int = 10, power_iters: int = 2
                    ) -> tuple[jax.Array, jax.Array]:
    """The top ``rank`` eigenpairs of a symmetric positive semi-definite ``A: f32[n, n]``.

    Randomised subspace iteration on ``A`` itself (``A = A^T``), then the exact
    eigendecomposition of the small projected matrix ``Q^T A Q`` (Halko et al.
    2011, Algorithm 4.4 with ``A^T = A``, and Algorithm 5.3).

    Args:
      A: dense ``f32[n, n]`` or a jnp-pure product ``B: f32[n, p] -> A @ B``.
      n: the order of ``A``.
      rank: ``r`` in ``[1, n]``.
      key, oversample, power_iters: as :func:`randomized_svd`; each pass costs
        one product with ``A``.

    Returns:
      ``w: f32[r]`` eigenvalues (decreasing), ``V: f32[n, r]`` orthonormal eigenvectors.

    Raises:
      ValueError: ``rank`` outside ``[1, n]``.
    """
    if not 1 <= rank <= n:
        raise ValueError(f"rank must be in [1, {n}], got {rank}")
    matmul = (lambda B: mm(A, B)) if not callable(A) else A
    size = min(rank + oversample, n)
    Q = _orth(matmul(jax.random.normal(key, (n, size), jnp.float32)))
    Q = jax.lax.fori_loop(0, power_iters, lambda _, Q: _orth(matmul(Q)), Q)
    S = mm(Q.T, matmul(Q))
    w, E = jnp.linalg.eigh(0.5 * (S + S.T))
    order = jnp.argsort(-w)[:rank]
    return w[order], mm(Q, E[:, order])


def top_eigh(S: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    """The top ``rank`` eigenpairs of a dense symmetric ``S: f32[n, n]`` (exact, ``eigh``).

    Returns:
      ``w: f32[rank]`` decreasing, ``V: f32[n, rank]`` orthonormal.
    """
    w, E = jnp.linalg.eigh(0.5 * (S + S.T))
    order = jnp.argsort(-w)[:rank]
    return w[order], E[:, order]
