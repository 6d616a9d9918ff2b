"""``--method cs``: multi-label prediction via compressed sensing.

Hsu, Kakade, Langford & Zhang, "Multi-label prediction via compressed
sensing", NeurIPS 2009, Section 3 (the reduction, Figure 1: the training and
the prediction algorithm; the compression functions and the reconstruction
algorithms it admits, OMP among them):

1. draw a random compression matrix ``A: f32[m, L]`` with ``m << L`` and
   compress every label vector, ``z = A y: f32[m]`` (``y in {0, 1}^L`` is
   sparse, so ``z`` determines it: compressed sensing);
2. learn ``m`` regressors from the features to the compressed labels; here one
   ridge regression ``W = (X1^T X1 + lam I)^{-1} X1^T Y A^T: f32[d + 1, m]``
   (``X1`` is ``X`` with a constant bias feature; the solvers of PLST,
   :mod:`jxmc.models.embedding.ridge`: Cholesky or conjugate gradients);
3. predict ``z_hat = x^T W + b`` and reconstruct a sparse label vector from it
   with a sparse recovery algorithm: orthogonal matching pursuit (OMP; Pati et
   al. 1993; Tropp & Gilbert, IEEE Trans. Inf. Theory 2007) run for a fixed ``s`` iterations
   (``sparsity``), :func:`omp`;
4. rank the labels by the recovered vector ``y_hat`` (``s`` non-zeros); the
   labels outside its support (value 0) follow in the order of their
   correlation with the prediction, ``A^T z_hat`` (the paper reports P@k over
   the recovered vector; the tie-break only orders the zeros).

The Extreme Classification Repository's CS row (Bibtex P@1/3/5
58.87/33.53/23.72, Delicious 61.36/56.46/52.07) is this reduction as run for the
comparisons of SLEEC (Bhatia et al., NeurIPS 2015).  Where this module
departs from the paper: the paper's compression functions are random Gaussian
matrices and rows of a Hadamard matrix; here Gaussian (columns scaled to unit
norm, ``projection="gaussian"``) or Rademacher (``+-1/sqrt(m)``,
``projection="rademacher"``); and OMP may select by the signed correlation
(``nonnegative=True``, the default: label vectors are non-negative, so a
negatively correlated label is never the next positive) instead of its
absolute value.

OMP with static shapes (:func:`omp`): the ``s`` iterations are a
``lax.fori_loop`` over a batch of points at once; each selects the label whose
column has the largest correlation with the residual, orthogonalises it
against the selected ones (Gram-Schmidt, in label space through the Gram
matrix ``G = A^T A: f32[L, L]``, so an iteration costs ``O(B L s)`` rather than
``O(B m L)``) and updates the residual's correlations; the coefficients are
one triangular solve at the end.

Memory: prediction holds ``G`` (``4 L^2`` bytes) and ``A^T Q: f32[predict_batch_size,
L, s]``: for small and medium ``L``; :func:`check_prediction_memory` refuses
(:class:`jxmc.errors.ConfigError`) a problem over ``memory_budget_gb``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.models.base import Prepared
from jxmc.models.embedding import core
from jxmc.models.embedding.ridge import make_ridge, regress
from jxmc.ops import linalg
from jxmc.ops.ids import pad_topk
from jxmc.ops.linalg import mm
from jxmc.types import TopK

PROJECTIONS = ("gaussian", "rademacher")


@dataclass(frozen=True)
class Config:
    """The options of ``--method cs``.

    Defaults chosen on a held-out fifth of the training split of Bibtex and
    Delicious (the grid of ``python experiments/cs.py --tune``): m 400 (P@1 rises with
    m on Delicious: 52 / 64 / 67 / 67 at m = 100 / 200 / 300 / 400, best over sparsity; on
    Bibtex, L = 159, m is clipped to L), sparsity 40 (Delicious has 19 labels per point), ridge 1;
    projection and ``nonnegative`` moved P@1 by less than its noise.  Test figures:
    ``experiments/results/cs.md``.
    """

    # m: dimension of the compressed labels z = A y (clipped to min(L, n))
    m: int = 400
    # s: OMP iterations at prediction = non-zeros of the recovered label vector (clipped to
    # min(m, L)); may change at prediction (PREDICT_FIELDS)
    sparsity: int = 40
    # the random compression matrix A: "gaussian" (unit-norm columns) or "rademacher" (+-1/sqrt(m))
    projection: str = "gaussian"
    # OMP selects the label of largest signed correlation (true) or largest |correlation| (false);
    # may change at prediction
    nonnegative: bool = True
    # lambda: ridge of the regression from features to z
    ridge: float = 1.0
    # value of the constant feature appended to every row (0 = no bias feature)
    bias: float = 1.0
    # d + 1 up to this: dense X1^T X1 and an exact Cholesky solve; above: conjugate gradients
    exact_max_dim: int = 4096
    # conjugate gradients (matrix-free ridge): most iterations per solve
    cg_iters: int = 200
    # conjugate gradients: stop at ||residual|| <= cg_tol * ||rhs|| (per column)
    cg_tol: float = 1e-4
    # refuse a problem whose parameters, work arrays and prediction batch exceed this (GiB)
    memory_budget_gb: float = 4.0
    # points per prediction step; may change at prediction
    predict_batch_size: int = 256


PREDICT_FIELDS = ("sparsity", "nonnegative", "predict_batch_size")


def _check(config: Config) -> None:
    """Raises :class:`ConfigError` for out-of-range fields of ``config``."""
    if config.m < 1:
        raise ConfigError(f"cs: m must be >= 1, got {config.m}")
    if config.sparsity < 1:
        raise ConfigError(f"cs: sparsity must be >= 1, got {config.sparsity}")
    if config.projection not in PROJECTIONS:
        raise ConfigError(f"cs: projection must be one of {', '.join(PROJECTIONS)}, "
                          f"got {config.projection!r}")
    if config.predict_batch_size < 1:
        raise ConfigError(f"cs: predict_batch_size must be >= 1, got {config.predict_batch_size}")


def _core_config(config: Config) -> core.Config:
    """The label-embedding core's options for this fit (no centring: ``z = A y`` of the
    sparse ``y`` itself; no randomised SVD)."""
    return core.Config(rank=config.m, ridge=config.ridge, bias=config.bias, center=False,
                       exact_max_dim=config.exact_max_dim, oversample=0, power_iters=0,
                       cg_iters=config.cg_iters, cg_tol=config.cg_tol,
                       memory_budget_gb=config.memory_budget_gb,
                       predict_batch_size=config.predict_batch_size)


# --------------------------------------------------------------------------- compression


def projection(key: jax.Array, m: int, L: int, kind: str = "gaussian") -> jax.Array:
    """A random compression matrix ``A: f32[m, L]`` with unit-norm columns.

    Args:
      key: a ``jax.random`` key.
      m, L: compressed and label dimension.
      kind: ``"gaussian"`` (i.i.d. N(0, 1), each column scaled to unit L2 norm) or
        ``"rademacher"`` (i.i.d. ``+-1/sqrt(m)``, equally likely).

    Returns:
      ``f32[m, L]``.

    Raises:
      ConfigError: an unknown ``kind``.
    """
    if kind == "gaussian":
        A = jax.random.normal(key, (m, L), jnp.float32)
        return A / jnp.linalg.norm(A, axis=0, keepdims=True)
    if kind == "rademacher":
        signs = jax.random.rademacher(key, (m, L), jnp.float32)
        return signs / jnp.sqrt(jnp.float32(m))
    raise ConfigError(f"cs: projection must be one of {', '.join(PROJECTIONS)}, got {kind!r}")


# --------------------------------------------------------------------------- recovery


def omp(Z: jax.Array, A: jax.Array, s: int, *, nonnegative: bool = False,
        gram: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Orthogonal matching pursuit, ``s`` iterations, for a batch of measurements.

    For each row ``z`` of ``Z``, greedily finds ``y`` with ``s`` non-zeros and
    ``A y ~ z``: at iteration ``t`` select ``j_t = argmax_j c_j`` over the labels
    not yet selected, with ``c = A^T r`` the correlations of the residual ``r``
    (``|c|`` unless ``nonnegative``; ``A``'s columns are taken as unit-norm), then
    project ``z`` onto the span of the selected columns, ``r = z - A_S y_S``
    (the OMP of Tropp & Gilbert 2007).  jnp-pure, static shapes: call inside
    ``jit``.

    Args:
      Z: f32[B, m] measurements (predicted compressed label vectors).
      A: f32[m, L] the compression matrix, unit-norm columns.
      s: iterations (static), ``1 <= s <= min(m, L)``.
      nonnegative: select by the signed correlation (for non-negative ``y``).
      gram: f32[L, L] ``A^T A`` when precomputed (else computed here).

    Returns:
      ``(support: i32[B, s], coef: f32[B, s])``: the selected labels in order of
      selection, and the least-squares coefficients ``y_S`` on them (a column
      selected when it is already in the span of the others gets 0).
    """
    B = Z.shape[0]
    L = A.shape[1]
    G = mm(A.T, A) if gram is None else gram
    dG = jnp.diagonal(G)
    corr = mm(Z, A)  # [B, L] = A^T z, the correlations of the first residual
    rows = jnp.arange(B)

    def body(t, state):
        corr, P, R, beta, support, taken = state
        score = corr if nonnegative else jnp.abs(corr)
        j = jnp.argmax(jnp.where(taken, -jnp.inf, score), axis=1)  # [B]
        proj = P[rows, j]  # [B, s]: Q^T a_j (columns >= t of P are still zero)
        nrm2 = dG[j] - jnp.sum(proj * proj, axis=1)
        ok = nrm2 > 1e-6 * dG[j]
        nrm = jnp.sqrt(jnp.where(ok, nrm2, 1.0))
        # A^T q_t with q_t = (a_j - Q proj) / nrm, the new orthonormal direction
        col = (G[j] - jnp.einsum("bls,bs->bl", P, proj, precision=linalg.HIGHEST)) / nrm[:, None]
        col = jnp.where(ok[:, None], col, 0.0)
        b_t = jnp.where(ok, corr[rows, j] / nrm, 0.0)  # q_t^T r = q_t^T z
        corr = corr - col * b_t[:, None]
        P = P.at[:, :, t].set(col)
        R = R.at[:, :, t].set(proj.at[:, t].set(nrm))
        beta = beta.at[:, t].set(b_t)
        support = support.at[:, t].set(j.astype(jnp.int32))
        taken = taken.at[rows, j].set(True)
        return corr, P, R, beta, support, taken

    state = (corr, jnp.zeros((B, L, s), Z.dtype), jnp.zeros((B, s, s), Z.dtype),
             jnp.zeros((B, s), Z.dtype), jnp.zeros((B, s), jnp.int32),
             jnp.zeros((B, L), bool))
    _, _, R, beta, support, _ = jax.lax.fori_loop(0, s, body, state)
    # A_S = Q R, so A_S y_S = Q Q^T z  <=>  R y_S = beta = Q^T z
    coef = jax.lax.linalg.triangular_solve(R, beta[..., None], left_side=True, lower=False)
    return support, coef[..., 0]


