"""Balanced hierarchical spherical k-means on label embeddings (PECOS's indexer).

PECOS 1.2.8 (``HierarchicalKMeans.gen`` with its C++ ``run_clustering``) does
not run k-means with ``k = nr_splits``: it bisects recursively with balanced
spherical 2-means to depth ``t = max(1, ceil(log2(L / max_leaf_size)))``, then
groups the binary levels by ``nr_splits`` (``ClusterChain.from_partial_chain``).
We do the same, so ``L = 44,678, max_leaf_size = 100`` gives 512 leaf clusters of
87-88 labels and branching ``(2, 16, 16, 88)`` (see
:func:`jxmc.tree.label_tree.branching_from_bisections`).

One bisection of a node (Yu et al., JMLR 2022, Algorithm 1): two centroids
``c_0, c_1`` (unit norm, seeded with two random labels of the node); each label
scores ``z_l . (c_0 - c_1)``; the ``ceil(n/2)`` best go to child 0, the rest to
child 1 (balanced by sorting, so sibling sizes differ by at most one and all
leaves hold ``floor`` or ``ceil`` of ``L / 2^t`` labels); centroids are the
normalised sums of their members; repeat up to ``iters`` times or until no label
moves.

Every node of a depth is processed at once: the labels of the ``K = 2^t`` nodes
are an ``i32[K, s]`` table (``-1`` padded), scores are gathered into it and
sorted row-wise.  Embeddings stay sparse (flat COO) and centroids are dense
``f32[2K, d']``; for ``d > hash_dim`` the embeddings are first count-sketched to
``d' = hash_dim`` columns (feature hashing with random signs, Weinberger et al.,
ICML 2009), which keeps inner products unbiased with error ``O(1/sqrt(d'))``
and bounds the centroid memory at ``2K * d'`` floats.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.ops.sparse import csr_to_ell
from jxmc.tree.label_tree import LabelTree, branching_from_bisections


def count_sketch(Z: sp.csr_matrix, dim: int, seed: int = 0) -> sp.csr_matrix:
    """``Z @ H`` for a random signed hashing matrix ``H: [d, dim]`` (one ±1 per row)."""
    rng = np.random.default_rng(seed)
    d = Z.shape[1]
    H = sp.csr_matrix((rng.choice(np.array([-1.0, 1.0], np.float32), size=d),
                       (np.arange(d), rng.integers(0, dim, size=d))), shape=(d, dim))
    return sp.csr_matrix(Z @ H, dtype=np.float32)


def _centroids(ell_idx, ell_val, child, weight, n_children: int, dim: int):
    """Normalised sums ``f32[n_children, dim]`` of the labels of each child."""
    seg = child[:, None] * dim + ell_idx
    flat = jax.ops.segment_sum((ell_val * weight[:, None]).ravel(), seg.ravel(),
                               num_segments=n_children * dim)
    c = flat.reshape(n_children, dim)
    return c / jnp.maximum(jnp.linalg.norm(c, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("max_nodes", "dim", "iters"))
def bisect_level(ell_idx, ell_val, node, key, first=None, *, max_nodes: int, dim: int,
                 iters: int):
    """Splits every node of one depth into two balanced halves.

    Args:
      ell_idx, ell_val: the embeddings as padded rows (``i32[L, z]``, ``f32[L, z]``,
        padding ``(0, 0.0)``) over ``dim`` columns.
      node: ``i32[L]`` the node of each label at this depth, ids ``< max_nodes``;
        every node holds at least 2 labels.
      key: PRNG key for the initial centroids.
      first: optional ``i32[max_nodes]``, how many labels of each node go to
        child ``2k`` (default ``ceil(n_k / 2)``; ``n_k`` keeps the node whole).

    Returns:
      ``i32[L]``: the child of each label, ``2 * node`` or ``2 * node + 1``;
      child ``2k`` gets the ``first[k]`` (default ``ceil(n_k / 2)``) labels that
      score highest.

    Shapes do not depend on the depth, so one compilation serves every depth.
    """
    L = node.shape[0]
    K = max_nodes
    count = jax.ops.segment_sum(jnp.ones(L, jnp.int32), node, num_segments=K)
    start = jnp.cumsum(count) - count
    by_node = jnp.argsort(node, stable=True)  # labels grouped by node
    k1, k2 = jax.random.split(key)
    safe = jnp.maximum(count, 2)
    a = jax.random.randint(k1, (K,), 0, safe)
    b = (a + jax.random.randint(k2, (K,), 1, safe)) % safe
    la = by_node[jnp.minimum(start + a, L - 1)]
    lb = by_node[jnp.minimum(start + b, L - 1)]
    live = count >= 2
    ar = jnp.arange(K, dtype=jnp.int32)
    seed_w = jnp.zeros(L + 1, jnp.float32)
    seed_w = seed_w.at[jnp.where(live, la, L)].set(1.0).at[jnp.where(live, lb, L)].set(1.0)[:L]
    seed_child = jnp.zeros(L + 1, jnp.int32).at[jnp.where(live, la, L)].set(2 * ar)
    seed_child = seed_child.at[jnp.where(live, lb, L)].set(2 * ar + 1)[:L]
    c0 = _centroids(ell_idx, ell_val, seed_child, seed_w, 2 * K, dim)
    half = (count + 1) // 2 if first is None else first
    ones = jnp.ones(L, jnp.float32)

    def assign(c):
        diff = (c[0::2] - c[1::2]).ravel()  # [K * dim]
        score = jnp.sum(ell_val * diff[node[:, None] * dim + ell_idx], axis=1)  # [L]
        order = jnp.lexsort((-score, node))  # by node, best first
        rank = jnp.zeros(L, jnp.int32).at[order].set(jnp.arange(L, dtype=jnp.int32)) - start[node]
        return 2 * node + (rank >= half[node]).astype(jnp.int32)

    def body(state):
        it, child, _, c = state
        new_child = assign(c)
        c = _centroids(ell_idx, ell_val, new_child, ones, 2 * K, dim)
        return it + 1, new_child, jnp.any(new_child != child), c

    init = (0, jnp.full(L, -1, jnp.int32), True, c0)
    _, _, _, c = jax.lax.while_loop(lambda st: (st[0] < iters) & st[2], body, init)
    return assign(c)


def prune_rows(Z: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keeps the ``keep`` largest-magnitude entries of each row and renormalises the rows."""
    Z = sp.csr_matrix(Z, dtype=np.float32)
    lengths = np.diff(Z.indptr)
    if lengths.max(initial=0) <= keep:
        return Z
    keep_mask = np.ones(Z.nnz, bool)
    absval = np.abs(Z.data)
    for i in np.nonzero(lengths > keep)[0]:  # argpartition per long row: O(nnz)
        a, b = Z.indptr[i], Z.indptr[i + 1]
        drop = np.argpartition(absval[a:b], b - a - keep)[: b - a - keep]
        keep_mask[a + drop] = False
    out = sp.csr_matrix((Z.data[keep_mask], Z.indices[keep_mask],
                         np.concatenate([[0], np.cumsum(np.minimum(lengths, keep))])), shape=Z.shape)
    out.sort_indices()
    norms = np.sqrt(np.asarray(out.multiply(out).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags((1.0 / norms).astype(np.float32)) @ out, dtype=np.float32)


def n_bisections(n_labels: int, max_leaf_size: int) -> int:
    """PECOS's binary depth ``max(1, ceil(log2(L / max_leaf_size)))``."""
    return max(1, int(math.ceil(math.log2(max(n_labels, 1) / max_leaf_size))))


def _balanced_depth(n_labels: int, max_leaf_size: int) -> int:
    """The bisections :func:`build_tree` makes: PECOS's depth, at most ``floor(log2 L)``
    (every leaf keeps a label)."""
    return min(n_bisections(n_labels, max_leaf_size), int(math.floor(math.log2(n_labels))))


def balanced_branching(n_labels: int, *, max_leaf_size: int = 100,
                       nr_splits: int = 16) -> tuple[int, ...]:
    """The branching factors of :func:`build_tree`'s tree over ``n_labels`` labels:
    ``t`` bisections grouped by ``nr_splits``
    (:func:`jxmc.tree.label_tree.branching_from_bisections`), leaves of
    ``ceil(L / 2^t)``; e.g. ``(2, 16, 16, 88)`` for 44,678 labels and 100.

    Raises:
      ValueError: ``nr_splits`` not a power of two >= 2.
    """
    t = _balanced_depth(n_labels, max_leaf_size)
    return branching_from_bisections(t, -(-n_labels // 2 ** t), nr_splits)


def build_tree(emb: sp.csr_matrix, *, max_leaf_size: int = 100, nr_splits: int = 16,
               iters: int = 10, seed: int = 0, hash_dim: int = 1 << 14,
               hash_budget: int = 1 << 22, max_nnz: int = 64) -> LabelTree:
    """Balanced hierarchical 2-means tree over the rows of ``emb``.

    Args:
      emb: ``csr f32[L, d]`` label embeddings (e.g. :func:`jxmc.embed.pifa`).
      max_leaf_size: leaves hold at most this many labels.
      nr_splits: children per internal level (a power of two).
      iters: 2-means iterations per bisection.
      seed: seeds the centroid initialisation and the hashing.
      hash_dim: embeddings wider than this are count-sketched, to
        ``max(hash_budget / (2 * nodes of the last depth), 1024)`` columns so that the
        dense centroids stay at ``hash_budget`` floats.
      max_nnz: each embedding keeps its ``max_nnz`` largest entries (renormalised)
        for clustering, which bounds the cost of an iteration at ``L * max_nnz``.

    Returns:
      A :class:`LabelTree` whose leaves have ``floor`` or ``ceil`` of ``L / 2^t``
      labels, padded with ``-1`` to ``ceil(L / 2^t)``.

    Raises:
      ValueError: fewer than 2 labels, or ``max_leaf_size < 1``.
    """
    L = emb.shape[0]
    if L < 2 or max_leaf_size < 1:
        raise ValueError(f"need >= 2 labels and max_leaf_size >= 1, got L={L}, {max_leaf_size}")
    branching = balanced_branching(L, max_leaf_size=max_leaf_size, nr_splits=nr_splits)
    t = _balanced_depth(L, max_leaf_size)
    Z = prune_rows(emb, max_nnz)
    max_nodes = 2 ** (t - 1)
    dim = Z.shape[1]
    if dim > hash_dim:
        dim = max(hash_budget // (2 * max_nodes), 1024)
        Z = count_sketch(Z, dim, seed)
    x = csr_to_ell(Z)
    ell_idx, ell_val = jnp.asarray(x.indices), jnp.asarray(x.values)
    node = jnp.zeros(L, jnp.int32)
    key = jax.random.PRNGKey(seed)
    for _ in range(t):
        key, sub = jax.random.split(key)
        node = bisect_level(ell_idx, ell_val, node, sub, max_nodes=max_nodes, dim=dim, iters=iters)
    node = np.asarray(node)
    leaf = branching[-1]
    order = np.argsort(node, kind="stable")
    counts = np.bincount(node, minlength=2 ** t)
    slot = np.arange(L) - np.repeat(np.cumsum(counts) - counts, counts)
    perm = np.full((2 ** t, leaf), -1, np.int32)
    perm[node[order], slot] = order
    return LabelTree(perm.reshape(-1), branching)


def wide_branching(n_labels: int, *, branching: int = 100, max_leaf_size: int = 100,
                   max_depth: int = 3) -> tuple[int, ...]:
    """Bonsai's shape: ``t`` internal levels of ``branching`` children, the fewest that
    leave at most ``max_leaf_size`` labels per leaf cluster, ``t <= max_depth - 1``.

    The top level is narrowed so that there are at most ``L`` leaf clusters (each
    holds at least one label).  Returns ``(B_1, ..., B_t, leaf)``, e.g.
    ``(100, 2)`` for 159 labels and ``(100, 100, 6)`` for 50,694.

    Raises:
      ValueError: ``branching < 2``, ``max_depth < 2`` or fewer than 2 labels.
    """
    if branching < 2 or max_depth < 2 or n_labels < 2:
        raise ValueError(f"need branching >= 2, max_depth >= 2 and >= 2 labels, got "
                         f"{branching}, {max_depth}, {n_labels}")
    t = 1
    while t < max_depth - 1 and -(-n_labels // branching ** t) > max_leaf_size:
        t += 1
    levels = [branching] * t
    below = branching ** (t - 1)
    levels[0] = max(1, min(branching, n_labels // below))
    K = int(np.prod(levels))
    return tuple(levels) + (-(-n_labels // K),)


def _spread(total: int, parts: int) -> np.ndarray:
    """``parts`` sizes ``floor`` or ``ceil`` of ``total / parts``, the larger ones spread evenly."""
    j = np.arange(parts + 1, dtype=np.int64)
    return np.diff(j * total // parts)


def build_wide_tree(emb: sp.csr_matrix, branching: tuple[int, ...], *, iters: int = 10,
                    seed: int = 0, hash_dim: int = 1 << 14, hash_budget: int = 1 << 22,
                    max_nnz: int = 64) -> LabelTree:
    """A balanced tree of any internal branching factors, by recursive 2-means.

    Each internal level splits every node into ``B_l`` children (any ``B_l >= 1``,
    e.g. Bonsai's 100) with ``ceil(log2 B_l)`` rounds of the balanced spherical
    2-means of :func:`bisect_level`: a node that must become ``m`` children is cut
    into parts for ``ceil(m / 2)`` and ``floor(m / 2)`` of them, each getting as
    many labels as its leaf clusters will hold.  The ``K = B_1 ... B_t`` leaf
    clusters hold ``floor`` or ``ceil`` of ``L / K`` labels (the larger ones spread
    evenly), so siblings differ by at most one label per leaf cluster below them.

    This keeps the complete-tree layout (children by index arithmetic) that beam
    search needs; Bonsai itself (Khandagale et al., Machine Learning 2020) runs
    *unconstrained* k-means with ``K = 100``, whose clusters are unbalanced.

    Args:
      emb: ``csr f32[L, d]`` label embeddings (e.g. :func:`jxmc.embed.pifa`).
      branching: ``(B_1, ..., B_t, leaf)`` with ``B_1 ... B_t <= L`` and
        ``leaf = ceil(L / (B_1 ... B_t))`` (see :func:`wide_branching`).
      iters, seed, hash_dim, hash_budget, max_nnz: as :func:`build_tree`; the
        embeddings are also count-sketched when the centroids of the widest
        round would exceed ``hash_budget`` floats.

    Raises:
      ValueError: ``branching`` does not fit ``L``.
    """
    L = emb.shape[0]
    internal = tuple(int(b) for b in branching[:-1])
    K = int(np.prod(internal))
    if not internal or min(internal) < 1 or K > L or int(branching[-1]) != -(-L // K):
        raise ValueError(f"branching {tuple(branching)} does not fit {L} labels")
    Z = prune_rows(emb, max_nnz)
    dim = Z.shape[1]
    # binary nodes of the widest round: the dense centroids are 2 * widest * dim floats
    widest = max(K // internal[-1] * (1 << max(0, math.ceil(math.log2(internal[-1])) - 1)), 1)
    if dim > hash_dim or 2 * widest * dim > hash_budget:
        dim = max(hash_budget // (2 * widest), 1024)
        Z = count_sketch(Z, dim, seed)
    x = csr_to_ell(Z)
    ell_idx, ell_val = jnp.asarray(x.indices), jnp.asarray(x.values)
    target = _spread(L, K)  # labels of each leaf cluster
    key = jax.random.PRNGKey(seed)
    node = np.zeros(L, np.int32)  # node of each label at the current level
    nodes_above = 1
    for B in internal:
        span = K // (nodes_above * B)  # leaf clusters under each child of this level
        child_size = target.reshape(nodes_above * B, span).sum(axis=1).reshape(nodes_above, B)
        rounds = max(1, math.ceil(math.log2(B)))
        lo = np.zeros(1, np.int64)  # child range [lo, hi) of each binary code
        hi = np.full(1, B, np.int64)
        code = np.zeros(L, np.int64)
        max_nodes = nodes_above * (1 << (rounds - 1))
        for r in range(rounds):
            mid = np.where(hi - lo >= 2, lo + (hi - lo + 1) // 2, hi)
            csum = np.concatenate([np.zeros((nodes_above, 1), np.int64),
                                   np.cumsum(child_size, axis=1)], axis=1)
            first = (csum[:, mid] - csum[:, lo]).reshape(-1)  # [nodes_above * 2^r]
            first = np.pad(first, (0, max_nodes - len(first))).astype(np.int32)
            bnode = (node.astype(np.int64) << r) + code
            key, sub = jax.random.split(key)
            child = np.asarray(bisect_level(ell_idx, ell_val, jnp.asarray(bnode, jnp.int32), sub,
                                            jnp.asarray(first), max_nodes=max_nodes, dim=dim,
                                            iters=iters))
            code = child - (node.astype(np.int64) << (r + 1))
            lo, hi = np.stack([lo, mid], 1).reshape(-1), np.stack([mid, hi], 1).reshape(-1)
        node = (node.astype(np.int64) * B + lo[code]).astype(np.int32)
        nodes_above *= B
    leaf = int(branching[-1])
    order = np.argsort(node, kind="stable")
    counts = np.bincount(node, minlength=K)
    slot = np.arange(L) - np.repeat(np.cumsum(counts) - counts, counts)
    perm = np.full((K, leaf), -1, np.int32)
    perm[node[order], slot] = order
    return LabelTree(perm.reshape(-1), internal + (leaf,))
