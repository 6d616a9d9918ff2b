"""``--method cascadexml``: CascadeXML (Kharbanda, Banerjee, Schultheis & Babbar,
"CascadeXML: Rethinking Transformers for End-to-end Multi-resolution Training
in Extreme Multi-label Classification", NeurIPS 2022).

* A balanced label tree from PIFA on TF-IDF (:mod:`jxmc.embed`,
  :func:`jxmc.tree.build.build`), its top levels merged to at most ``levels`` levels.
* Level ``t`` of ``D`` is scored from the [CLS] of its own encoder layer, the
  coarsest from an earlier layer and the leaves from the last (Section 3.1):
  layers ``N - g (D - t)`` (1-based) with a gap ``g = max(1, N // 6)``, and the
  first level from the concatenated [CLS] of that layer and the one before,
  projected back to ``h`` -- for BERT-base (``N = 12``) and 3 levels the
  reference implementation's layers ``(7, 8), 10, 12``; for the 6-layer
  all-MiniLM-L6-v2, ``(3, 4), 5, 6``.
* Level 1 is scored densely, level ``t + 1`` on the children of level ``t``'s
  ``beam_size`` best clusters, with the positives' parents added in training
  (Section 3.2; the option ``negatives``, default ``tfn+man``, chooses another training
  shortlist: :func:`jxmc.tree.shortlist.train_parents`).
* The per-level BCE losses are summed and everything -- encoder and every
  label table -- trains end to end (Section 3.3).
* Prediction: a path's score is the product of its levels' sigmoids.

Fitted by :func:`jxmc.models.transformer.common.fit_network` (one phase training
every level); ``METHOD``'s prediction fields: ``beam_size``, ``predict_batch_size``.

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
    """The network: level ``t`` from the [CLS] of :func:`level_layers`' layers."""
    return common.network_spec(config, bert, branching,
                               level_layers(bert.num_hidden_layers, len(branching)))


def init_heads(config: Config, tree, spec: cascade.Spec, bert, seed: int) -> dict:
    """A table per level (``N(0, 0.02)``, width ``h``); the first level's concatenated
    [CLS] projected back to ``h`` (``proj_w``: Xavier-normal, ``proj_b`` zero)."""
    h = bert.hidden_size
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), tree.depth + 1)
    heads = {f"level_{t}": init_table(keys[t - 1], K, h)
             for t, K in enumerate(tree.level_sizes(), start=1)}
    width = h * len(spec.layers[0])
    if width != h:
        proj = init_table(keys[-1], width, h, std=float(np.sqrt(2.0 / (width + h))))
        heads["level_1"] = {**heads["level_1"], "proj_w": proj["w"],
                             "proj_b": np.zeros(h, np.float32)}
    return heads


RECIPE = common.Recipe("cascadexml", levels=lambda config: config.levels, spec=make_spec,
                       heads=init_heads, phases=lambda depth: [tuple(range(1, depth + 1))])


def _fit(X, Y, config: Config, *, seed: int, ckpt, progress: bool, texts: list[str], mesh):
    """Trains CascadeXML on ``texts`` (``X``: TF-IDF, used for the label tree only).

    With a ``mesh`` the label tables are split on ``model`` and the batches on ``data``
    (:func:`jxmc.models.transformer.common.fit_phases`).

    Raises:
      ConfigError: fewer than 2 labels, ``levels < 1``.
    """
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2 or config.levels < 1:
        raise ConfigError("cascadexml needs at least 2 labels and levels >= 1")
    net = common.fit_network(RECIPE, X, Y, texts, config, seed=seed, ckpt=ckpt,
                             progress=progress, mesh=mesh)
    return common.saved_params(net)


METHOD = base.method(
    "cascadexml", Config, fit=_fit, predict=common.network_predict(make_spec),
    prepare=common.prepare_network, needs_texts=True, supports_mesh=True,
    predict_fields=common.PREDICT_FIELDS,
    summary="CascadeXML: a transformer whose layers' [CLS] score the levels of a label tree, "
            "shortlists from the coarser level, trained end to end (Flax)")
fit = METHOD.fit
predict = METHOD.predict  # params or a prepared model; mesh= lays params out on a mesh first
