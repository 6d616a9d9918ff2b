"""``--method x-transformer``: X-Transformer (Chang, Yu, Zhong, Yang & Dhillon,
"Taming Pretrained Transformers for Extreme Multi-label Text Classification",
KDD 2020).

Three stages (Section 3, Figure 3):

1. Semantic label indexing (Section 3.2): PIFA label embeddings on TF-IDF
   clustered into ``K`` clusters by balanced hierarchical 2-means -- the one tree
   builder, :func:`jxmc.tree.build.build`, its top levels merged into one, so the
   tree has two levels: the ``K`` clusters (leaves of at most ``max_leaf_size``
   labels, PECOS's 100 reproducing the paper's ``K``: 64 for Eurlex-4K, 512 for
   Wiki10-31K) and, below each, its labels.
2. Deep neural matching (Section 3.3): the pretrained encoder (all-MiniLM-L6-v2 by
   default) fine-tuned with one table over the ``K`` clusters on its mean-pooled
   last layer, one-vs-all: binary cross-entropy over every cluster, every cluster
   of a positive label a positive -- :func:`jxmc.models.transformer.common.fit_network`
   with a one-level, one-phase :class:`~jxmc.models.transformer.common.Recipe`
   (a checkpoint every epoch, resumed on a rerun).  The paper's matcher uses a
   squared hinge; BCE is the loss of this library's transformer heads.
3. Ensemble ranking (Section 3.4): one-vs-rest squared-hinge rankers of the labels
   of each cluster (XR-Linear's level solver,
   :func:`jxmc.models.tree_linear.rankers.train_level`) on TF-IDF concatenated with
   the fine-tuned encoder's embedding (each unit-norm, the row scaled by
   ``1/sqrt(2)``, as :mod:`jxmc.models.transformer.xr_transformer`), trained on
   the (instance, cluster) pairs of the positives' clusters (teacher-forced
   negatives) and of the matcher's top-``beam_size`` clusters on the training set
   (matcher-aware negatives; ``ranker_negatives="tfn"`` drops them).

Prediction: the matcher's top-``beam_size`` clusters, the ranker scores of their
labels, and the score of label ``l`` in cluster ``k``::

    score(x, l) = sigmoid(m_k(x)) * exp(-max(1 - r_l(x), 0)^3)

the matcher's cluster probability times the ranker's l3-hinge-transformed score
(``transform="l2-hinge"`` squares instead): the paper's ranker multiplies the
matcher's cluster scores by its transformed scores (the authors' code:
``cond_prob`` l3-hinge on the ranker, the matcher's hinge scores through their
own transform; ours are BCE logits, so their sigmoid).  ``METHOD``'s prediction
fields: ``beam_size``, ``predict_batch_size``, ``transform``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.models.transformer import common
from jxmc.models.transformer.xr_transformer import _concat as concat_features
from jxmc.models.tree_linear import rankers, scoring
from jxmc.nn import cascade
from jxmc.nn.encoder import compute_dtype
from jxmc.nn.heads import init_table, score_dense
from jxmc.nn.tokenize import encode
from jxmc.ops import sparse_weights as sw
from jxmc.ops.sparse import add_bias, csr_to_ell
from jxmc.ops.topk import top_k
from jxmc.train.batches import batches
from jxmc.tree.beam import TRANSFORMS, expand, keep, leaf_topk
from jxmc.types import TopK


@dataclass(frozen=True)
class Config(common.TextConfig):
    epochs: int = 3  # matcher fine-tuning epochs
    ranker_negatives: str = "tfn+man"  # ranker pairs: "tfn+man" (the paper's) or "tfn"
    linear_cost: float = 1.0  # ranker squared-hinge weight (liblinear's C)
    linear_threshold: float = 0.1  # ranker weights below this are dropped (PECOS 0.1)
    bias: float = 1.0  # the rankers' bias feature
    transform: str = "l3-hinge"  # ranker score -> probability: "l3-hinge" or "l2-hinge"


PREDICT_FIELDS = (*common.PREDICT_FIELDS, "transform")


def check_config(config: Config) -> None:
    """Raises ConfigError (naming the option) for options X-Transformer cannot use."""
    if config.ranker_negatives not in ("tfn", "tfn+man"):
        raise ConfigError(f"ranker_negatives must be 'tfn' or 'tfn+man', "
                          f"got {config.ranker_negatives!r}")
    if config.transform not in TRANSFORMS:
        raise ConfigError(f"transform must be one of {sorted(TRANSFORMS)}, "
                          f"got {config.transform!r}")
    if config.beam_size < 1:
        raise ConfigError(f"beam_size must be >= 1, got {config.beam_size}")


def make_spec(config: Config, bert, branching) -> cascade.Spec:
    """The matcher's network: the cluster level on the mean-pooled last layer (the
    label level is the rankers', never scored by the network)."""
    return common.network_spec(config, bert, branching, ((),) * len(branching))


