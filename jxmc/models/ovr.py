"""``--method ovr``: a flat one-vs-rest linear classifier on sparse features.

The baseline that every XMC paper starts from (e.g. DiSMEC, Babbar & Schölkopf,
WSDM 2017, without its pruning): one linear scorer per label,
``s_l(x) = <w_l, x> + b_l``, all ``L`` trained jointly with optax on the
binary cross-entropy (or squared hinge) of every (point, label) pair.  Weights
are dense ``f32[d, L]``, so memory grows as ``d * L``: the method refuses a
problem whose weights and optimizer state exceed ``memory_budget_gb`` and
points to the tree methods.

Training is one jitted step ``(params, opt_state, batch) -> (params,
opt_state, loss)`` over fixed-shape batches (:mod:`jxmc.data.batches`), with the
state donated; the state is checkpointed after each epoch and training resumes
from the last one.

Sparse (lazy) updates: a batch touches only the weight rows of the features it
holds, so each step gathers those ``U`` rows of ``w`` and of the optimizer's
moments, applies the optax update to them, and scatters them back — the
semantics of PyTorch's ``SparseAdam`` (moments of untouched rows are not
decayed; the step count is global).  A step costs ``O(U * L)`` instead of
``O(d * L)``; ``U`` is padded up to a power of two, so only a few shapes compile.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp
from tqdm.auto import tqdm

from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.ops.ids import csr_to_padded, pad_topk, pow2
from jxmc.ops.sparse import coo_matmul, max_row_nnz
from jxmc.types import TopK


@dataclass(frozen=True)
class Config:
    epochs: int = 5  # passes over the training set
    batch_size: int = 256  # points per step
    learning_rate: float = 0.02  # Adam step size (linear decay to 10% at the end)
    loss: str = "squared_hinge"  # "squared_hinge" (as liblinear) or "bce" (binary cross-entropy)
    weight_decay: float = 0.0  # decoupled L2 (AdamW)
    memory_budget_gb: float = 6.0  # refuse when weights + optimizer state exceed this (GiB)
    predict_batch_size: int = 512  # points per prediction step (may change at prediction)


def memory_bytes(n_features: int, n_labels: int) -> int:
    """Bytes of dense weights, gradient and Adam's two moments: ``16 * d * L``."""
    return 16 * n_features * n_labels


def _check_budget(d: int, L: int, config: Config) -> None:
    need = memory_bytes(d, L)
    if need > config.memory_budget_gb * 2**30:
        raise ConfigError(
            f"ovr keeps dense weights: d={d} features x L={L} labels needs "
            f"{need / 2**30:.1f} GiB for weights and optimizer state, over the budget of "
            f"{config.memory_budget_gb:g} GiB; use --method xr-linear, or raise it with "
            f"--set memory_budget_gb=N")


def _loss(params, coo, labels, valid, *, loss: str, n_labels: int):
    n = labels.shape[0]
    rows, cols, values = coo
    logits = coo_matmul(rows, cols, values, params["w"], n) + params["b"]
    target = jnp.zeros_like(logits).at[jnp.arange(n)[:, None], jnp.where(labels >= 0, labels, n_labels)].set(
        1.0, mode="drop")
    if loss == "bce":
        per = optax.sigmoid_binary_cross_entropy(logits, target)
    else:
        per = jnp.square(jnp.maximum(0.0, 1.0 - (2.0 * target - 1.0) * logits))
    per = per.sum(axis=1) * valid
    return per.sum() / jnp.maximum(valid.sum(), 1)


