"""The glossary of symbols and the pytrees shared across jxmc.

Symbols (used in every docstring, as ``scores: f32[n, c]``):

======  ==============================================================
``n``   points in a batch (or in a split)
``d``   feature dimension
``z``   non-zeros kept per sparse row (ELL width)
``L``   labels (training vocabulary); ``L_all`` adds test-only labels
``m``   padded positive labels per point
``D``   label-tree depth
``B_l`` branching factor into level ``l``
``K_l`` nodes at level ``l``
``b``   beam size
``c``   candidates per point, ``b * B_l``
``k``   predictions per point
``h``   hidden width;  ``s`` sequence length
======  ==============================================================

PECOS's matrices keep their names: ``X`` (n x d features), ``Y`` (n x L labels),
``C`` (label-to-cluster per tree level), ``M`` (instance-to-cluster matching
matrix that chooses negatives), ``R`` (relevance).

Conventions: padded label or node ids are ``-1`` and never count as a hit;
padded sparse entries are ``(index 0, value 0.0)``; padded batches carry
``valid: bool[n]``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np


class SparseRows(NamedTuple):
    """Sparse rows in ELL layout (fixed non-zeros per row).

    Attributes:
      indices: i32[n, z] feature ids; padding is 0.
      values: f32[n, z] feature values; padding is 0.0, so padding is inert in
        any linear score.
    """

    indices: jax.Array | np.ndarray
    values: jax.Array | np.ndarray


class TopK(NamedTuple):
    """Top-k predictions, best first.

    Attributes:
      ids: i32[n, k] label ids; ``-1`` where fewer than k candidates exist.
      scores: f32[n, k] scores matching ``ids``; ``-inf`` at padding.
    """

    ids: jax.Array | np.ndarray
    scores: jax.Array | np.ndarray


class Batch(NamedTuple):
    """A fixed-shape device batch.

    Attributes:
      x: the features as :class:`SparseRows` (``i32[n, z]``, ``f32[n, z]``).
      labels: i32[n, m] positive label ids, ``-1`` padded.
      valid: bool[n], False on rows added to fill the last batch.
    """

    x: SparseRows
    labels: jax.Array | np.ndarray
    valid: jax.Array | np.ndarray
