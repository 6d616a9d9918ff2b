"""``--method xr-transformer``: XR-Transformer (Zhang, Chang, Yu, Hsieh &
Dhillon, "Fast Multi-Resolution Transformer Fine-tuning for Extreme
Multi-label Text Classification", NeurIPS 2021).

1. A balanced label tree from PIFA on TF-IDF (PECOS's indexer), merged to at
   most ``levels`` levels.
2. Progressive fine-tuning, coarse to fine (Section 4.1): phase ``t`` trains the
   encoder and the level-``t`` label table for ``epochs`` epochs on the
   shortlist TFN + MAN (Section 4.2) -- the children of the positives' parents
   and of the parents the model's own beam keeps at level ``t - 1`` (the matcher
   is the current encoder with the level-``t - 1`` table, frozen in phase ``t``
   like every other table; the option ``negatives``, default ``tfn+man``, chooses
   another: :func:`jxmc.tree.shortlist.train_parents`).  The table of level ``t``
   starts from its parents' rows (bootstrapping, Section 4.3).  The text representation is the
   mean-pooled last layer (sentence-transformers' pooling of all-MiniLM-L6-v2).
3. The final rankers are XR-Linear (:mod:`jxmc.models.tree_linear.xr_linear`) trained on
   the concatenation of the TF-IDF features and the fine-tuned embedding
   (each unit-norm; the row scaled by ``1/sqrt(2)``), with TFN + MAN negatives
   (Section 4.4).

Steps 1-2 are :func:`jxmc.models.transformer.common.fit_network` (one phase per
level); ``METHOD``'s prediction fields: ``beam_size`` (the XR-Linear beam),
``predict_batch_size`` (texts embedded at once).

The shortlist levels' label tables (``t >= 2``) may instead take sparse row updates in
``bfloat16`` (or ``float8_e4m3fn``): ``--set head_update=rowwise-adagrad|sgd --set
head_dtype=bfloat16 [--set lr_rows=...]`` (:mod:`jxmc.nn.sparse_rows`; no dense
``K x h`` gradient or optimizer pass; one device, not a mesh).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.models.transformer import common
from jxmc.models.tree_linear import xr_linear
from jxmc.nn import cascade
from jxmc.nn.heads import init_table
from jxmc.nn.tokenize import encode
from jxmc.types import TopK


@dataclass(frozen=True)
class Config(common.TextConfig):
    levels: int = 3  # fine-tuning levels at most (top tree levels merged)
    epochs: int = 2  # epochs per fine-tuning level
    lr_heads: float = 1e-3  # learning rate of the label tables
    linear_negatives: str = "tfn+man"  # negatives of the final XR-Linear rankers
    linear_cost: float = 1.0  # XR-Linear squared-hinge weight (liblinear's C)
    linear_threshold: float = 0.1  # XR-Linear weight threshold

    RENAMED = {"linear_C": "linear_cost"}  # the names older jxmc versions wrote


def _linear_config(config: Config) -> xr_linear.Config:
    return xr_linear.Config(nr_splits=config.nr_splits, max_leaf_size=config.max_leaf_size,
                            kmeans_iters=config.kmeans_iters, cost=config.linear_cost,
                            threshold=config.linear_threshold,
                            negatives=config.linear_negatives, beam_size=config.beam_size)


def _concat(X, E) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    return sp.csr_matrix(sp.hstack([X, sp.csr_matrix(E)]) * np.float32(1 / np.sqrt(2)),
                         dtype=np.float32)


def make_spec(config: Config, bert, branching) -> cascade.Spec:
    """The network: every level from the mean-pooled last layer."""
    return common.network_spec(config, bert, branching, ((),) * len(branching))


def init_heads(config: Config, tree, spec: cascade.Spec, bert, seed: int) -> dict:
    """A table per level, ``N(0, 0.02)`` of width ``h``."""
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), tree.depth)
    return {f"level_{t}": init_table(keys[t - 1], K, bert.hidden_size)
            for t, K in enumerate(tree.level_sizes(), start=1)}


def bootstrap(tree):
    """Phase ``p`` trains level ``p + 1``: its table starts from its parents' rows."""
    def start(p, params):
        if p == 0:
            return params
        B = tree.branching[p]
        prev = params["heads"][f"level_{p}"]
        old = params["heads"][f"level_{p + 1}"]  # its storage dtype (head_dtype) kept
        new = {k: np.repeat(np.asarray(prev[k], np.float32), B, axis=0).astype(old[k].dtype)
               for k in ("w", "b")}
        return {**params, "heads": {**params["heads"], f"level_{p + 1}": new}}

    return start


RECIPE = common.Recipe("xr-transformer", levels=lambda config: config.levels, spec=make_spec,
                       heads=init_heads, phases=lambda depth: [(t,) for t in range(1, depth + 1)],
                       on_phase_start=bootstrap)


