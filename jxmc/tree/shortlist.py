"""Training shortlists: which (instance, parent node) pairs a level's rankers see.

In PECOS's terms the matching matrix ``M_l`` (``n x K_{l-1}``) chooses, for each
instance, the parent nodes whose children it trains on: instance ``i`` is a
positive for child ``v`` of parent ``u`` when ``v`` is an ancestor of one of its
labels, and a negative for every other child of ``u`` (Yu et al., JMLR 2022,
Section 3.3.2).  Two choices of ``M``:

* TFN (teacher-forced negatives): ``M = Y C`` (PECOS's default,
  ``neg_mining_chain="tfn"``), the parents of the instance's positive nodes, so the
  negatives are the positives' siblings;
* MAN (matcher-aware negatives): the parents that the previous level's beam
  search keeps for the instance, whether right or wrong; ``tfn+man`` is their union.

Pairs are returned flat and sorted by parent, then instance; the root's level
(level 1) has the single parent 0 and every instance.  With label copies
(:mod:`jxmc.tree.disentangle`) an instance is a positive of every copy of its
labels, so TFN pairs hold the parent of every copy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jxmc.tree.label_tree import (
    LabelTree,
    ancestors_of_positions,
    has_copies,
    label_copies,
    label_positions,
)


def positive_nodes(Y: sp.spmatrix, tree: LabelTree, level: int) -> sp.csr_matrix:
    """``csr bool[n, K_level]``: the level-``level`` ancestors of each instance's labels.

    Level ``D`` gives leaf positions; level 0 the root (one column).  A label
    with copies (:func:`jxmc.tree.label_tree.label_copies`) contributes every
    copy's position and ancestors.
    """
    Y = sp.csr_matrix(Y)
    sizes = (1,) + tree.level_sizes()
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    if has_copies(tree):
        indptr, positions = label_copies(tree, Y.shape[1])
        n_copies = np.diff(indptr)[Y.indices]
        first = np.repeat(indptr[Y.indices], n_copies)
        offset = np.arange(int(n_copies.sum())) - np.repeat(np.cumsum(n_copies) - n_copies, n_copies)
        nodes = ancestors_of_positions(tree, positions[first + offset], level)
        rows = np.repeat(rows, n_copies)
    else:
        pos = label_positions(tree, Y.shape[1])
        nodes = ancestors_of_positions(tree, pos[Y.indices], level)
    keep = nodes >= 0
    M = sp.csr_matrix((np.ones(int(keep.sum()), bool), (rows[keep], nodes[keep])),
                      shape=(Y.shape[0], sizes[level]))
    M.sum_duplicates()
    return M


def training_pairs(Y: sp.spmatrix, tree: LabelTree, level: int, *,
                   beam_parents: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (instance, parent) pairs that train level ``level`` (``1 .. D``).

    Args:
      Y: ``csr [n, L]`` positives.
      tree: the label tree.
      level: the level of the rankers (their parents are at ``level - 1``).
      beam_parents: optional ``i32[n, b]`` level ``level - 1`` nodes kept by the
        beam (``-1`` padded): MAN pairs, added to the TFN pairs.

    Returns:
      ``(inst: i32[P], parent: i32[P])`` sorted by ``(parent, inst)``, no duplicates.

    Raises:
      ValueError: ``level`` outside ``1 .. D``.
    """
    if not 1 <= level <= tree.depth:
        raise ValueError(f"level must be in 1..{tree.depth}, got {level}")
    M = positive_nodes(Y, tree, level - 1)
    if beam_parents is not None:
        bp = np.asarray(beam_parents)
        r = np.repeat(np.arange(bp.shape[0]), bp.shape[1])
        c = bp.ravel()
        ok = c >= 0
        M = M + sp.csr_matrix((np.ones(int(ok.sum()), bool), (r[ok], c[ok])), shape=M.shape)
    Mc = sp.csc_matrix(M)
    Mc.sort_indices()
    parent = np.repeat(np.arange(Mc.shape[1], dtype=np.int32), np.diff(Mc.indptr))
    return Mc.indices.astype(np.int32), parent


def pair_targets(Y: sp.spmatrix, tree: LabelTree, level: int, inst: np.ndarray,
                 parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets of each pair's ``B_level`` children.

    Returns:
      ``y: f32[P, B]`` (+1 where the child is a positive node of the instance,
      else -1) and ``mask: f32[P, B]`` (0 on padding children, i.e. dummy leaves).
    """
    B = tree.branching[level - 1]
    pos_nodes = sp.csr_matrix(positive_nodes(Y, tree, level), dtype=np.float32)
    children = parent[:, None].astype(np.int64) * B + np.arange(B)[None, :]
    sub = pos_nodes[inst]  # [P, K_level]
    y = -np.ones((len(inst), B), np.float32)
    r = np.repeat(np.arange(len(inst)), np.diff(sub.indptr))
    mine = sub.indices // B == parent[r]  # positives under this pair's parent
    y[r[mine], sub.indices[mine] - parent[r[mine]].astype(np.int64) * B] = 1.0
    if level == tree.depth:
        mask = (np.asarray(tree.perm)[children] >= 0).astype(np.float32)
    else:
        mask = np.ones_like(y)
    return y, mask