def rank_recovered(support: jax.Array, coef: jax.Array, proxy: jax.Array, k: int
                   ) -> tuple[jax.Array, jax.Array]:
    """The top ``k`` of the recovered vector ``y_hat`` (``coef`` on ``support``, 0 elsewhere).

    Ties (the zeros outside the support) are broken by ``proxy`` (higher first).
    jnp-pure, static shapes.

    Args:
      support: i32[B, s] distinct labels; coef: f32[B, s] their values.
      proxy: f32[B, L] the tie-break score of every label.
      k: ``1 <= k <= L`` (static).

    Returns:
      ``(ids: i32[B, k], scores: f32[B, k])``, scores = ``y_hat`` at ids, decreasing.
    """
    B, s = support.shape
    L = proxy.shape[1]
    rows = jnp.arange(B)[:, None]
    taken = jnp.zeros((B, L), bool).at[rows, support].set(True)
    k2 = min(k, L - s)
    values, ties, ids = [coef], [proxy[rows, support]], [support]
    if k2 > 0:  # the best k2 labels outside the support, all of value 0
        t, i = jax.lax.top_k(jnp.where(taken, -jnp.inf, proxy), k2)
        values.append(jnp.zeros_like(t))
        ties.append(t)
        ids.append(i.astype(jnp.int32))
    neg_v, _, out = jax.lax.sort((-jnp.concatenate(values, 1), -jnp.concatenate(ties, 1),
                                  jnp.concatenate(ids, 1)), dimension=1, num_keys=2)
    return out[:, :k], -neg_v[:, :k]