def _coo_batch(Xb: sp.csr_matrix, n_features: int, *, local: bool):
    """A batch's non-zeros as padded COO ``(rows, cols, values)``, each ``[N]``.

    ``N`` is the number of non-zeros rounded up to a power of two, so only a few
    shapes compile.  With ``local`` the columns are renumbered ``0..U-1`` over
    the batch's distinct features and ``uniq: i32[U]`` (``U`` a power of two,
    padding id ``d``: out of range, so gathers read 0 and scatters drop) is
    returned too.
    """
    nnz = Xb.nnz
    N = pow2(max(nnz, 1), least=8)
    rows = np.zeros(N, np.int32)
    cols = np.zeros(N, np.int32)
    values = np.zeros(N, np.float32)
    rows[:nnz] = np.repeat(np.arange(Xb.shape[0], dtype=np.int32), np.diff(Xb.indptr))
    values[:nnz] = Xb.data
    if not local:
        cols[:nnz] = Xb.indices
        return (rows, cols, values), None
    uniq, inverse = np.unique(Xb.indices, return_inverse=True)
    cols[:nnz] = inverse
    padded = np.full(pow2(max(len(uniq), 1), least=8), n_features, np.int32)
    padded[: len(uniq)] = uniq
    return (rows, cols, values), padded


def _make_step(tx: optax.GradientTransformation, config: Config, n_labels: int):
    def rows_of(tree, full_shape, uniq):
        return jax.tree_util.tree_map(
            lambda a: jnp.take(a, uniq, axis=0, mode="fill", fill_value=0) if a.shape == full_shape else a,
            tree)

    def put_rows(full_tree, sub_tree, full_shape, uniq):
        return jax.tree_util.tree_map(
            lambda full, sub: full.at[uniq].set(sub, mode="drop") if full.shape == full_shape else sub,
            full_tree, sub_tree)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, coo_local, uniq, labels, valid):
        shape = params["w"].shape
        sub_params = {"w": rows_of(params["w"], shape, uniq), "b": params["b"]}
        sub_state = rows_of(opt_state, shape, uniq)
        loss, grads = jax.value_and_grad(_loss)(sub_params, coo_local, labels, valid, loss=config.loss,
                                                n_labels=n_labels)
        updates, sub_state = tx.update(grads, sub_state, sub_params)
        sub_params = optax.apply_updates(sub_params, updates)
        params = {"w": params["w"].at[uniq].set(sub_params["w"], mode="drop"), "b": sub_params["b"]}
        return params, put_rows(opt_state, sub_state, shape, uniq), loss

    return step


