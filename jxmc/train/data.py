"""Host-side inputs of the transformer methods: token tables, positive nodes per
level, and fixed-shape batches.

A batch is ``{"ids": i32[n, s], "mask": i32[n, s], "pos": (i32[n, m_1], ...,
i32[n, m_D]), "valid": bool[n]}``; the last batch of an epoch is padded with
rows of point 0 marked ``valid = False``.  The order of an epoch is a
permutation seeded by ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jxmc.tree.label_tree import LabelTree
from jxmc.tree.shortlist import positive_nodes


def padded_rows(M: sp.csr_matrix, cap: int) -> np.ndarray:
    """``i32[n, m]`` the column ids of each row, ``-1`` padded, ``m = min(max row nnz, cap)``
    (at least 1); rows with more than ``cap`` entries keep their first ``cap``."""
    M = sp.csr_matrix(M)
    lengths = np.diff(M.indptr)
    m = max(1, min(int(lengths.max(initial=0)), cap))
    out = np.full((M.shape[0], m), -1, np.int32)
    rows = np.repeat(np.arange(M.shape[0]), lengths)
    col = np.arange(M.nnz) - M.indptr[rows]
    keep = col < m
    out[rows[keep], col[keep]] = M.indices[keep]
    return out


def level_positives(Y: sp.csr_matrix, tree: LabelTree, cap: int) -> tuple[np.ndarray, ...]:
    """Per level ``t = 1 .. D``, ``i32[n, m_t]``: the level-``t`` ancestors of each
    point's labels (leaf positions at level ``D``), at most ``cap`` per point."""
    return tuple(padded_rows(positive_nodes(Y, tree, t), cap) for t in range(1, tree.depth + 1))


def collapse(tree: LabelTree, depth: int) -> LabelTree:
    """The same leaves with the top levels merged so that there are at most ``depth`` levels."""
    B = tree.branching
    if len(B) <= depth:
        return tree
    cut = len(B) - depth + 1
    return LabelTree(tree.perm, (int(np.prod(B[:cut])),) + tuple(B[cut:]))


def batches(arrays: dict, batch_size: int, *, epoch: int | None, seed: int = 0):
    """Yields fixed-shape batches of ``arrays`` (``ids``, ``mask`` and optionally ``pos``).

    ``epoch=None`` keeps the order (prediction); otherwise a seeded shuffle.
    """
    n = arrays["ids"].shape[0]
    order = np.arange(n) if epoch is None else np.random.default_rng([seed, epoch]).permutation(n)
    for a in range(0, n, batch_size):
        idx = order[a:a + batch_size]
        valid = np.ones(batch_size, bool)
        if len(idx) < batch_size:
            valid[len(idx):] = False
            idx = np.concatenate([idx, np.zeros(batch_size - len(idx), idx.dtype)])
        batch = {"ids": arrays["ids"][idx], "mask": arrays["mask"][idx], "valid": valid}
        if "pos" in arrays:
            batch["pos"] = tuple(p[idx] for p in arrays["pos"])
        yield batch
