"""``--method cascadexml``: CascadeXML (Kharbanda, Banerjee, Schultheis & Babbar,
"CascadeXML: Rethinking Transformers for End-to-end Multi-resolution Training
in Extreme Multi-label Classification", NeurIPS 2022).

* A balanced label tree from PIFA on TF-IDF (:mod:`jxmc.embed`,
  :mod:`jxmc.tree.kmeans`), its top levels merged to at most ``levels`` levels.
* Level ``t`` of ``D`` is scored from the [CLS] of its own encoder layer, the
  coarsest from an earlier layer and the leaves from the last (Section 3.1):
  layers ``N - g (D - t)`` (1-based) with a gap ``g = max(1, N // 6)``, and the
  first level from the concatenated [CLS] of that layer and the one before,
  projected back to ``h`` -- for BERT-base (``N = 12``) and 3 levels the
  reference implementation's layers ``(7, 8), 10, 12``; for the 6-layer
  all-MiniLM-L6-v2, ``(3, 4), 5, 6``.
* Level 1 is scored densely, level ``t + 1`` on the children of level ``t``'s
  ``beam_size`` best clusters, with the positives' parents added in training
  (Section 3.2).
* The per-level BCE losses are summed and everything -- encoder and every
  label table -- trains end to end (Section 3.3).
* Prediction: a path's score is the product of its levels' sigmoids.
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
    levels: int = 3  # tree levels at most (top levels merged); each from its own encoder layer
    max_leaf_size: int = 16  # labels per leaf cluster at most (small leaves: a 3-level cascade)
    lr_heads: float = 1e-2  # label tables learn faster than the encoder (CascadeXML: 1e-2..1e-3)


def level_layers(n_layers: int, depth: int) -> tuple[tuple[int, ...], ...]:
    """Per level ``t = 1 .. depth``, the 0-based encoder layers whose [CLS] score it:
    ``N - 1 - g (depth - t)`` with ``g = max(1, N // 6)`` (shrunk when the tree is too
    deep for it), the first level with the layer before it as well."""
    gap = max(1, n_layers // 6)
    while gap > 1 and n_layers - 1 - gap * (depth - 1) < 1:
        gap -= 1
    own = [max(n_layers - 1 - gap * (depth - t), 0) for t in range(1, depth + 1)]
    first = (own[0] - 1, own[0]) if own[0] >= 1 else (own[0],)
    return (first,) + tuple((i,) for i in own[1:])


def make_spec(config: Config, bert, branching: tuple[int, ...]) -> cascade.Spec:
    layers = level_layers(bert.num_hidden_layers, len(branching))
    return cascade.Spec(bert, tuple(int(b) for b in branching), layers, config.beam_size,
                        config.dropout, jax.numpy.dtype(compute_dtype()).name)


def fit(X, Y, config: Config = Config(), *, seed: int = 0, ckpt=None, progress: bool = True,
        texts: list[str] | None = None, mesh=None):
    """Trains CascadeXML on ``texts`` (``X``: TF-IDF, used for the label tree only).

    With a ``mesh`` the label tables are split on ``model`` and the batches on ``data``
    (:func:`jxmc.train.text_model.fit_phases`).

    Raises:
      ConfigError: no texts, fewer than 2 labels, ``levels < 1``.
    """
    Y = sp.csr_matrix(Y, dtype=np.float32)
    texts = check_texts(texts, Y.shape[0], "cascadexml")
    if Y.shape[1] < 2 or config.levels < 1:
        raise ConfigError("cascadexml needs at least 2 labels and levels >= 1")
    bert, enc, tok = load_encoder(config, seed)
    tree = build_tree(pifa(Y, X), max_leaf_size=config.max_leaf_size,
                      nr_splits=config.nr_splits, iters=config.kmeans_iters, seed=seed)
    tree = collapse(tree, config.levels)
    spec = make_spec(config, bert, tree.branching)
    h = bert.hidden_size
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), tree.depth + 1)
    heads = {f"level_{t}": init_table(keys[t - 1], K, h)
             for t, K in enumerate(tree.level_sizes(), start=1)}
    width = h * len(spec.layers[0])
    if width != h:  # the first level's concatenated [CLS] projected to h (Xavier-normal)
        proj = init_table(keys[-1], width, h, std=float(np.sqrt(2.0 / (width + h))))
        heads["level_1"] = {**heads["level_1"], "proj_w": proj["w"],
                             "proj_b": np.zeros(h, np.float32)}
    ids, mask = encode(tok, texts, config.max_len)
    arrays = {"ids": ids, "mask": mask, "pos": level_positives(Y, tree, config.max_positives)}
    params = fit_phases({"encoder": enc, "heads": heads}, spec, tree.perm, arrays,
                        [tuple(range(1, tree.depth + 1))], config, seed=seed, ckpt=ckpt,
                        progress=progress, desc="cascadexml", mesh=mesh)
    return {**params, "perm": np.asarray(tree.perm, np.int32),
            "branching": np.asarray(tree.branching, np.int32), **bundle(bert, tok)}


def predict(params, X, config: Config = Config(), *, k: int = 10,
            texts: list[str] | None = None, mesh=None) -> TopK:
    """Top-``k`` labels of each text.

    Raises:
      ConfigError: no texts, or a count different from ``X``'s rows.
    """
    texts = check_texts(texts, X.shape[0], "cascadexml")
    bert, _ = unbundle(params)
    tree = LabelTree(np.asarray(params["perm"]), tuple(int(b) for b in params["branching"]))
    return predict_texts(params, texts, make_spec(config, bert, tree.branching), k=k,
                         max_len=config.max_len, batch_size=config.predict_batch_size,
                         mesh=mesh)


METHOD = Method(
    name="cascadexml", Config=Config, fit=fit, predict=predict,
    summary="CascadeXML: a transformer whose layers' [CLS] score the levels of a label tree, "
            "shortlists from the coarser level, trained end to end (Flax)")