def _optimizer(config: Config, total_steps: int) -> optax.GradientTransformation:
    schedule = optax.linear_schedule(config.learning_rate, 0.1 * config.learning_rate, max(total_steps, 1))
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def _fit(X: sp.csr_matrix, Y: sp.csr_matrix, config: Config, *, seed: int, ckpt,
         progress: bool) -> dict:
    """Trains the one-vs-rest classifier.

    Args:
      X: ``csr f32[n, d]`` features (rows L2-normalised).
      Y: ``csr f32[n, L]`` positives.
      config: :class:`Config`.
      seed: seeds the initialisation and the batch order.
      ckpt: optional :class:`jxmc.checkpoint.TrainCheckpoints`; the state is saved
        after every epoch and a later call resumes from the last one.
      progress: show a progress bar with loss, ETA and throughput.

    Returns:
      ``{"w": f32[d, L], "b": f32[L]}`` as numpy arrays.

    Raises:
      ConfigError: the dense weights exceed ``config.memory_budget_gb``, or an
        unknown loss.
    """
    if config.loss not in ("bce", "squared_hinge"):
        raise ConfigError(f"ovr: unknown loss {config.loss!r} (bce, squared_hinge)")
    n, d = X.shape
    L = Y.shape[1]
    _check_budget(d, L, config)
    steps_per_epoch = -(-n // config.batch_size)
    tx = _optimizer(config, config.epochs * steps_per_epoch)
    params = {"w": jnp.zeros((d, L), jnp.float32), "b": jnp.full((L,), -3.0 if config.loss == "bce" else -1.0)}
    opt_state = tx.init(params)
    start = 0
    if ckpt is not None:
        restored = ckpt.restore()
        if restored is not None:
            _, state = restored
            params = jax.tree_util.tree_map(jnp.asarray, state["params"])
            leaves = [jnp.asarray(state["opt"][str(i)]) for i in range(len(state["opt"]))]
            opt_state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(opt_state), leaves)
            start = int(state["epoch"])

    step = _make_step(tx, config, L)
    m = max_row_nnz(Y)
    X = sp.csr_matrix(X, dtype=np.float32)
    for epoch in range(start, config.epochs):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(n)
        bar = tqdm(range(0, n, config.batch_size), total=steps_per_epoch,
                   desc=f"ovr epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress, leave=False)
        for i, begin in enumerate(bar):
            idx = order[begin:begin + config.batch_size]
            coo, uniq = _coo_batch(_pad_rows(X[idx], config.batch_size), d, local=True)
            labels = np.full((config.batch_size, m), -1, np.int32)
            labels[: len(idx)] = csr_to_padded(Y[idx], m)
            valid = np.arange(config.batch_size) < len(idx)
            params, opt_state, loss = step(params, opt_state, coo, uniq, labels, valid)
            if i % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        bar.close()
        if ckpt is not None:
            leaves = jax.tree_util.tree_leaves(opt_state)
            ckpt.save(epoch + 1, {"params": params, "opt": {str(i): a for i, a in enumerate(leaves)},
                                  "epoch": np.int32(epoch + 1)})
    return jax.tree_util.tree_map(np.asarray, params)


def _pad_rows(Xb: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """``Xb`` with empty rows appended up to ``n`` rows."""
    if Xb.shape[0] == n:
        return Xb
    return sp.vstack([Xb, sp.csr_matrix((n - Xb.shape[0], Xb.shape[1]), dtype=Xb.dtype)], format="csr")


@functools.partial(jax.jit, static_argnames=("k", "n"))
def _topk(w, b, coo, *, k: int, n: int):
    rows, cols, values = coo
    scores = coo_matmul(rows, cols, values, w, n) + b
    s, i = jax.lax.top_k(scores, k)
    return i.astype(jnp.int32), s


def _prepare(params: dict, config: Config, mesh=None) -> base.Prepared:
    """The weights on device: ``state = (w: f32[d, L], b: f32[L])`` (``mesh`` is None)."""
    return base.Prepared(params, config, mesh, _layout(params))


def _layout(params: dict) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(params["w"]), jnp.asarray(params["b"])


def _predict(model: base.Prepared, X: sp.csr_matrix, config: Config, *, k: int) -> TopK:
    """Top-``k`` labels of each row of ``X``, ``predict_batch_size`` rows per step.

    Args:
      model: from :func:`_prepare`, of the params of :func:`_fit` (a ``state`` of None
        is laid out here).
      X: ``csr f32[n, d]``.
      k: predictions per point (at most ``L``; more are padded with id -1, score -inf).

    Returns:
      :class:`TopK` of numpy arrays ``ids: i32[n, k]``, ``scores: f32[n, k]``.

    Raises:
      ConfigError: ``predict_batch_size < 1``.
    """
    w, b = model.state if model.state is not None else _layout(model.params)
    L = w.shape[1]
    kk = min(k, L)
    ids, scores = [], []
    X = sp.csr_matrix(X, dtype=np.float32)
    bs = config.predict_batch_size
    if bs < 1:
        raise ConfigError("ovr: predict_batch_size must be >= 1")
    for begin in range(0, X.shape[0], bs):
        Xb = X[begin:begin + bs]
        coo, _ = _coo_batch(_pad_rows(Xb, bs), w.shape[0], local=False)
        i, s = _topk(w, b, coo, k=kk, n=bs)
        ids.append(np.asarray(i)[: Xb.shape[0]])
        scores.append(np.asarray(s)[: Xb.shape[0]])
    ids = np.concatenate(ids) if ids else np.zeros((0, kk), np.int32)
    scores = np.concatenate(scores) if scores else np.zeros((0, kk), np.float32)
    return TopK(*pad_topk(ids, scores, k))


METHOD = base.method("ovr", Config, fit=_fit, predict=_predict, prepare=_prepare,
                     needs_texts=False, supports_mesh=False,
                     predict_fields=("predict_batch_size",),
                     summary="flat one-vs-rest linear classifier (dense weights)")
fit = METHOD.fit  # fit(X, Y, config=None, *, seed=0, ckpt=None, progress=True)
predict = METHOD.predict  # predict(params or prepared, X, config=None, *, k=10)