def fit_with_network(X, Y, config: Config, *, seed: int = 0, ckpt=None, progress: bool = True,
                     texts: list[str], mesh=None) -> tuple[dict, common.Network]:
    """``(params, network)``: the method's params (as ``fit`` returns them) and the
    fine-tuned :class:`jxmc.models.transformer.common.Network` (encoder and level
    tables; ``common.saved_params`` of it predicts on its own through
    ``common.network_predict(make_spec)``, which shows what the fine-tuning learnt
    apart from the XR-Linear rankers).

    Raises:
      ConfigError: fewer than 2 labels, ``levels < 1``, no ``texts``, and what
        :func:`jxmc.models.transformer.common.fit_network` raises.
    """
    if texts is None:
        raise ConfigError("xr-transformer needs the training texts")
    X = sp.csr_matrix(X, dtype=np.float32)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2 or config.levels < 1:
        raise ConfigError("xr-transformer needs at least 2 labels and levels >= 1")
    net = common.fit_network(RECIPE, X, Y, texts, config, seed=seed, ckpt=ckpt,
                             progress=progress, mesh=mesh)
    E = common.embed_tokens(net.params["encoder"], common.encoder_module(net.bert), net.ids,
                            net.mask, batch_size=config.predict_batch_size, mesh=mesh)
    linear = xr_linear.METHOD.fit(_concat(X, E), Y, _linear_config(config), seed=seed,
                                  ckpt=None, progress=progress, mesh=mesh)
    params = {"encoder": net.params["encoder"], "linear": linear,
              "n_tfidf": np.asarray(X.shape[1], np.int32),
              **common.pack_encoder_files(net.bert, net.tok)}
    return params, net


def _fit(X, Y, config: Config, *, seed: int, ckpt, progress: bool, texts: list[str], mesh):
    """Fine-tunes the encoder level by level, then trains XR-Linear on ``[X, embedding]``.

    With a ``mesh`` both run on it (:func:`jxmc.models.transformer.common.fit_phases`,
    :func:`jxmc.models.tree_linear.xr_linear.fit`).

    Raises:
      ConfigError: fewer than 2 labels, ``levels < 1``.
    """
    return fit_with_network(X, Y, config, seed=seed, ckpt=ckpt, progress=progress, texts=texts,
                            mesh=mesh)[0]


class Model(NamedTuple):
    """XR-Transformer laid out for prediction: the encoder (``bert`` config, ``tok``
    tokenizer, ``encoder`` params on the device, or replicated over the mesh) and the
    prepared XR-Linear ``linear`` (on a mesh: its rankers split on ``model``,
    :mod:`jxmc.models.tree_linear.mesh`)."""

    bert: Any
    tok: Any
    encoder: dict
    linear: base.Prepared


def _prepare(params, config: Config, mesh=None) -> base.Prepared:
    bert, tok = common.unpack_encoder_files(params)
    encoder = common.place_encoder(params["encoder"], mesh)
    linear = xr_linear.METHOD.prepare(params["linear"], _linear_config(config), mesh)
    return base.Prepared(params, config, mesh, Model(bert, tok, encoder, linear))


def _predict(model: base.Prepared, X, config: Config, *, k: int, texts: list[str]) -> TopK:
    """Top-``k`` labels by XR-Linear on ``[X, embedding(texts)]``; with a mesh both the
    encoder pass (batches split on ``data``) and XR-Linear's beam run on it.

    Raises:
      ConfigError: ``X`` of another width than in training; on a mesh, a
        ``predict_batch_size`` that is not a multiple of its ``data`` size.
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    n_tfidf = int(model.params["n_tfidf"])
    if X.shape[1] != n_tfidf:
        raise ConfigError(f"X has {X.shape[1]} features, the model {n_tfidf}")
    st = model.state
    ids, mask = encode(st.tok, texts, config.max_len)
    E = common.embed_tokens(st.encoder, common.encoder_module(st.bert), ids, mask,
                            batch_size=config.predict_batch_size, mesh=model.mesh)
    return xr_linear.METHOD.predict(st.linear, _concat(X, E), _linear_config(config), k=k)


METHOD = base.method(
    "xr-transformer", Config, fit=_fit, predict=_predict, prepare=_prepare, needs_texts=True,
    supports_mesh=True, predict_fields=common.PREDICT_FIELDS,
    summary="XR-Transformer: coarse-to-fine transformer fine-tuning with TFN+MAN negatives, "
            "then XR-Linear on TF-IDF + fine-tuned embeddings (Flax)")
fit = METHOD.fit
predict = METHOD.predict  # params or a prepared model; mesh= lays params out on a mesh first
