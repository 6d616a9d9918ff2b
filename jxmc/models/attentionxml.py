"""``--method attentionxml``: AttentionXML (You, Zhang, Wang, Xu, Mamitsuka & Zhu,
"AttentionXML: Label Tree-based Attention-Aware Deep Model for High-Performance
Extreme Multi-Label Text Classification", NeurIPS 2019).

* Words (:mod:`jxmc.data.words`): the training corpus' word vocabulary, each text
  its first ``max_len`` words (a static length).  Word vectors are by default
  randomly initialised and learned end to end -- nothing is downloaded and no vectors
  ship with jxmc, so the default runs anywhere and depends on the training data only;
  the paper starts from 300-d GloVe vectors (Section 4.1), which ``word_vectors=PATH``
  reads from a local file (``emb_dim`` its width) and fine-tunes.
* The network of one tree level: :class:`jxmc.nn.attention_xml.AttentionXML`
  (BiLSTM, multi-label attention with a vector per node, shared fully connected
  layers; Section 3.2).
* The label tree: a shallow and wide probabilistic label tree (Section 3.3, the
  PLT compressed to few levels): :func:`jxmc.tree.build.build` of kind ``"wide"`` on
  PIFA (``nr_splits`` children per internal level, at most ``max_depth`` levels
  with the label level; ``(64, 10)`` for debtags' 595 labels).
* Level-by-level training (Section 3.3): level ``t`` has its own network, trained
  for ``epochs`` after level ``t - 1``'s, with BCE over its candidates: level 1
  scores all its nodes; below, the children of the ``candidates`` (``C``) level
  ``t - 1`` nodes that the trained levels above keep (their beam), with every
  positive level ``t - 1`` node put first (:func:`level_candidates`), so every
  positive of level ``t`` is a candidate.  Level ``t``'s network starts from level
  ``t - 1``'s trained word table, BiLSTM and fully connected layers (its attention
  table is new): a warm start of ours that shortens each level's training.
* Prediction (Section 3.4): beam search level by level, ``beam_size`` nodes kept,
  a node's score the product of the level probabilities (``sigmoid``) on its path
  (:func:`jxmc.tree.beam.expand` / :func:`jxmc.tree.beam.keep` with
  ``log_sigmoid``).
* Adam (no weight decay), the rate decayed linearly to 0 over each level's steps,
  gradients clipped to ``clip_norm``; a checkpoint after every epoch
  (:func:`jxmc.train.loop.run_epochs`), counted over all levels; a rerun resumes.

Params (numpy, saved by orbax)::

    {"heads": {"level_t": AttentionXML params}, "perm": i32[K_D], "branching": i32[D],
     "vocab": u8[...] (the words, newline-joined UTF-8; word j has id j + 2)}

``METHOD``'s prediction fields: ``beam_size``, ``predict_batch_size``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc import sharding
from jxmc.data.words import (
    encode_words,
    pack_words,
    read_word_vectors,
    unpack_words,
    word_vocabulary,
)
from jxmc.embed import pifa
from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.nn import attention_xml as ax_net
from jxmc.nn.attention_xml import AttentionXML
from jxmc.ops.ids import pow2
from jxmc.train.batches import batches, map_batches
from jxmc.train.loop import restore_state, run_epochs
from jxmc.train.optim import make_optimizer
from jxmc.train.step import init_state, make_train_step
from jxmc.tree.build import TreeSpec, build
from jxmc.tree.label_tree import LabelTree
from jxmc.tree.shortlist import level_positives
from jxmc.types import TopK


@dataclass(frozen=True)
class Config:
    max_len: int = 256  # words per text (truncated / padded)
    max_vocab: int = 100000  # most frequent training words kept (the others are unknown)
    min_count: int = 1  # words in fewer training documents are unknown
    emb_dim: int = 300  # word vector width (GloVe's 300 in the paper)
    word_vectors: str = ""  # local GloVe-format text file to start from; "" = random init
    hidden: int = 256  # LSTM units per direction
    linear: tuple[int, ...] = (256,)  # widths of the fully connected layers shared by all nodes
    dropout: float = 0.5  # dropout on the word vectors and before each fully connected layer
    epochs: int = 5  # passes over the training set per tree level
    batch_size: int = 64  # points per train step
    lr: float = 1e-3  # peak Adam learning rate, decayed linearly to 0 over each level
    clip_norm: float = 5.0  # global gradient-norm clip
    nr_splits: int = 64  # children per internal level of the wide tree
    max_leaf_size: int = 100  # labels per leaf cluster at most (adds levels up to max_depth)
    max_depth: int = 2  # tree levels at most, the label level included
    kmeans_iters: int = 10  # 2-means iterations per bisection
    candidates: int = 10  # C: level t-1 nodes whose children train level t (positives added)
    beam_size: int = 10  # nodes kept per level at prediction
    predict_batch_size: int = 128  # points per prediction step


PREDICT_FIELDS = ("beam_size", "predict_batch_size")


def check_config(config: Config) -> None:
    """Raises ConfigError (naming the option) for a value out of range."""
    for name in ("max_len", "max_vocab", "min_count", "emb_dim", "hidden", "epochs",
                 "batch_size", "candidates", "beam_size", "predict_batch_size"):
        if getattr(config, name) < 1:
            raise ConfigError(f"attentionxml: {name} must be >= 1, got {getattr(config, name)}")
    if any(w < 1 for w in config.linear):
        raise ConfigError(f"attentionxml: linear widths must be >= 1, got {config.linear}")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"attentionxml: dropout must be in [0, 1), got {config.dropout}")
    if config.lr <= 0:
        raise ConfigError(f"attentionxml: lr must be > 0, got {config.lr}")


# --- the tree and the candidates ---------------------------------------------------------

def tree_spec(config: Config) -> TreeSpec:
    """The wide tree of ``config`` (:mod:`jxmc.tree.build`)."""
    return TreeSpec(kind="wide", nr_splits=config.nr_splits, max_leaf_size=config.max_leaf_size,
                    max_depth=config.max_depth, kmeans_iters=config.kmeans_iters)


def level_candidates(top: np.ndarray, positives: np.ndarray, width: int | None = None) -> np.ndarray:
    """``i32[n, w]``: the level ``t - 1`` nodes whose children level ``t`` trains on
    (Section 3.3): each point's positive nodes first (ascending), then the beam's
    ``top`` nodes in its order, each once, ``-1`` padded.

    Args:
      top: ``i32[n, C]`` the nodes the trained levels above keep (best first, ``-1``
        padded).
      positives: ``i32[n, m]`` the point's positive level ``t - 1`` nodes (``-1``
        padded, :func:`jxmc.tree.shortlist.level_positives`).
      width: ``w``; default ``max(C, most positives of a point)``, so that every
        positive is kept and the beam fills the rest.  A smaller ``width`` keeps the
        first ``width`` (positives first).
    """
    n = top.shape[0]
    if width is None:
        width = max(top.shape[1], int((positives >= 0).sum(1).max(initial=0)), 1)
    out = np.full((n, width), -1, np.int32)
    both = np.concatenate([np.sort(np.where(positives >= 0, positives, np.iinfo(np.int32).max),
                                   axis=1), top], axis=1)
    for i in range(n):
        row = list(dict.fromkeys(int(v) for v in both[i] if 0 <= v < np.iinfo(np.int32).max))
        row = row[:width]
        out[i, :len(row)] = row
    return out


# --- the networks ------------------------------------------------------------------------

def level_modules(config: Config, vocab_size: int, branching) -> tuple[AttentionXML, ...]:
    """The network of each level (``K_t`` attention vectors each)."""
    sizes = np.cumprod([int(b) for b in branching])
    return tuple(AttentionXML(vocab_size, config.emb_dim, config.hidden, tuple(config.linear),
                              int(K), config.dropout) for K in sizes)


def _beam_all(heads, ids, mask, perm, *, modules, branching, depth, width, batch_size):
    """:func:`beam` over all points, ``batch_size`` at a time: numpy ``(nodes, logp)``."""
    return tuple(map_batches(lambda b: ax_net.beam_jit(heads, b["ids"], b["mask"], perm,
                                                       modules=modules, branching=branching,
                                                       depth=depth, width=width),
                             {"ids": ids, "mask": mask}, batch_size))


# --- fit ---------------------------------------------------------------------------------

def init_params(config: Config, modules, seed: int, vectors: np.ndarray | None = None) -> dict:
    """``{"heads": {"level_t": params}}`` (numpy), random; ``vectors: f32[V, e]`` rows
    replace the word table's of every level where given (``nan`` rows: keep random)."""
    ids = jnp.ones((1, 2), jnp.int32)
    heads = {}
    for t, module in enumerate(modules, start=1):
        p = module.init({"params": jax.random.PRNGKey(seed * 1000 + t)}, ids, ids,
                        jnp.zeros((1, 1), jnp.int32))["params"]
        p = jax.tree_util.tree_map(np.asarray, p)
        if vectors is not None:
            table = np.array(p["embed"]["embedding"])
            known = ~np.isnan(vectors[:, 0])
            table[known] = vectors[known]
            p["embed"]["embedding"] = table
        heads[f"level_{t}"] = p
    return {"heads": heads}