def init_heads(config: Config, tree, spec: cascade.Spec, bert, seed: int) -> dict:
    """The cluster table ``level_1``: ``N(0, 0.02)``, ``K x h``."""
    return {"level_1": init_table(jax.random.PRNGKey(seed + 1), tree.level_sizes()[0],
                                  bert.hidden_size)}


RECIPE = common.Recipe("x-transformer", levels=lambda config: 2, spec=make_spec,
                       heads=init_heads, phases=lambda depth: [(1,)])


@functools.partial(jax.jit, static_argnames=("encoder", "b"))
def _match_batch(enc_params, table, ids, mask, *, encoder, b):
    """``(mean: f32[n, h], clusters: i32[n, b], logits: f32[n, b])``: the embedding
    and the matcher's top-``b`` clusters of one batch (one encoder pass)."""
    mean = encoder.apply({"params": enc_params}, ids, mask).mean
    logits, clusters = top_k(score_dense(table, mean.astype(jnp.dtype(compute_dtype()))), b)
    return mean, clusters.astype(jnp.int32), logits


def match(enc_params, table, encoder, ids: np.ndarray, mask: np.ndarray, *, b: int,
          batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matcher on tokenised texts (``ids, mask: i32[n, s]``).

    Returns:
      ``(E: f32[n, h]`` unit-norm mean-pooled embeddings (as
      :func:`jxmc.models.transformer.common.embed_tokens`), ``clusters: i32[n, b]``
      the top-``b`` clusters best first, ``logits: f32[n, b]`` their scores).
    """
    dev = jax.tree_util.tree_map(jnp.asarray, enc_params)
    tab = jax.tree_util.tree_map(jnp.asarray, table)
    out = [[np.asarray(a)[bt["valid"]]
            for a in _match_batch(dev, tab, bt["ids"], bt["mask"], encoder=encoder, b=b)]
           for bt in batches({"ids": ids, "mask": mask}, batch_size, epoch=None)]
    E, clusters, logits = (np.concatenate(col) for col in zip(*out, strict=True))
    E = E.astype(np.float32)
    E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    return E, clusters, logits.astype(np.float32)


def _fit(X, Y, config: Config, *, seed: int, ckpt, progress: bool, texts: list[str]):
    """Indexes the labels, fine-tunes the matcher, then trains the rankers.

    Returns:
      ``{"encoder", "matcher": {"w": f32[K, h], "b": f32[K]}, "ranker": the label
      level of the rankers (:mod:`jxmc.ops.sparse_weights`), "perm": i32[K * B],
      "branching": i32[2], "n_tfidf": i32, "encoder_config", "tokenizer"}``.

    Raises:
      ConfigError: fewer than 2 labels, an option :func:`check_config` refuses, and
        what :func:`jxmc.models.transformer.common.fit_network` raises.
    """
    check_config(config)
    X = sp.csr_matrix(X, dtype=np.float32)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2:
        raise ConfigError("x-transformer needs at least 2 labels")
    net = common.fit_network(RECIPE, X, Y, texts, config, seed=seed, ckpt=ckpt,
                             progress=progress)
    if net.tree.depth != 2:  # the merged tree of >= 2 labels always has two levels
        raise ConfigError(f"x-transformer needs clusters and labels, got a tree of "
                          f"{net.tree.depth} levels")
    t0 = time.perf_counter()
    table = net.params["heads"]["level_1"]
    K = net.tree.branching[0]
    E, clusters, _ = match(net.params["encoder"], table, common.encoder_module(net.bert),
                           net.ids, net.mask, b=min(config.beam_size, K),
                           batch_size=config.predict_batch_size)
    Xb = add_bias(concat_features(X, E), config.bias)
    man = clusters if config.ranker_negatives == "tfn+man" else None
    options = rankers.Options(cost=config.linear_cost, threshold=config.linear_threshold)
    ranker = rankers.train_level(Xb, Y, net.tree, 2, options, beam_parents=man, seed=seed)
    if progress:
        print(f"x-transformer: rankers of {K} clusters trained ({config.ranker_negatives}), "
              f"{len(ranker['values'])} weights, {time.perf_counter() - t0:.1f} s", flush=True)
    return {"encoder": net.params["encoder"], "matcher": table, "ranker": ranker,
            "perm": np.asarray(net.tree.perm, np.int32),
            "branching": np.asarray(net.tree.branching, np.int32),
            "n_tfidf": np.asarray(X.shape[1], np.int32),
            **common.pack_encoder_files(net.bert, net.tok)}


class Model(NamedTuple):
    """X-Transformer laid out for prediction: the encoder (``bert`` config, ``tok``
    tokenizer, ``encoder`` params), the ``matcher`` table, the rankers' scoring
    layout (``ranker``: ``(packed, dense)`` device arrays, ``shape`` their static
    steps, :func:`jxmc.ops.sparse_weights.scoring_layout`), ``perm: i32[K * B]`` and
    the ``branching`` ``(K, B)``, all on the device."""

    bert: Any
    tok: Any
    encoder: dict
    matcher: dict
    ranker: tuple
    shape: tuple[int, int, int]
    perm: jax.Array
    branching: tuple[int, int]


def _prepare(params, config: Config, mesh=None) -> base.Prepared:
    bert, tok = common.unpack_encoder_files(params)
    K, B = (int(b) for b in params["branching"])
    lv = params["ranker"]
    packed, dense, shape = sw.scoring_layout({k: lv[k] for k in scoring.LEVEL_KEYS}, B)
    on_device = functools.partial(jax.tree_util.tree_map, jnp.asarray)
    return base.Prepared(params, config, mesh, Model(
        bert, tok, on_device(params["encoder"]), on_device(params["matcher"]),
        on_device((packed, dense)), tuple(int(s) for s in shape),
        jnp.asarray(params["perm"]), (K, B)))


@functools.partial(jax.jit, static_argnames=("shape", "B", "k", "transform"))
def _rank_batch(ranker, perm, q_idx, q_val, clusters, logits, *, shape, B, k, transform):
    """Top-``k`` labels of one batch: the labels of ``clusters: i32[n, b]`` (matcher
    ``logits: f32[n, b]``), each scored ``sigmoid(matcher) * t(ranker)`` (module
    docstring), from ELL queries ``q_idx: i32[n, z]``, ``q_val: f32[n, z]`` with the
    bias feature."""
    packed, dense = ranker
    n = clusters.shape[0]

    def ranker_scores(_):  # [n, b, B] -> [n, b * B]
        return scoring.level_scores(packed, dense, shape, q_idx, q_val, clusters,
                                    B).reshape(n, -1)

    plp = jnp.where(clusters >= 0, jax.nn.log_sigmoid(logits), -jnp.inf)
    cand, _, logp = expand(clusters, plp, B, ranker_scores, TRANSFORMS[transform], perm)
    leaves, lp = keep(cand, logp, min(k, cand.shape[1]))
    return leaf_topk(leaves, lp, perm, k)


def _predict(model: base.Prepared, X, config: Config, *, k: int, texts: list[str]) -> TopK:
    """Top-``k`` labels by the matcher's top ``beam_size`` clusters and the rankers of
    their labels on ``[X, embedding(texts)]``.

    Returns:
      numpy :class:`TopK` ``ids: i32[n, k]`` (``-1`` padded), ``scores: f32[n, k]``
      (``-inf`` there).

    Raises:
      ConfigError: ``X`` of another width than in training; a bad ``transform`` or
        ``beam_size``.
    """
    check_config(config)
    X = sp.csr_matrix(X, dtype=np.float32)
    n_tfidf = int(model.params["n_tfidf"])
    if X.shape[1] != n_tfidf:
        raise ConfigError(f"X has {X.shape[1]} features, the model {n_tfidf}")
    st = model.state
    K, B = st.branching
    ids, mask = encode(st.tok, texts, config.max_len)
    E, clusters, logits = match(st.encoder, st.matcher, common.encoder_module(st.bert), ids,
                                mask, b=min(config.beam_size, K),
                                batch_size=config.predict_batch_size)
    Xb = add_bias(concat_features(X, E), config.bias)
    n, size = Xb.shape[0], config.predict_batch_size
    out_ids, out_sc = [], []
    for a in range(0, n, size):
        rows = np.arange(a, min(a + size, n))
        pad = size - len(rows)
        sub = Xb[rows]
        z = 1 << max(3, math.ceil(math.log2(max(int(np.diff(sub.indptr).max()), 1))))
        q = csr_to_ell(sub, z)
        r = _rank_batch(st.ranker, st.perm, np.pad(q.indices, ((0, pad), (0, 0))),
                        np.pad(q.values, ((0, pad), (0, 0))),
                        np.pad(clusters[rows], ((0, pad), (0, 0)), constant_values=-1),
                        np.pad(logits[rows], ((0, pad), (0, 0))), shape=st.shape, B=B, k=k,
                        transform=config.transform)
        out_ids.append(np.asarray(r.ids)[: len(rows)])
        out_sc.append(np.asarray(r.scores)[: len(rows)])
    return TopK(np.concatenate(out_ids).astype(np.int32),
                np.concatenate(out_sc).astype(np.float32))


METHOD = base.method(
    "x-transformer", Config, fit=_fit, predict=_predict, prepare=_prepare, needs_texts=True,
    predict_fields=PREDICT_FIELDS,
    summary="X-Transformer: a transformer matcher fine-tuned on PIFA label clusters, then "
            "linear rankers on TF-IDF + its embedding over the matcher's top clusters (Flax)")
fit = METHOD.fit
predict = METHOD.predict  # params or a prepared model
