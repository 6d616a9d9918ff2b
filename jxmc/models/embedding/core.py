"""What PLST, CPLST and LEML share: the problem on device, its products, decoding.

The three methods fit the same model, a rank-``r`` linear map from features to
label scores,

    scores(x) = (x^T W + b) V^T + mu,     W: f32[d, r], b: f32[r], V: f32[L, r], mu: f32[L],

and differ in how they choose ``V`` and ``W``:

* ``plst`` (:mod:`jxmc.models.embedding.plst`): ``V`` = the top right singular vectors of
  the mean-shifted labels ``Z = Y - 1 mu^T``, then ridge ``X -> Z V``.
* ``cplst`` (:mod:`jxmc.models.embedding.cplst`): ``V`` = the top eigenvectors of
  ``Z^T H Z`` with ``H`` the ridge hat matrix, then the same ridge.
* ``leml`` (:mod:`jxmc.models.embedding.leml`): ``W V^T`` minimises the regularised squared
  loss jointly, by alternating minimisation.

A constant feature ``bias`` is appended to ``X`` (as liblinear does), so
``d1 = d + 1`` in the fitted problem; its row of the fitted ``W`` becomes ``b``.

Data flow: CSR stays on the host; ``X`` and ``Y`` go to the device as chunked
:class:`jxmc.ops.linalg.Coo` and every product with ``Z`` is taken without
forming it, ``Z B = Y B - 1 (mu^T B)`` and ``Z^T U = Y^T U - mu (1^T U)``.
Where a dimension is at most ``exact_max_dim`` its Gram matrix (``X^T X``,
``Y^T Y``: exact sparse products on the host with scipy) is dense and the
decompositions are exact (Cholesky, ``eigh``); above it the methods go
matrix-free: conjugate gradients for the ridge (:mod:`jxmc.models.embedding.ridge`)
and randomised SVD/eigh (Halko et al. 2011) for the label basis
(:mod:`jxmc.models.embedding.bases`).  All numerical cores are jitted JAX.

Here: the options (:class:`Config`), the problem on device (:func:`setup_problem`,
:class:`Problem`) and its products with ``X1`` and ``Z``, the saved parameters
(:func:`pack_params`), and prediction (:func:`prepare` lays the parameters out
on device once, :func:`predict` decodes them).

Memory: the methods are for small and medium ``L``.  :func:`check_memory`
refuses (:class:`jxmc.errors.ConfigError`) a problem whose parameters
(``d r + L r``), work arrays (``n (r + p)``), dense Gram matrices or batch of
prediction scores (``predict_batch_size * L``) exceed ``memory_budget_gb``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.models.base import Prepared
from jxmc.ops import linalg
from jxmc.ops.ids import pad_topk
from jxmc.ops.linalg import Coo, mm
from jxmc.ops.sparse import add_bias
from jxmc.types import TopK


@dataclass(frozen=True)
class Config:
    # r: dimension of the label embedding (clipped to min(L, n))
    rank: int = 100
    # lambda: ridge of the regression from features to the embedding (and of CPLST's hat matrix)
    ridge: float = 1.0
    # value of the constant feature appended to every row (0 = no bias feature)
    bias: float = 1.0
    # shift Y by its column mean before the projection (PLST's "shift"); the mean is added back
    center: bool = True
    # d + 1 or L up to this: dense Gram matrices and exact Cholesky/eigh; above: CG and randomised SVD
    exact_max_dim: int = 4096
    # randomised SVD: extra sketch columns p beyond r (Halko et al. 2011, Section 4.2)
    oversample: int = 10
    # randomised SVD: subspace iterations q (Halko et al. 2011, Algorithm 4.4)
    power_iters: int = 4
    # conjugate gradients (matrix-free ridge): most iterations per solve
    cg_iters: int = 200
    # conjugate gradients: stop at ||residual|| <= cg_tol * ||rhs|| (per column)
    cg_tol: float = 1e-4
    # refuse a problem whose parameters, work arrays and score batch exceed this (GiB)
    memory_budget_gb: float = 4.0
    # points per prediction step (the score matrix is predict_batch_size x L); may change at
    # prediction (PREDICT_FIELDS)
    predict_batch_size: int = 1024


# The Config fields that prediction may change (``jxmc predict --set``): they affect
# prediction only.
PREDICT_FIELDS = ("predict_batch_size",)


# --------------------------------------------------------------------------- the problem


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["X", "Y", "mu", "colsum", "diag", "ysq"],
                   meta_fields=["n", "d1", "L"])
@dataclass(frozen=True)
class Problem:
    """A training problem on device.

    Attributes:
      X: :class:`Coo` of ``X1 = [X, bias 1]``, ``[n, d1]``.
      Y: :class:`Coo` of ``Y``, ``[n, L]``.
      mu: f32[L] column means of ``Y`` (zeros when not centring).
      colsum: f32[d1] column sums of ``X1`` (``X1^T 1``).
      diag: f32[d1] the diagonal of ``X1^T X1`` (Jacobi preconditioner).
      ysq: f32[] ``||Z||_F^2``.
      n, d1, L: sizes (static).
    """

    X: Coo
    Y: Coo
    mu: jax.Array
    colsum: jax.Array
    diag: jax.Array
    ysq: jax.Array
    n: int
    d1: int
    L: int


def effective_rank(config: Config, n: int, L: int) -> int:
    """``r = min(config.rank, L, n)`` (at least 1): ``Z`` has no more directions.

    Raises:
      ConfigError: ``rank < 1``.
    """
    if config.rank < 1:
        raise ConfigError(f"rank must be >= 1, got {config.rank}")
    return max(min(config.rank, L, n), 1)


def check_config(config: Config, name: str) -> None:
    """Raises :class:`ConfigError` for out-of-range fields."""
    if config.ridge <= 0:
        raise ConfigError(f"{name}: ridge must be > 0, got {config.ridge}")
    if config.bias < 0:
        raise ConfigError(f"{name}: bias must be >= 0, got {config.bias}")
    for field in ("oversample", "power_iters", "cg_iters"):
        if getattr(config, field) < 0:
            raise ConfigError(f"{name}: {field} must be >= 0, got {getattr(config, field)}")
    if config.predict_batch_size < 1:
        raise ConfigError(f"{name}: predict_batch_size must be >= 1")


def memory_bytes(n: int, d1: int, L: int, r: int, config: Config, nnz: int = 0
                 ) -> dict[str, int]:
    """The bytes a fit and a prediction hold at once, by part (f32 and i32 entries).

    Args:
      n, d1, L, r: points, features (with the bias column), labels, rank.
      nnz: non-zeros of ``X1`` plus those of ``Y``.

    Returns:
      ``{"parameters": 4 (d1 r + L r),
      "data": 12 nnz + 4 T l`` (the device COO and one chunk of ``T <= 2^18``
      gathered rows), ``"work": 4 (3 n l + 6 d1 l)`` (sketches and CG vectors,
      ``l = min(r + oversample, L)``), ``"gram": 4 (2 d1^2 [d1 <= E] + L^2 [L <= E]
      + d1 L [both])`` with ``E = exact_max_dim``, ``"scores": 4 * 2 *
      predict_batch_size * L}``.
    """
    E = config.exact_max_dim
    sketch = min(r + config.oversample, L)
    gram = 0
    if d1 <= E:
        gram += 2 * d1 * d1
    if L <= E:
        gram += L * L
    if d1 <= E and L <= E:
        gram += d1 * L
    chunk = linalg.chunk_length(nnz)
    return {"parameters": 4 * (d1 * r + L * r), "data": 12 * nnz + 4 * chunk * sketch,
            "work": 4 * (3 * n + 6 * d1) * sketch, "gram": 4 * gram,
            "scores": 4 * 2 * config.predict_batch_size * L}


def check_memory(name: str, n: int, d1: int, L: int, r: int, config: Config, nnz: int = 0
                 ) -> None:
    """Refuses a problem over ``config.memory_budget_gb``.

    Raises:
      ConfigError: the sum of :func:`memory_bytes` exceeds the budget; the
        message names the parts and what to change.
    """
    parts = memory_bytes(n, d1, L, r, config, nnz)
    need = sum(parts.values())
    if need > config.memory_budget_gb * 2**30:
        detail = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in parts.items())
        raise ConfigError(
            f"{name} keeps dense rank-r factors: d={d1 - (config.bias != 0)} features, "
            f"L={L} labels, rank r={r}, n={n} points need {need / 2**30:.2f} GiB ({detail} GiB), "
            f"over the budget of {config.memory_budget_gb:g} GiB; lower --set rank=, "
            f"predict_batch_size= or exact_max_dim=, raise --set memory_budget_gb=, or use a "
            f"tree method (--method xr-linear) for large L")


def setup_problem(X: sp.spmatrix, Y: sp.spmatrix, config: Config, name: str
                  ) -> tuple[Problem, sp.csr_matrix, sp.csr_matrix, int]:
    """Validates the inputs and puts the training problem on device.

    Args:
      X: ``csr f32[n, d]`` features.
      Y: ``csr f32[n, L]`` labels.

    Returns:
      ``(problem, X1, Y, r)``: the device :class:`Problem`, the host CSR ``X1 =
      [X, bias 1]`` (``X`` as CSR f32 when ``bias == 0``: no bias column) and ``Y``
      (for exact Gram matrices), and the rank ``r``.

    Raises:
      ConfigError: bad options, a rank below 1, or over the memory budget.
      ValueError: ``X`` and ``Y`` have different row counts.
    """
    check_config(config, name)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    X1 = add_bias(X, config.bias, sort_indices=False) if config.bias != 0 else sp.csr_matrix(X, dtype=np.float32)
    Yc = sp.csr_matrix(Y, dtype=np.float32)
    n, d1 = X1.shape
    L = Yc.shape[1]
    r = effective_rank(config, n, L)
    check_memory(name, n, d1, L, r, config, X1.nnz + Yc.nnz)
    mu = (np.asarray(Yc.sum(axis=0), np.float64).ravel() / max(n, 1)) if config.center else \
        np.zeros(L)
    ysq = float(np.square(Yc.data, dtype=np.float64).sum() - n * np.square(mu).sum())
    problem = Problem(
        X=linalg.coo_from_csr(X1), Y=linalg.coo_from_csr(Yc),
        mu=jnp.asarray(mu, jnp.float32),
        colsum=jnp.asarray(np.asarray(X1.sum(axis=0)).ravel(), jnp.float32),
        diag=jnp.asarray(np.asarray(X1.multiply(X1).sum(axis=0)).ravel(), jnp.float32),
        ysq=jnp.float32(ysq), n=n, d1=d1, L=L)
    return problem, X1, Yc, r


def dense_gram(A: sp.csr_matrix) -> np.ndarray:
    """``A^T A`` as a dense f32 array (an exact sparse product on the host)."""
    return np.asarray((A.T @ A).toarray(), np.float32)


def dense_xtz(p: Problem, X1: sp.csr_matrix, Y: sp.csr_matrix) -> np.ndarray:
    """``X1^T Z = X1^T Y - (X1^T 1) mu^T`` as a dense ``f32[d1, L]`` (sparse product on the host)."""
    xtz = np.asarray((X1.T @ Y).toarray(), np.float32)
    xtz -= np.outer(np.asarray(p.colsum), np.asarray(p.mu)).astype(np.float32)
    return xtz


# --------------------------------------------------------------------------- products with Z


def x_mul(p: Problem, B: jax.Array) -> jax.Array:
    """``X1 @ B``: ``f32[d1, q] -> f32[n, q]``."""
    return linalg.spmm(p.X, B, p.n)


def xt_mul(p: Problem, U: jax.Array) -> jax.Array:
    """``X1^T @ U``: ``f32[n, q] -> f32[d1, q]``."""
    return linalg.spmm_t(p.X, U, p.d1)


def z_mul(p: Problem, B: jax.Array) -> jax.Array:
    """``Z @ B = Y B - 1 (mu^T B)``: ``f32[L, q] -> f32[n, q]``."""
    return linalg.spmm(p.Y, B, p.n) - mm(p.mu[None, :], B)


def zt_mul(p: Problem, U: jax.Array) -> jax.Array:
    """``Z^T @ U = Y^T U - mu (1^T U)``: ``f32[n, q] -> f32[L, q]``."""
    return linalg.spmm_t(p.Y, U, p.L) - p.mu[:, None] * U.sum(axis=0, keepdims=True)


# --------------------------------------------------------------------------- params, decoding


def pack_params(W1: jax.Array, V: jax.Array, mu: jax.Array, d: int, bias: float) -> dict:
    """The saved parameters: ``W: f32[d, r]``, ``b: f32[r]``, ``V: f32[L, r]``, ``mu: f32[L]``.

    ``W1: f32[d1, r]`` is split into the feature rows and the bias row (times ``bias``).
    """
    W1 = np.asarray(W1, np.float32)
    b = W1[d] * bias if W1.shape[0] > d else np.zeros(W1.shape[1], np.float32)
    return {"W": np.ascontiguousarray(W1[:d]), "b": np.asarray(b, np.float32),
            "V": np.asarray(V, np.float32), "mu": np.asarray(mu, np.float32)}


@functools.partial(jax.jit, static_argnames=("k", "n"))
def _decode_topk(W, b, V, mu, X: Coo, *, k: int, n: int):
    P = linalg.spmm(X, W, n) + b  # [n, r]
    scores = mm(P, V.T) + mu  # [n, L]
    s, i = jax.lax.top_k(scores, k)
    return i.astype(jnp.int32), s


def prepare(params: dict, config: Config, mesh=None) -> Prepared:
    """The parameters on device for :func:`predict`: ``state = (W, b, V, mu)`` as
    ``jax.Array`` (shapes of :func:`pack_params`).  ``mesh`` is None (one device)."""
    return Prepared(params, config, mesh, _layout(params))


def _layout(params: dict) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(params[key]) for key in ("W", "b", "V", "mu"))


def predict(model: Prepared, X: sp.spmatrix, config: Config, *, k: int,
            name: str = "label embedding") -> TopK:
    """Top-``k`` labels by the decoded scores ``(x^T W + b) V^T + mu``.

    Scores of all ``L`` labels are computed in batches of
    ``config.predict_batch_size`` rows (``f32[batch, L]``) and reduced with
    ``lax.top_k``.

    Args:
      model: from :func:`prepare`, of ``{"W": f32[d, r], "b": f32[r], "V": f32[L, r],
        "mu": f32[L]}`` (a ``state`` of None, as another method's default ``prepare``
        leaves it, is laid out here).
      X: ``csr f32[n, d]``.
      config: the training config, ``predict_batch_size`` possibly changed.
      k: predictions per point (``>= 1``, checked by :func:`jxmc.models.base.method`);
        beyond ``L`` they are padded with id -1 and score -inf.
      name: the method, for error messages.

    Returns:
      :class:`TopK` of numpy arrays ``ids: i32[n, k]``, ``scores: f32[n, k]``.

    Raises:
      ConfigError: ``predict_batch_size < 1``, or the score batch exceeds
        ``memory_budget_gb``.
      ValueError: ``X`` has a different feature count than ``W``.
    """
    W, b, V, mu = model.state if model.state is not None else _layout(model.params)
    d, L = W.shape[0], V.shape[0]
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} features but the model was fitted on {d}")
    bs = config.predict_batch_size
    if bs < 1:
        raise ConfigError(f"{name}: predict_batch_size must be >= 1")
    if 8 * bs * L > config.memory_budget_gb * 2**30:
        raise ConfigError(f"{name}: a batch of {bs} x {L} scores exceeds the budget of "
                          f"{config.memory_budget_gb:g} GiB; lower --set predict_batch_size=")
    kk = min(k, L)
    ids, scores = [], []
    for begin in range(0, X.shape[0], bs):
        Xb = X[begin:begin + bs]
        rows = Xb.shape[0]
        if rows < bs:
            Xb = sp.vstack([Xb, sp.csr_matrix((bs - rows, d), dtype=np.float32)], format="csr")
        i, s = _decode_topk(W, b, V, mu, linalg.coo_from_csr(Xb), k=kk, n=bs)
        ids.append(np.asarray(i)[:rows])
        scores.append(np.asarray(s)[:rows])
    ids = np.concatenate(ids) if ids else np.zeros((0, kk), np.int32)
    scores = np.concatenate(scores) if scores else np.zeros((0, kk), np.float32)
    return TopK(*pad_topk(ids, scores, k))


def predictor(name: str):
    """The raw ``predict(model, X, config, *, k)`` of the method called ``name``
    (:func:`predict`, its errors naming that method)."""
    def predict_method(model: Prepared, X: sp.spmatrix, config: Config, *, k: int) -> TopK:
        return predict(model, X, config, k=k, name=name)
    return predict_method