def warm_start(heads: dict, level: int) -> dict:
    """``heads`` with level ``level``'s word table, BiLSTM and fully connected layers
    copied from level ``level - 1`` (its attention table kept)."""
    above, mine = heads[f"level_{level - 1}"], dict(heads[f"level_{level}"])
    for key, value in above.items():
        if key != "attention":
            mine[key] = jax.tree_util.tree_map(np.array, value)
    return {**heads, f"level_{level}": mine}


def _word_vectors(config: Config, vocab: list[str], progress: bool) -> np.ndarray | None:
    """``f32[V, e]`` (``nan`` rows: words the file lacks) for the word table, or None."""
    if not config.word_vectors:
        return None
    vec, found = read_word_vectors(config.word_vectors, vocab, config.emb_dim)
    if progress:
        print(f"attentionxml: {int(found.sum())} of {len(vocab)} words found in "
              f"{config.word_vectors}", flush=True)
    out = np.full((len(vocab) + 2, config.emb_dim), np.nan, np.float32)
    out[2:][found] = vec[found]
    return out


def _fit(X, Y, config: Config, *, seed: int, ckpt, progress: bool, texts: list[str]):
    """Trains AttentionXML on ``texts`` (``X``: TF-IDF, read for the label tree only),
    level by level (module docstring).

    Raises:
      ConfigError: fewer than 2 labels, a bad option (:func:`check_config`,
        :func:`jxmc.tree.build.check_spec`), no training word kept.
      DataError: an unreadable ``word_vectors`` file.
    """
    check_config(config)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2:
        raise ConfigError("attentionxml needs at least 2 labels")
    tree = build(pifa(Y, X), tree_spec(config), seed)
    vocab = word_vocabulary(texts, max_vocab=config.max_vocab, min_count=config.min_count)
    ids, mask = encode_words(texts, vocab, config.max_len)
    branching = tuple(int(b) for b in tree.branching)
    modules = level_modules(config, len(vocab) + 2, branching)
    params = init_params(config, modules, seed, _word_vectors(config, vocab, progress))
    heads = _train_levels(params, modules, tree, ids, mask, level_positives(Y, tree), config,
                          seed=seed, ckpt=ckpt, progress=progress)
    return {"heads": heads, "perm": np.asarray(tree.perm, np.int32),
            "branching": np.asarray(branching, np.int32), "vocab": pack_words(vocab)}


