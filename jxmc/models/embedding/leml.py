"""``--method leml``: Low-rank Empirical risk minimisation for Multi-Label learning.

Yu, Jain, Kar & Dhillon, "Large-scale multi-label learning with missing
labels", ICML 2014, Sections 2-3, with the squared loss and every label
observed.  The score matrix is ``X1 W`` with ``W = U V^T`` of rank ``r``
(``U: f32[d1, r]``, ``V: f32[L, r]``, ``X1 = [X, bias 1]``), fitted by

    min_{U, V}  J(U, V) = ||Z - X1 U V^T||_F^2 + lam (||U||_F^2 + ||V||_F^2),

where ``Z = Y`` (the paper), or ``Y - 1 mu^T`` with ``center=True``.  Since
``min_{U V^T = W} (||U||^2 + ||V||^2) / 2 = ||W||_*``, this is trace-norm
regularised reduced-rank regression.  Alternating minimisation (the paper's
Section 3): each half-step is a convex quadratic, minimised exactly (or by CG
from the previous iterate, which can only lower it), so ``J`` never increases:

* **V-step** (``U`` fixed, a ridge over the ``r`` codes ``P = X1 U``):
  ``V = Z^T P (P^T P + lam I)^{-1}``.
* **U-step** (``V`` fixed): the normal equations
  ``X1^T X1 U (V^T V) + lam U = X1^T Z V``.  With ``X1^T X1 = Q_x diag(g) Q_x^T``
  and ``V^T V = Q_v diag(s) Q_v^T`` (exact, ``d1 <= exact_max_dim``) the solution
  is ``U = Q_x [(Q_x^T X1^T Z V Q_v) / (g_i s_j + lam)] Q_v^T``; otherwise
  conjugate gradients on the ``d1 x r`` unknown with the Hessian-vector product
  ``U -> X1^T (X1 U) (V^T V) + lam U`` (the paper's CG with fast products),
  warm-started from the previous ``U``, with ``cg_iters`` iterations.

``V`` starts from PLST's basis (the top right singular vectors of ``Z``), so the
first U-step is already a good reduced-rank fit.  Scores decode as
``(x^T W + b) V^T + mu`` (``mu = 0`` unless ``center``); see
:mod:`jxmc.models.embedding.core`.  Prediction holds
``f32[predict_batch_size, L]``: for small and medium ``L``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.models.embedding import core
from jxmc.models.embedding.bases import plst_basis
from jxmc.ops import linalg
from jxmc.ops.linalg import mm


@dataclass(frozen=True)
class Config(core.Config):
    """LEML's options: those of :class:`jxmc.models.embedding.core.Config`, with

    ``ridge`` the ``lam`` of ``lam (||U||^2 + ||V||^2)``, ``center`` off (the
    paper fits ``Y`` itself), and ``cg_iters`` the CG iterations of one U-step
    (matrix-free path only).

    Defaults (rank 100, lam 3, 10 alternations) reach P@1 63.1 on Bibtex and
    66.4 on Delicious (experiments/results/label_embedding.md).
    """

    # lam of lam (||U||^2 + ||V||^2)
    ridge: float = 3.0
    # fit Y - 1 mu^T instead of Y (the paper: off)
    center: bool = False
    # alternations (a U-step and a V-step each)
    iters: int = 10
    # CG iterations per U-step when d + 1 > exact_max_dim (warm-started)
    cg_iters: int = 30


class Gram(NamedTuple):
    """The dense Gram form of the problem (``d1, L <= exact_max_dim``).

    Attributes:
      G: f32[d1, d1] ``X1^T X1``.
      xtz: f32[d1, L] ``X1^T Z``, or None (then products with ``Z`` go through the sparse data).
      g: f32[d1] eigenvalues of ``G``; Q: f32[d1, d1] its eigenvectors.
    """

    G: jax.Array
    xtz: jax.Array | None
    g: jax.Array
    Q: jax.Array


@jax.jit
def _eigh(G):
    g, Q = jnp.linalg.eigh(0.5 * (G + G.T))
    return jnp.maximum(g, 0.0), Q


def make_gram(p: core.Problem, X1: sp.csr_matrix, Y: sp.csr_matrix, config: Config) -> Gram | None:
    """The dense :class:`Gram` form when ``d1 <= exact_max_dim`` (``xtz`` only when also
    ``L <= exact_max_dim``), else None (matrix-free CG)."""
    if p.d1 > config.exact_max_dim:
        return None
    G = jnp.asarray(core.dense_gram(X1))
    g, Q = _eigh(G)
    xtz = jnp.asarray(core.dense_xtz(p, X1, Y)) if p.L <= config.exact_max_dim else None
    return Gram(G, xtz, g, Q)


@jax.jit
def u_step(p: core.Problem, U: jax.Array, V: jax.Array, gram: Gram | None, *, lam: float,
           cg_iters: int, cg_tol: float) -> jax.Array:
    """``argmin_U ||Z - X1 U V^T||^2 + lam ||U||^2`` (exact with ``gram``, else CG from ``U``).

    Args:
      U: f32[d1, r] the current ``U`` (the CG start).
      V: f32[L, r].
      gram: :class:`Gram`, or None for conjugate gradients on the sparse data.
      lam, cg_iters, cg_tol: scalars (traced: new values do not recompile).

    Returns:
      ``U: f32[d1, r]``.
    """
    if gram is not None and gram.xtz is not None:
        B = mm(gram.xtz, V)  # X1^T Z V: [d1, r]
    else:
        B = core.xt_mul(p, core.z_mul(p, V))
    S = mm(V.T, V)
    if gram is not None:
        s, Qv = jnp.linalg.eigh(0.5 * (S + S.T))
        R = mm(mm(gram.Q.T, B), Qv) / (gram.g[:, None] * jnp.maximum(s, 0.0)[None, :] + lam)
        return mm(mm(gram.Q, R), Qv.T)

    def op(W):
        return mm(core.xt_mul(p, core.x_mul(p, W)), S) + lam * W

    precond = p.diag[:, None] * jnp.diag(S)[None, :] + lam
    return linalg.cg(op, B, U, precond=precond, iters=cg_iters, tol=cg_tol, columnwise=False)


def _products(p: core.Problem, U: jax.Array, gram: Gram | None) -> tuple[jax.Array, jax.Array]:
    """``(P^T P: f32[r, r], Z^T P: f32[L, r])`` for ``P = X1 U``."""
    if gram is not None and gram.xtz is not None:
        return mm(U.T, mm(gram.G, U)), mm(gram.xtz.T, U)
    P = core.x_mul(p, U)  # [n, r]
    return mm(P.T, P), core.zt_mul(p, P)


@jax.jit
def v_step(p: core.Problem, U: jax.Array, gram: Gram | None, *, lam: float
           ) -> tuple[jax.Array, jax.Array]:
    """``argmin_V ||Z - X1 U V^T||^2 + lam ||V||^2`` and the objective ``J(U, V)`` there.

    Args:
      U: f32[d1, r].
      gram: :class:`Gram` (products in Gram form when it holds ``xtz``) or None.

    Returns:
      ``(V: f32[L, r], J: f32[])``.
    """
    PtP, ZtP = _products(p, U, gram)
    r = U.shape[1]
    V = jnp.linalg.solve(PtP + lam * jnp.eye(r, dtype=PtP.dtype), ZtP.T).T
    return V, _objective(p, U, V, PtP, ZtP, lam)


def _objective(p, U, V, PtP, ZtP, lam):
    fit = p.ysq - 2.0 * jnp.sum(ZtP * V) + jnp.sum(PtP * mm(V.T, V))
    return fit + lam * (jnp.sum(U * U) + jnp.sum(V * V))


@jax.jit
def objective(p: core.Problem, U: jax.Array, V: jax.Array, *, lam: float) -> jax.Array:
    """``J(U, V) = ||Z - X1 U V^T||_F^2 + lam (||U||_F^2 + ||V||_F^2)`` without forming ``Z``.

    ``||Z - P V^T||^2 = ||Z||^2 - 2 <Z^T P, V> + <P^T P, V^T V>`` with ``P = X1 U``.

    Returns:
      ``f32[]``.
    """
    PtP, ZtP = _products(p, U, None)
    return _objective(p, U, V, PtP, ZtP, lam)


def alternate(X: sp.csr_matrix, Y: sp.csr_matrix, config: Config = Config(), *, seed: int = 0,
              start: tuple[int, np.ndarray, np.ndarray] | None = None
              ) -> Iterator[tuple[int, jax.Array, jax.Array, float]]:
    """Runs the alternating minimisation, one alternation per item.

    Args:
      X: ``csr f32[n, d]``; Y: ``csr f32[n, L]``.
      seed: seeds PLST's randomised SVD for the initial ``V`` (large ``L`` only).
      start: ``(iteration, U, V)`` to resume from instead of PLST's basis.

    Yields:
      ``(iteration, U: f32[d1, r], V: f32[L, r], J)``, ``iteration`` from 1 to
      ``config.iters``; ``J`` is the objective after the V-step.

    Raises:
      ConfigError: bad options or over ``memory_budget_gb``.
    """
    p, X1, Yc, r = core.setup_problem(X, Y, config, "leml")
    gram = make_gram(p, X1, Yc, config)
    if start is None:
        it0 = 0
        _, V = plst_basis(p, Yc, r, config, jax.random.PRNGKey(seed))
        U = jnp.zeros((p.d1, r), jnp.float32)
    else:
        it0, U, V = start[0], jnp.asarray(start[1]), jnp.asarray(start[2])
    lam = float(config.ridge)
    for it in range(it0, config.iters):
        U = u_step(p, U, V, gram, lam=lam, cg_iters=int(config.cg_iters),
                   cg_tol=float(config.cg_tol))
        V, J = v_step(p, U, gram, lam=lam)
        yield it + 1, U, V, float(J)


def _fit(X: sp.csr_matrix, Y: sp.csr_matrix, config: Config, *, seed: int, ckpt,
         progress: bool) -> dict:
    """Fits LEML by ``config.iters`` alternations.

    Args:
      X: ``csr f32[n, d]`` features (rows L2-normalised).
      Y: ``csr f32[n, L]`` positives.
      config: :class:`Config`.
      seed: seeds the initial basis's randomised SVD (``L > exact_max_dim`` only).
      ckpt: optional :class:`jxmc.checkpoint.TrainCheckpoints`; ``U`` and ``V``
        are saved after every alternation and a later call resumes from the last.
      progress: show a progress bar with the objective.

    Returns:
      ``{"W": f32[d, r], "b": f32[r], "V": f32[L, r], "mu": f32[L]}`` with
      ``W``/``b`` the feature/bias rows of ``U``.

    Raises:
      ConfigError: bad options, ``iters < 1``, or over ``memory_budget_gb``.
      ValueError: ``X`` and ``Y`` have different row counts.
    """
    if config.iters < 1:
        raise ConfigError(f"leml: iters must be >= 1, got {config.iters}")
    start = None
    if ckpt is not None:
        restored = ckpt.restore()
        if restored is not None:
            _, state = restored
            start = (int(state["iteration"]), state["U"], state["V"])
    U = V = None
    bar = tqdm(total=config.iters, initial=start[0] if start else 0, desc="leml", unit="alt",
               disable=not progress, leave=False)
    for it, U, V, J in alternate(X, Y, config, seed=seed, start=start):
        bar.update(1)
        bar.set_postfix(objective=f"{J:.6g}")
        if ckpt is not None:
            ckpt.save(it, {"U": np.asarray(U), "V": np.asarray(V), "iteration": np.int32(it)})
    bar.close()
    if U is None:  # resumed after the last alternation
        U, V = start[1], start[2]
    mu = np.asarray(Y.sum(axis=0), np.float64).ravel() / max(Y.shape[0], 1) if config.center \
        else np.zeros(Y.shape[1])
    return core.pack_params(U, V, mu, X.shape[1], config.bias)



METHOD = base.method(
    "leml", Config, fit=_fit, predict=core.predictor("leml"), prepare=core.prepare, needs_texts=False,
    supports_mesh=False, predict_fields=core.PREDICT_FIELDS,
    summary="low-rank W = U V^T by alternating ridge steps (Yu, Jain, Kar & Dhillon 2014)")
fit = METHOD.fit  # fit(X, Y, config=None, *, seed=0, ckpt=None, progress=True)
predict = METHOD.predict  # predict(params or prepared, X, config=None, *, k=10)
