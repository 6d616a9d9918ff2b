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
  clusters in training: dynamic negative sampling (Section 3.3; the option
  ``negatives``, default ``tfn+man``, chooses another training shortlist:
  :func:`jxmc.tree.shortlist.train_parents`).
* Both BCE losses are summed and trained jointly; a label's score is the
  product of its cluster's and its own sigmoid (Section 3.4).

Fitted by :func:`jxmc.models.transformer.common.fit_network` (one phase training
both levels); ``METHOD``'s prediction fields: ``beam_size``, ``predict_batch_size``.

The shortlist levels' label tables (``t >= 2``) may instead take sparse row updates in
``bfloat16`` (or ``float8_e4m3fn``): ``--set head_update=rowwise-adagrad|sgd --set
head_dtype=bfloat16 [--set lr_rows=...]`` (:mod:`jxmc.nn.sparse_rows`; no dense
``K x h`` gradient or optimizer pass; one device, not a mesh).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.models.transformer import common
from jxmc.nn import cascade
from jxmc.nn.heads import init_table


@dataclass(frozen=True)
class Config(common.TextConfig):
    max_leaf_size: int = 16  # labels per cluster at most
    feature_layers: int = 5  # last layers whose [CLS] are concatenated (LightXML 5)
    hidden_dim: int = 300  # width of the label embeddings (LightXML 300)
    lr_heads: float = 1e-3  # learning rate of the cluster layer and label embeddings
    dropout: float = 0.5  # dropout on the concatenated [CLS] (LightXML 0.5)


def make_spec(config: Config, bert, branching) -> cascade.Spec:
    """The network: both levels from the concatenated [CLS] of the last
    ``feature_layers`` layers."""
    N = bert.num_hidden_layers
    feats = tuple(range(max(N - config.feature_layers, 0), N))
    return common.network_spec(config, bert, branching, (feats, feats))


def init_heads(config: Config, tree, spec: cascade.Spec, bert, seed: int) -> dict:
    """The cluster layer (width: the concatenated [CLS]) and, below it, the label
    embeddings (``hidden_dim``) with the projection to them (``proj_w``, ``proj_b``)."""
    width = bert.hidden_size * len(spec.layers[0])
    K1, K2 = tree.level_sizes()[0], tree.level_sizes()[-1]
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed + 1), 3)
    label = init_table(k2, K2, config.hidden_dim)
    proj = init_table(k3, width, config.hidden_dim)
    heads = {"level_1": init_table(k1, K1, width)}
    if tree.depth > 1:
        heads["level_2"] = {**label, "proj_w": proj["w"],
                            "proj_b": np.zeros(config.hidden_dim, np.float32)}
    return heads


RECIPE = common.Recipe("lightxml", levels=lambda config: 2, spec=make_spec, heads=init_heads,
                       phases=lambda depth: [tuple(range(1, depth + 1))])


def _fit(X, Y, config: Config, *, seed: int, ckpt, progress: bool, texts: list[str], mesh):
    """Trains LightXML on ``texts`` (``X``: TF-IDF, used for label clustering only).

    With a ``mesh`` the label tables are split on ``model`` and the batches on ``data``
    (:func:`jxmc.models.transformer.common.fit_phases`).

    Raises:
      ConfigError: fewer than 2 labels.
    """
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2:
        raise ConfigError("lightxml needs at least 2 labels")
    net = common.fit_network(RECIPE, X, Y, texts, config, seed=seed, ckpt=ckpt,
                             progress=progress, mesh=mesh)
    return common.saved_params(net)


METHOD = base.method(
    "lightxml", Config, fit=_fit, predict=common.network_predict(make_spec),
    prepare=common.prepare_network, needs_texts=True, supports_mesh=True,
    predict_fields=common.PREDICT_FIELDS,
    summary="LightXML: transformer with a cluster level and a label level trained on "
            "dynamic negatives from the cluster predictions (Flax)")
fit = METHOD.fit
predict = METHOD.predict  # params or a prepared model; mesh= lays params out on a mesh first