@functools.partial(jax.jit, static_argnames=("k", "n", "s", "nonnegative"))
def _predict_batch(W, b, A, G, X: linalg.Coo, *, k: int, n: int, s: int, nonnegative: bool):
    Z = linalg.spmm(X, W, n) + b  # [n, m] predicted compressed labels
    support, coef = omp(Z, A, s, nonnegative=nonnegative, gram=G)
    return rank_recovered(support, coef, mm(Z, A), k)


def recover_topk(Z: jax.Array, A: jax.Array, s: int, k: int, *, nonnegative: bool = True
                 ) -> tuple[jax.Array, jax.Array]:
    """OMP (:func:`omp`) then :func:`rank_recovered`: ``Z: f32[B, m] -> (i32[B, k], f32[B, k])``."""
    support, coef = omp(Z, A, s, nonnegative=nonnegative)
    return rank_recovered(support, coef, mm(Z, A), k)


# --------------------------------------------------------------------------- the method


def _fit(X: sp.csr_matrix, Y: sp.csr_matrix, config: Config, *, seed: int, ckpt,
         progress: bool) -> dict:
    """Fits CS: draws ``A``, then one ridge solve from the features to ``Z = Y A^T``.

    Args:
      X: ``csr f32[n, d]`` features (rows L2-normalised).
      Y: ``csr f32[n, L]`` positives.
      config: :class:`Config`.
      seed: seeds the compression matrix.
      ckpt: unused (closed form: no iterations to resume).
      progress: unused.

    Returns:
      ``{"W": f32[d, m], "b": f32[m], "A": f32[m, L]}``.

    Raises:
      ConfigError: bad options or over ``memory_budget_gb``.
      ValueError: ``X`` and ``Y`` have different row counts.
    """
    del ckpt, progress
    _check(config)
    cfg = _core_config(config)
    p, X1, _, m = core.setup_problem(X, Y, cfg, "cs")
    A = projection(jax.random.PRNGKey(seed), m, p.L, config.projection)
    W1 = regress(p, make_ridge(X1, cfg), A.T)
    packed = core.pack_params(W1, A.T, p.mu, X.shape[1], config.bias)
    return {"W": packed["W"], "b": packed["b"], "A": np.asarray(A, np.float32)}


