"""A complete label tree as a permutation plus branching factors.

A tree of depth ``D`` with branching factors ``(B_1, ..., B_D)`` has
``K_l = B_1 * ... * B_l`` nodes at level ``l`` (level 0 is the root, level
``D`` the leaves).  Its leaves are ``K_D`` positions; ``perm[q]`` is the label
at leaf position ``q`` or ``-1`` for padding (a dummy label that can never be
predicted).  Everything else is index arithmetic:

* children of node ``u`` at level ``l``: ``u * B_{l+1} + arange(B_{l+1})``;
* parent of node ``u`` at level ``l``: ``u // B_l``;
* the level-``l`` ancestor of leaf position ``q``: ``q // (K_D / K_l)``.

This replaces PECOS's chain of sparse cluster matrices ``C`` (label-to-cluster,
one per level): ``C_l[v, u] = 1`` iff ``v // B_l == u``.

Label copies (label disentanglement, Liu et al., NeurIPS 2021, :mod:`.disentangle`):
a label may sit at up to ``lambda`` leaf positions, in distinct leaf clusters
(parents of the leaves).  ``perm`` then repeats the label; everything above stays
index arithmetic, :func:`label_copies` lists each label's positions, and beam
search merges the copies into one entry (:mod:`.beam`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LabelTree(NamedTuple):
    """Attributes:
      perm: i32[K_D] label id at each leaf position, ``-1`` for padding.
      branching: ``(B_1, ..., B_D)``, ints >= 1, with ``prod(branching) == len(perm)``.
    """

    perm: np.ndarray
    branching: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.branching)

    def level_sizes(self) -> tuple[int, ...]:
        """``(K_1, ..., K_D)``."""
        return tuple(int(v) for v in np.cumprod(self.branching))

    def n_labels(self) -> int:
        return int((self.perm >= 0).sum())


def check_tree(tree: LabelTree, n_labels: int | None = None, max_copies: int = 1) -> None:
    """Raises ValueError unless ``tree`` is a valid complete tree (over ``n_labels``).

    With ``max_copies > 1`` a label may sit at up to ``max_copies`` leaf positions,
    never twice in one leaf cluster; with ``n_labels`` every label must have one.
    """
    perm = np.asarray(tree.perm)
    if any(int(b) < 1 for b in tree.branching):
        raise ValueError(f"branching factors must be >= 1, got {tree.branching}")
    if perm.ndim != 1 or perm.size != int(np.prod(tree.branching)):
        raise ValueError(f"perm has shape {perm.shape}, expected ({int(np.prod(tree.branching))},)")
    q = np.nonzero(perm >= 0)[0]
    real = perm[q]
    if max_copies <= 1:
        if len(np.unique(real)) != len(real):
            raise ValueError("perm repeats a label")
        if n_labels is not None and (len(real) != n_labels or (len(real) and real.max() >= n_labels)):
            raise ValueError(f"perm does not hold each of the {n_labels} labels exactly once")
        return
    counts = np.bincount(real, minlength=n_labels or 0)
    if counts.max(initial=0) > max_copies:
        raise ValueError(f"a label sits at {counts.max()} leaf positions, more than {max_copies}")
    cluster = q // int(tree.branching[-1])
    pairs = real.astype(np.int64) * (len(perm) // int(tree.branching[-1])) + cluster
    if len(np.unique(pairs)) != len(pairs):
        raise ValueError("a label sits twice in one leaf cluster")
    if n_labels is not None and (len(counts) != n_labels or counts.min(initial=1) < 1):
        raise ValueError(f"perm does not hold each of the {n_labels} labels at least once")


def label_positions(tree: LabelTree, n_labels: int) -> np.ndarray:
    """``i32[L]``: the leaf position of each label (inverse of ``perm``; a tree
    without copies -- see :func:`label_copies` otherwise)."""
    perm = np.asarray(tree.perm)
    pos = np.full(n_labels, -1, np.int32)
    q = np.nonzero(perm >= 0)[0]
    pos[perm[q]] = q
    return pos


def label_copies(tree: LabelTree, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Every leaf position of each label, as CSR over labels.

    Returns:
      ``(indptr: i64[L + 1], positions: i32[N])``: the positions of label ``l``
      are ``positions[indptr[l]:indptr[l + 1]]``, ascending (one per label
      without copies, then ``positions == label_positions``).
    """
    perm = np.asarray(tree.perm)
    q = np.nonzero(perm >= 0)[0]
    order = np.argsort(perm[q], kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(perm[q], minlength=n_labels))])
    return indptr.astype(np.int64), q[order].astype(np.int32)


def has_copies(tree: LabelTree) -> bool:
    """Whether some label sits at more than one leaf position."""
    real = np.asarray(tree.perm)
    real = real[real >= 0]
    return len(np.unique(real)) != len(real)


def ancestors_of_positions(tree: LabelTree, positions: np.ndarray, level: int) -> np.ndarray:
    """The level-``level`` node of each leaf position (``-1`` stays ``-1``).

    Args:
      positions: int array of any shape, leaf positions or ``-1``.
      level: ``0 .. D``; level ``D`` returns the positions themselves.
    """
    sizes = (1,) + tree.level_sizes()
    span = sizes[-1] // sizes[level]
    positions = np.asarray(positions)
    return np.where(positions >= 0, positions // span, -1).astype(np.int32)


def branching_from_bisections(n_bisections: int, leaf_size: int, nr_splits: int = 16) -> tuple[int, ...]:
    """Groups ``n_bisections`` binary levels into levels of ``nr_splits`` children.

    PECOS (``ClusterChain.from_partial_chain``) groups its ``2**t`` binary
    clusters by ``code // nr_splits`` repeatedly, so the top level takes the
    remainder: ``t = 9, nr_splits = 16`` gives ``(2, 16, 16, leaf_size)``.

    Raises:
      ValueError: ``nr_splits`` is not a power of two >= 2.
    """
    bits = int(np.log2(nr_splits)) if nr_splits >= 2 else 0
    if nr_splits < 2 or 2 ** bits != nr_splits:
        raise ValueError(f"nr_splits must be a power of two >= 2, got {nr_splits}")
    levels = []
    t = n_bisections
    while t > bits:
        levels.append(nr_splits)
        t -= bits
    if t > 0:
        levels.append(2 ** t)
    return tuple(reversed(levels)) + (int(leaf_size),)


def merged_branching(branching: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """``(B_1, ..., B_D)`` with the top levels merged so that there are at most ``depth``:
    ``(B_1 * ... * B_c, B_{c+1}, ..., B_D)`` (unchanged when ``D <= depth``)."""
    B = tuple(int(b) for b in branching)
    if len(B) <= depth:
        return B
    cut = len(B) - depth + 1
    return (int(np.prod(B[:cut])),) + B[cut:]


def merge_top_levels(tree: LabelTree, depth: int) -> LabelTree:
    """The same leaves with the top levels merged so that there are at most ``depth``
    levels (:func:`merged_branching`)."""
    if len(tree.branching) <= depth:
        return tree
    return LabelTree(tree.perm, merged_branching(tree.branching, depth))
