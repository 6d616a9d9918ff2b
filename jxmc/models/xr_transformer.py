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
   like every other table).  The table of level ``t`` starts from its parents'
   rows (bootstrapping, Section 4.3).  The text representation is the
   mean-pooled last layer (sentence-transformers' pooling of all-MiniLM-L6-v2).
3. The final rankers are XR-Linear (:mod:`jxmc.models.xr_linear`) trained on
   the concatenation of the TF-IDF features and the fine-tuned embedding
   (each unit-norm; the row scaled by ``1/sqrt(2)``), with TFN + MAN negatives
   (Section 4.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import scipy.sparse as sp

from jxmc.embed import pifa
from jxmc.errors import ConfigError
from jxmc.models import xr_linear
from jxmc.models.base import Method
from jxmc.nn import cascade
from jxmc.nn.encoder import compute_dtype
from jxmc.nn.heads import init_table
from jxmc.nn.tokenize import encode
from jxmc.train.data import collapse, level_positives
from jxmc.train.text_model import (
    TextConfig,
    bundle,
    check_texts,
    embed_texts,
    embed_tokens,
    fit_phases,
    load_encoder,
    unbundle,
)
from jxmc.tree.kmeans import build_tree
from jxmc.types import TopK


@dataclass(frozen=True)
class Config(TextConfig):
    levels: int = 3  # fine-tuning levels at most (top tree levels merged)
    epochs: int = 2  # epochs per fine-tuning level
    lr_heads: float = 1e-3  # learning rate of the label tables
    linear_negatives: str = "tfn+man"  # negatives of the final XR-Linear rankers
    linear_C: float = 1.0  # XR-Linear squared-hinge weight
    linear_threshold: float = 0.1  # XR-Linear weight threshold


def _linear_config(config: Config) -> xr_linear.Config:
    return xr_linear.Config(nr_splits=config.nr_splits, max_leaf_size=config.max_leaf_size,
                            kmeans_iters=config.kmeans_iters, C=config.linear_C,
                            threshold=config.linear_threshold,
                            negatives=config.linear_negatives, beam_size=config.beam_size)


def _concat(X, E) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    return sp.csr_matrix(sp.hstack([X, sp.csr_matrix(E)]) * np.float32(1 / np.sqrt(2)),
                         dtype=np.float32)


def fit(X, Y, config: Config = Config(), *, seed: int = 0, ckpt=None, progress: bool = True,
        texts: list[str] | None = None, mesh=None):
    """Fine-tunes the encoder level by level, then trains XR-Linear on ``[X, embedding]``.

    With a ``mesh`` both run on it (:func:`jxmc.train.text_model.fit_phases`,
    :func:`jxmc.models.xr_linear.fit`).

    Raises:
      ConfigError: no texts, fewer than 2 labels, ``levels < 1``.
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    texts = check_texts(texts, Y.shape[0], "xr-transformer")
    if Y.shape[1] < 2 or config.levels < 1:
        raise ConfigError("xr-transformer needs at least 2 labels and levels >= 1")
    bert, enc, tok = load_encoder(config, seed)
    tree = collapse(build_tree(pifa(Y, X), max_leaf_size=config.max_leaf_size,
                               nr_splits=config.nr_splits, iters=config.kmeans_iters,
                               seed=seed), config.levels)
    D = tree.depth
    spec = cascade.Spec(bert, tuple(int(b) for b in tree.branching), ((),) * D,
                        config.beam_size, config.dropout, jax.numpy.dtype(compute_dtype()).name)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), D)
    heads = {f"level_{t}": init_table(keys[t - 1], K, bert.hidden_size)
             for t, K in enumerate(tree.level_sizes(), start=1)}

    def bootstrap(p, params):  # phase p trains level p + 1; start it from its parents' rows
        if p == 0:
            return params
        B = tree.branching[p]
        prev = params["heads"][f"level_{p}"]
        new = {k: np.repeat(prev[k], B, axis=0) for k in ("w", "b")}
        return {**params, "heads": {**params["heads"], f"level_{p + 1}": new}}

    ids, mask = encode(tok, texts, config.max_len)
    arrays = {"ids": ids, "mask": mask, "pos": level_positives(Y, tree, config.max_positives)}
    params = fit_phases({"encoder": enc, "heads": heads}, spec, tree.perm, arrays,
                        [(t,) for t in range(1, D + 1)], config, seed=seed, ckpt=ckpt,
                        progress=progress, on_phase_start=bootstrap, desc="xr-transformer",
                        mesh=mesh)
    E = embed_tokens(params["encoder"], bert, ids, mask, batch_size=config.predict_batch_size)
    linear = xr_linear.fit(_concat(X, E), Y, _linear_config(config), seed=seed, ckpt=None,
                           progress=progress, mesh=mesh)
    return {"encoder": params["encoder"], "linear": linear,
            "n_tfidf": np.asarray(X.shape[1], np.int32), **bundle(bert, tok)}


def predict(params, X, config: Config = Config(), *, k: int = 10,
            texts: list[str] | None = None, mesh=None) -> TopK:
    """Top-``k`` labels by XR-Linear on ``[X, embedding(texts)]``.

    Raises:
      ConfigError: no texts, or ``X`` of another width than in training.
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    texts = check_texts(texts, X.shape[0], "xr-transformer")
    if X.shape[1] != int(params["n_tfidf"]):
        raise ConfigError(f"X has {X.shape[1]} features, the model {int(params['n_tfidf'])}")
    bert, tok = unbundle(params)
    E = embed_texts(params["encoder"], bert, tok, texts, max_len=config.max_len,
                    batch_size=config.predict_batch_size)
    return xr_linear.predict(params["linear"], _concat(X, E), _linear_config(config), k=k,
                             mesh=mesh)


METHOD = Method(
    name="xr-transformer", Config=Config, fit=fit, predict=predict,
    summary="XR-Transformer: coarse-to-fine transformer fine-tuning with TFN+MAN negatives, "
            "then XR-Linear on TF-IDF + fine-tuned embeddings (Flax)")