def check_prediction_memory(L: int, m: int, s: int, config: Config) -> None:
    """Refuses a prediction whose work arrays exceed ``config.memory_budget_gb``.

    Counts ``G = A^T A`` (``4 L^2``), and per batch of ``B = predict_batch_size``
    points ``A^T Q: f32[B, L, s]`` plus four ``f32[B, L]`` and the ``f32[B, m]`` prediction.

    Raises:
      ConfigError: over the budget; the message says what to lower.
    """
    B = config.predict_batch_size
    need = 4 * (L * L + B * L * s + 4 * B * L + B * m)
    if need > config.memory_budget_gb * 2**30:
        raise ConfigError(f"cs: prediction needs {need / 2**30:.2f} GiB for L={L} labels, "
                          f"sparsity={s}, predict_batch_size={B}, over the budget of "
                          f"{config.memory_budget_gb:g} GiB; lower --set predict_batch_size= or "
                          f"sparsity=, raise memory_budget_gb=, or use a tree method for large L")


def _prepare(params: dict, config: Config, mesh=None) -> Prepared:
    """The parameters on device: ``state = (W, b, A, G = A^T A)``."""
    A = jnp.asarray(params["A"])
    return Prepared(params, config, mesh,
                    (jnp.asarray(params["W"]), jnp.asarray(params["b"]), A, _gram(A)))


@jax.jit
def _gram(A):
    return mm(A.T, A)


def _predict(model: Prepared, X: sp.spmatrix, config: Config, *, k: int) -> TopK:
    """Top-``k`` labels of the recovered label vectors (module docstring, steps 3-4).

    Args:
      model: from :func:`_prepare` (``{"W": f32[d, m], "b": f32[m], "A": f32[m, L]}``).
      X: ``csr f32[n, d]``.
      config: the training config, ``sparsity``, ``nonnegative`` or
        ``predict_batch_size`` possibly changed.
      k: predictions per point; beyond ``L`` padded with id -1 and score -inf.

    Returns:
      :class:`TopK` of numpy ``ids: i32[n, k]``, ``scores: f32[n, k]`` (the recovered
      values: ``s`` coefficients, then zeros).

    Raises:
      ConfigError: bad prediction options or over ``memory_budget_gb``.
      ValueError: ``X`` has a different feature count than ``W``.
    """
    _check(config)
    W, b, A, G = model.state
    d, (m, L) = W.shape[0], A.shape
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} features but the model was fitted on {d}")
    s = max(min(config.sparsity, m, L), 1)
    check_prediction_memory(L, m, s, config)
    bs = min(config.predict_batch_size, max(X.shape[0], 1))
    kk = min(k, L)
    ids, scores = [], []
    for begin in range(0, X.shape[0], bs):
        Xb = X[begin:begin + bs]
        rows = Xb.shape[0]
        if rows < bs:
            Xb = sp.vstack([Xb, sp.csr_matrix((bs - rows, d), dtype=np.float32)], format="csr")
        i, v = _predict_batch(W, b, A, G, linalg.coo_from_csr(Xb), k=kk, n=bs, s=s,
                              nonnegative=config.nonnegative)
        ids.append(np.asarray(i)[:rows])
        scores.append(np.asarray(v)[:rows])
    ids = np.concatenate(ids) if ids else np.zeros((0, kk), np.int32)
    scores = np.concatenate(scores) if scores else np.zeros((0, kk), np.float32)
    return TopK(*pad_topk(ids, scores, k))


METHOD = base.method(
    "cs", Config, fit=_fit, predict=_predict, prepare=_prepare, needs_texts=False,
    supports_mesh=False, predict_fields=PREDICT_FIELDS,
    summary="compressed sensing: random projection of Y, ridge, OMP recovery (Hsu et al. 2009)")
fit = METHOD.fit  # fit(X, Y, config=None, *, seed=0, ckpt=None, progress=True)
predict = METHOD.predict  # predict(params or prepared, X, config=None, *, k=10)
