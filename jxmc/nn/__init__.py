"""Neural pieces of the transformer methods: a Flax BERT encoder returning every
layer's [CLS] (:mod:`.encoder`; any Flax module with the same output plugs into
the heads), Hugging Face weight loading (:mod:`.weights`), tokenisation
(:mod:`.tokenize`), per-level label tables (:mod:`.heads`) and the multi-level
shortlist network (:mod:`.cascade`).  Top-k is :mod:`jxmc.ops.topk`; the
fixed-size shortlists (TFN / MAN / in-batch / uniform) are :mod:`jxmc.tree.shortlist`.

Flax Linen, not NNX: a Linen module is a pure function of an explicit parameter
pytree (``BertEncoder(config).apply({"params": p}, ids, mask)``), which is what
the rest of jxmc passes around -- params are nested dicts of arrays that orbax
saves, optax updates, ``jax.jit`` donates and :mod:`jxmc.sharding` lays out on
a mesh by path, and a Hugging Face checkpoint converts into one by renaming
keys.  NNX modules are stateful objects; every one of those edges would need an
``nnx.split`` / ``nnx.merge`` round trip and a second description of the state.

Compute dtype: bf16 on GPU/TPU, f32 on CPU (:func:`compute_dtype`); parameters,
softmax, LayerNorm and every returned score stay f32.
"""

from jxmc.nn.cascade import Spec, forward, level_loss, loss_fn, predict_topk
from jxmc.nn.encoder import BertConfig, BertEncoder, EncoderOutput, compute_dtype, init_params
from jxmc.nn.heads import init_table, score_dense, score_shortlist
from jxmc.nn.tokenize import encode, load_tokenizer
from jxmc.nn.weights import default_encoder_dir, load_pretrained

__all__ = ["BertConfig", "BertEncoder", "EncoderOutput", "Spec", "compute_dtype",
           "default_encoder_dir", "encode", "forward", "init_params", "init_table", "level_loss",
           "load_pretrained", "load_tokenizer", "loss_fn", "predict_topk", "score_dense",
           "score_shortlist"]
