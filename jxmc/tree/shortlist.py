"""Training shortlists: which (instance, parent node) pairs a level's rankers see,
on the host (the linear rankers) and inside ``jit`` (the transformer heads).

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

The same choices as fixed-width padded id tables (``-1`` = none), traceable inside
``jit``, for the transformer heads (duplicates become ``-1``, so a shortlist never
scores a node twice; the children of node ``u`` are ``u * B + arange(B)``):

* :func:`tfn`: the children of the positives' parents (XR-Transformer's TFN,
  Zhang et al., NeurIPS 2021, Section 4.2);
* :func:`man` / :func:`man_parents`: the children of the parents the model's own
  beam keeps at the previous level, with the positives' parents added in training
  (XR-Transformer's MAN; LightXML's dynamic negative sampling, Jiang et al., AAAI
  2021, Section 3.3; CascadeXML, Kharbanda et al., NeurIPS 2022, Section 3.2);
* :func:`in_batch`: positives of the other points of the batch;
* :func:`uniform`: uniformly random nodes.

``in_batch`` and ``uniform`` return the positives followed by ``r`` sampled ids.
:func:`train_parents` is the one choice a transformer level trains on (``NEGATIVES``:
``tfn``, ``man``, ``tfn+man``, ``in-batch``, ``uniform``), all of one fixed width.
:func:`level_positives` gives the positive nodes of every level as such tables, every
positive of every point (the width a power of two sized from the data, no cap).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.ops.ids import csr_to_padded, dedupe, pow2
from jxmc.ops.sparse import max_row_nnz
from jxmc.tree.beam import children
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


def level_positives(Y: sp.spmatrix, tree: LabelTree, least: int = 1) -> tuple[np.ndarray, ...]:
    """Per level ``t = 1 .. D``, ``i32[n, m_t]``: the level-``t`` ancestors of each
    point's labels (leaf positions at level ``D``; :func:`positive_nodes`), ascending,
    ``-1`` padded.  Every positive is kept: ``m_t`` is the most positives of a point at
    level ``t`` rounded up to a power of two (:func:`jxmc.ops.ids.pow2`, at least
    ``least``), so the shapes are static and few programs compile."""
    out = []
    for t in range(1, tree.depth + 1):
        M = positive_nodes(Y, tree, t)
        width = pow2(max_row_nnz(M), least)
        out.append(csr_to_padded(M, width))
    return tuple(out)


NEGATIVES = ("tfn", "man", "tfn+man", "in-batch", "uniform")


def train_parents(negatives: str, beam_parents: jax.Array, positive_parents: jax.Array,
                  n_nodes: int, key: jax.Array | None = None) -> jax.Array:
    """``i32[n, min(b + m, n_nodes)]``: the parents whose children a level trains on,
    each once (ascending, ``-1`` last), of the same width for every choice of
    ``negatives`` (traceable; ``negatives`` static):

    * ``"tfn"``: the positives' parents ``positive_parents: i32[n, m]`` only (their
      children: the positives and their siblings; XR-Transformer's TFN);
    * ``"man"``: the beam's ``beam_parents: i32[n, b]`` only -- the model's own best
      scored nodes, right or wrong (a positive outside the beam is not trained);
    * ``"tfn+man"``: both (XR-Transformer's TFN+MAN, LightXML's dynamic negatives,
      CascadeXML);
    * ``"in-batch"``: the positives' parents and ``b`` drawn from the positive parents
      of the whole batch (other points' positives as negatives; :func:`in_batch`);
    * ``"uniform"``: the positives' parents and ``b`` drawn uniformly from
      ``[0, n_nodes)`` (:func:`uniform`).

    ``key`` (a PRNG key) is needed by ``in-batch`` and ``uniform``.

    Raises:
      ValueError: an unknown ``negatives``, or no ``key`` for a sampled one.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
    b = beam_parents.shape[1]
    if negatives in ("in-batch", "uniform"):
        if key is None:
            raise ValueError(f"negatives={negatives!r} samples: it needs a PRNG key")
        if negatives == "in-batch":
            parents = in_batch(positive_parents, key, b)
        else:
            parents = uniform(positive_parents, key, b, n_nodes)
        return parents[:, :n_nodes]
    none_b = jnp.full_like(beam_parents, -1)
    none_m = jnp.full_like(positive_parents, -1)
    if negatives == "tfn":
        return man_parents(none_b, positive_parents, n_nodes)
    if negatives == "man":
        return man_parents(beam_parents, none_m, n_nodes)
    return man_parents(beam_parents, positive_parents, n_nodes)


def tfn(positives: jax.Array, B: int) -> jax.Array:
    """``i32[n, m * B]``: the siblings (and selves) of ``positives: i32[n, m]``."""
    return children(dedupe(jnp.where(positives >= 0, positives // B, -1)), B)


def man_parents(beam_parents: jax.Array, positive_parents: jax.Array | None = None,
                n_nodes: int | None = None) -> jax.Array:
    """``i32[n, p]``: the parents whose children MAN scores, each once (ascending, ``-1``
    last): the beam's ``i32[n, b]`` and, in training, the positives' ``i32[n, m]``;
    at most ``n_nodes`` columns (the level's node count: wider can only be padding)."""
    parents = beam_parents
    if positive_parents is not None:
        parents = jnp.concatenate([parents, positive_parents], axis=1)
    parents = dedupe(parents)
    return parents if n_nodes is None else parents[:, :n_nodes]


def man(beam_parents: jax.Array, B: int, positives: jax.Array | None = None) -> jax.Array:
    """``i32[n, (b + m) * B]``: children of the beam's parents ``i32[n, b]`` and, when
    ``positives: i32[n, m]`` (level-``t`` nodes) are given, of the positives' parents."""
    pp = None if positives is None else jnp.where(positives >= 0, positives // B, -1)
    return children(man_parents(beam_parents, pp), B)


def in_batch(positives: jax.Array, key: jax.Array, r: int) -> jax.Array:
    """``i32[n, m + r]``: own positives plus ``r`` positives drawn from the whole batch."""
    flat = positives.reshape(-1)
    pick = jax.random.randint(key, (positives.shape[0], r), 0, flat.shape[0])
    return dedupe(jnp.concatenate([positives, flat[pick]], axis=1))


def uniform(positives: jax.Array, key: jax.Array, r: int, n_nodes: int) -> jax.Array:
    """``i32[n, m + r]``: own positives plus ``r`` nodes drawn uniformly from ``[0, n_nodes)``."""
    drawn = jax.random.randint(key, (positives.shape[0], r), 0, n_nodes, dtype=jnp.int32)
    return dedupe(jnp.concatenate([positives, drawn], axis=1))
