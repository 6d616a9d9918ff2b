"""Tiny encoders and toy text data for tests and smoke runs (no downloads).

:func:`tiny_encoder_dir` writes a Hugging Face style folder (``config.json``,
``vocab.txt``, and with ``weights=True`` a random ``model.safetensors``) for a
BERT of a few layers and a small hidden width; :func:`toy_texts` makes
documents whose words reveal their labels, so a few steps of training learn
something.
"""

from __future__ import annotations

import json
import os

import numpy as np
import scipy.sparse as sp

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_encoder_dir(folder: str, *, words: int = 64, layers: int = 2, hidden: int = 32,
                     heads: int = 2, max_len: int = 64, weights: bool = False,
                     seed: int = 0) -> str:
    """Writes a tiny BERT folder with the vocabulary ``w0 .. w{words-1}``; returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    vocab = SPECIALS + [f"w{i}" for i in range(words)]
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    cfg = {"model_type": "bert", "hidden_act": "gelu", "vocab_size": len(vocab),
           "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "intermediate_size": 2 * hidden, "max_position_embeddings": max_len,
           "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0,
           "attention_probs_dropout_prob": 0.0, "pad_token_id": 0}
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    if weights:
        from safetensors.numpy import save_file

        rng = np.random.default_rng(seed)

        def r(*shape):
            return (rng.standard_normal(shape) * 0.05).astype(np.float32)

        h, i = hidden, 2 * hidden
        w = {"embeddings.word_embeddings.weight": r(len(vocab), h),
             "embeddings.position_embeddings.weight": r(max_len, h),
             "embeddings.token_type_embeddings.weight": r(2, h),
             "embeddings.LayerNorm.weight": 1 + r(h), "embeddings.LayerNorm.bias": r(h)}
        for j in range(layers):
            p = f"encoder.layer.{j}."
            for name, (o, n) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                                 "attention.self.value": (h, h),
                                 "attention.output.dense": (h, h), "intermediate.dense": (i, h),
                                 "output.dense": (h, i)}.items():
                w[p + name + ".weight"], w[p + name + ".bias"] = r(o, n), r(o)
            for name in ("attention.output.LayerNorm", "output.LayerNorm"):
                w[p + name + ".weight"], w[p + name + ".bias"] = 1 + r(h), r(h)
        save_file(w, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return folder


def toy_texts(n: int, n_labels: int, *, words: int = 64, seed: int = 0):
    """``(texts, X: csr f32[n, words], Y: csr f32[n, n_labels])``: each point has 1-3
    labels and its text repeats the word ``w{label % words}`` of each, plus noise words."""
    rng = np.random.default_rng(seed)
    texts, rows, cols = [], [], []
    for i in range(n):
        labs = rng.choice(n_labels, size=rng.integers(1, 4), replace=False)
        toks = [f"w{lab % words}" for lab in labs for _ in range(2)]
        toks += [f"w{j}" for j in rng.integers(0, words, size=4)]
        rng.shuffle(toks)
        texts.append(" ".join(toks))
        rows += [i] * len(labs)
        cols += list(labs)
    Y = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n_labels))
    counts = np.zeros((n, words), np.float32)
    for i, t in enumerate(texts):
        for tok in t.split():
            counts[i, int(tok[1:])] += 1
    X = sp.csr_matrix(counts / np.linalg.norm(counts, axis=1, keepdims=True))
    return texts, X, Y