def _train_levels(params: dict, modules, tree: LabelTree, ids, mask, pos, config: Config, *,
                  seed: int, ckpt, progress: bool) -> dict:
    """Trains level 1, then 2, ... (``config.epochs`` each, a checkpoint after every
    epoch, resumed from the last one); returns the heads (numpy)."""
    n = ids.shape[0]
    D = tree.depth
    n_batches = -(-n // config.batch_size)
    total = config.epochs * n_batches
    names = tuple(params["heads"])
    branching = tuple(int(b) for b in tree.branching)
    perm = jnp.asarray(tree.perm)

    def optimizer(t: int):
        return make_optimizer(lr_encoder=0.0, lr_heads=config.lr, total_steps=total,
                              warmup_steps=0, weight_decay=0.0, clip_norm=config.clip_norm,
                              frozen_heads=tuple(k for k in names if k != f"level_{t}"))

    saved = (ckpt.latest_step() if ckpt is not None else None) or 0  # epochs done
    t_saved = min(max(saved - 1, 0) // config.epochs, D - 1) + 1  # the level it holds
    state = init_state(params, optimizer(t_saved), seed)
    done, state = restore_state(ckpt, state)
    if done:
        state = jax.tree_util.tree_map(jnp.asarray, state)
        if progress:
            print(f"attentionxml: resuming after epoch {done}", flush=True)
    for t in range(1, D + 1):
        lo, hi = (t - 1) * config.epochs, t * config.epochs
        if done >= hi:
            continue
        tx = optimizer(t)
        if done == lo and t > 1:
            heads = warm_start(sharding.to_host(state.params)["heads"], t)
            state = init_state({"heads": heads}, tx, seed + t)
        if t == 1:
            parents = np.zeros((n, 1), np.int32)
        else:  # the top-C of the trained levels above, the positives first
            top, _ = _beam_all(state.params["heads"], ids, mask, perm, modules=modules,
                               branching=branching, depth=t - 1, width=config.candidates,
                               batch_size=config.predict_batch_size)
            parents = level_candidates(top, pos[t - 2])
            parents = _pad_width(parents)
        arrays = {"ids": ids, "mask": mask, "pos": (pos[t - 1], parents)}
        loss = functools.partial(ax_net.level_loss, module=modules[t - 1], level=t,
                                 B=branching[t - 1], perm=perm if t == D else None)
        step = make_train_step(loss, tx)
        state, _ = run_epochs(state, step, lambda e, a=arrays: batches(a, config.batch_size, epoch=e,
                                                                        seed=seed),
                              n_batches=n_batches, epochs=(done - lo, config.epochs), ckpt=ckpt,
                              ckpt_offset=lo, progress=progress,
                              desc=f"attentionxml level {t}/{D}", points=n)
        done = hi
    return sharding.to_host(state.params)["heads"]


def _pad_width(parents: np.ndarray) -> np.ndarray:
    """``parents`` padded with ``-1`` columns to a power of two (fewer compiled shapes)."""
    w = pow2(parents.shape[1])
    return np.pad(parents, ((0, 0), (0, w - parents.shape[1])), constant_values=-1)


# --- predict -----------------------------------------------------------------------------

class AttentionXMLModel(NamedTuple):
    """Laid out for prediction: the words, the level networks, ``heads`` and
    ``perm: i32[K_D]`` on the device, the tree's ``branching``."""

    vocab: list[str]
    modules: tuple[Any, ...]
    heads: Any
    perm: jax.Array
    branching: tuple[int, ...]


def _prepare(params, config: Config, mesh=None) -> base.Prepared:
    vocab = unpack_words(params["vocab"])
    branching = tuple(int(b) for b in params["branching"])
    modules = level_modules(config, len(vocab) + 2, branching)
    heads = jax.tree_util.tree_map(jnp.asarray, params["heads"])
    return base.Prepared(params, config, mesh,
                         AttentionXMLModel(vocab, modules, heads, jnp.asarray(params["perm"]),
                                           branching))


def _predict(model: base.Prepared, X, config: Config, *, k: int, texts: list[str]) -> TopK:
    """The top-``k`` labels of each text by beam search (``scores``: the product of the
    level probabilities on the label's path; ``-1`` / ``-inf`` padded).

    Raises:
      ConfigError: ``beam_size`` or ``predict_batch_size`` below 1.
    """
    if config.beam_size < 1 or config.predict_batch_size < 1:
        raise ConfigError("attentionxml: beam_size and predict_batch_size must be >= 1")
    st = model.state
    ids, mask = encode_words(list(texts), st.vocab, config.max_len)
    D = len(st.branching)

    r = map_batches(lambda b: ax_net.predict_topk(st.heads, b["ids"], b["mask"], st.perm,
                                                  modules=st.modules, branching=st.branching,
                                                  depth=D, beam_size=config.beam_size, k=k),
                    {"ids": ids, "mask": mask}, config.predict_batch_size)
    return TopK(r.ids.astype(np.int32), r.scores.astype(np.float32))


METHOD = base.method(
    "attentionxml", Config, fit=_fit, predict=_predict, prepare=_prepare, needs_texts=True,
    supports_mesh=False, predict_fields=PREDICT_FIELDS,
    summary="AttentionXML: word embeddings, BiLSTM, multi-label attention per tree node, a "
            "shallow wide label tree trained level by level, beam search (Flax)")
fit = METHOD.fit
predict = METHOD.predict  # params or a prepared model
