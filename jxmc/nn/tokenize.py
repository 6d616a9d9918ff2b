"""Tokenisation with Hugging Face ``tokenizers``: fixed-length ids and masks.

A tokenizer comes from ``tokenizer.json`` (preferred) or a WordPiece
``vocab.txt`` (lower-cased unless ``tokenizer_config.json`` says
``do_lower_case: false``).  It travels inside a model's params as the bytes of
its JSON (:func:`to_array` / :func:`from_array`), so a saved model directory
is enough to predict.
"""

from __future__ import annotations

import json
import os

import numpy as np
from tokenizers import Tokenizer

from jxmc.errors import ConfigError


def load_tokenizer(folder: str) -> Tokenizer:
    """The tokenizer of ``folder``.

    Raises:
      ConfigError: neither ``tokenizer.json`` nor ``vocab.txt`` is there.
    """
    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        return Tokenizer.from_file(path)
    vocab = os.path.join(folder, "vocab.txt")
    if not os.path.isfile(vocab):
        raise ConfigError(f"{folder}: no tokenizer.json or vocab.txt")
    from tokenizers.implementations import BertWordPieceTokenizer

    lower = True
    cfg = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(cfg):
        with open(cfg, encoding="utf-8") as f:
            lower = bool(json.load(f).get("do_lower_case", True))
    with open(vocab, encoding="utf-8") as f:
        table = {line.rstrip("\n"): i for i, line in enumerate(f) if line.rstrip("\n")}
    return BertWordPieceTokenizer(table, lowercase=lower)._tokenizer


def to_array(tok: Tokenizer) -> np.ndarray:
    """``u8[bytes]``: the tokenizer's JSON, storable in a params pytree."""
    return np.frombuffer(tok.to_str().encode("utf-8"), np.uint8).copy()


def from_array(arr: np.ndarray) -> Tokenizer:
    return Tokenizer.from_str(np.asarray(arr, np.uint8).tobytes().decode("utf-8"))


def encode(tok: Tokenizer, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention masks, truncated and padded to ``max_len``.

    Returns:
      ``ids: i32[n, max_len]`` (``[CLS] ... [SEP]`` then the pad id) and
      ``mask: i32[n, max_len]`` (1 on real tokens).

    Raises:
      ConfigError: ``max_len < 2``.
    """
    if max_len < 2:
        raise ConfigError(f"max_len must be >= 2, got {max_len}")
    tok = Tokenizer.from_str(tok.to_str())  # leave the caller's settings alone
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_truncation(max_len)
    tok.enable_padding(length=max_len, pad_id=0 if pad_id is None else pad_id)
    out = tok.encode_batch([t if t else " " for t in texts])
    ids = np.asarray([e.ids for e in out], np.int32).reshape(len(texts), max_len)
    mask = np.asarray([e.attention_mask for e in out], np.int32).reshape(len(texts), max_len)
    return ids, mask
