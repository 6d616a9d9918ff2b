"""``--method lightxml``: LightXML (Jiang, Wang, Sun, Chen, Zhuang & Yang,
"LightXML: Transformer with Dynamic Negative Sampling for High-Performance
Extreme Multi-label Text Classification", AAAI 2021).

* Labels are grouped into clusters of at most ``max_leaf_size`` labels (a
  balanced k-means tree on PIFA, merged to two levels: clusters, labels).
* The text representation is the concatenation of the [CLS] of the last
  ``feature_layers`` encoder layers (Section 3.2; 5 in the paper).
* The cluster level is a dense linear layer on it; the label level projects
  it to ``hidden_dim`` and scores only the labels of the ``beam_size`` best
  clusters by the model's own current prediction, plus the positives'
  clusters in training: dynamic negative sampling (Section 3.3).
* Both BCE losses are summed and trained jointly; a label's score is the
  product of its cluster's and its own sigmoid (Section 3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import scipy.sparse as sp

from jxmc.embed import pifa
from jxmc.errors import ConfigError
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
    fit_phases,
    load_encoder,
    predict_texts,
    unbundle,
)
from jxmc.tree.kmeans import build_tree
from jxmc.tree.label_tree import LabelTree
from jxmc.types import TopK


@dataclass(frozen=True)
class Config(TextConfig):
    max_leaf_size: int = 16  # labels per cluster at most
    feature_layers: int = 5  # last layers whose [CLS] are concatenated (LightXML 5)
    hidden_dim: int = 300  # width of the label embeddings (LightXML 300)
    lr_heads: float = 1e-3  # learning rate of the cluster layer and label embeddings
    dropout: float = 0.5  # dropout on the concatenated [CLS] (LightXML 0.5)


def make_spec(config: Config, bert, branching) -> cascade.Spec:
    N = bert.num_hidden_layers
    feats = tuple(range(max(N - config.feature_layers, 0), N))
    return cascade.Spec(bert, tuple(int(b) for b in branching), (feats, feats),
                        config.beam_size, config.dropout, jax.numpy.dtype(compute_dtype()).name)


def fit(X, Y, config: Config = Config(), *, seed: int = 0, ckpt=None, progress: bool = True,
        texts: list[str] | None = None, mesh=None):
    """Trains LightXML on ``texts`` (``X``: TF-IDF, used for label clustering only).

    With a ``mesh`` the label tables are split on ``model`` and the batches on ``data``
    (:func:`jxmc.train.text_model.fit_phases`).

    Raises:
      ConfigError: no texts or fewer than 2 labels.
    """
    Y = sp.csr_matrix(Y, dtype=np.float32)
    texts = check_texts(texts, Y.shape[0], "lightxml")
    if Y.shape[1] < 2:
        raise ConfigError("lightxml needs at least 2 labels")
    bert, enc, tok = load_encoder(config, seed)
    tree = collapse(build_tree(pifa(Y, X), max_leaf_size=config.max_leaf_size,
                               nr_splits=config.nr_splits, iters=config.kmeans_iters,
                               seed=seed), 2)
    spec = make_spec(config, bert, tree.branching)
    width = bert.hidden_size * len(spec.layers[0])
    K1, K2 = tree.level_sizes()[0], tree.level_sizes()[-1]
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed + 1), 3)
    label = init_table(k2, K2, config.hidden_dim)
    proj = init_table(k3, width, config.hidden_dim)
    heads = {"level_1": init_table(k1, K1, width)}
    if tree.depth > 1:
        heads["level_2"] = {**label, "proj_w": proj["w"],
                            "proj_b": np.zeros(config.hidden_dim, np.float32)}
    ids, mask = encode(tok, texts, config.max_len)
    arrays = {"ids": ids, "mask": mask, "pos": level_positives(Y, tree, config.max_positives)}
    params = fit_phases({"encoder": enc, "heads": heads}, spec, tree.perm, arrays,
                        [tuple(range(1, tree.depth + 1))], config, seed=seed, ckpt=ckpt,
                        progress=progress, desc="lightxml", mesh=mesh)
    return {**params, "perm": np.asarray(tree.perm, np.int32),
            "branching": np.asarray(tree.branching, np.int32), **bundle(bert, tok)}


def predict(params, X, config: Config = Config(), *, k: int = 10,
            texts: list[str] | None = None, mesh=None) -> TopK:
    """Top-``k`` labels of each text.

    Raises:
      ConfigError: no texts, or a count different from ``X``'s rows.
    """
    texts = check_texts(texts, X.shape[0], "lightxml")
    bert, _ = unbundle(params)
    tree = LabelTree(np.asarray(params["perm"]), tuple(int(b) for b in params["branching"]))
    return predict_texts(params, texts, make_spec(config, bert, tree.branching), k=k,
                         max_len=config.max_len, batch_size=config.predict_batch_size,
                         mesh=mesh)


METHOD = Method(
    name="lightxml", Config=Config, fit=fit, predict=predict,
    summary="LightXML: transformer with a cluster level and a label level trained on "
            "dynamic negatives from the cluster predictions (Flax)")
