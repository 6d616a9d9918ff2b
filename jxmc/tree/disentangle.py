"""Label disentanglement: each label in up to ``lambda`` leaf clusters, chosen by the matcher.

Liu, Chang, Yu, Hsieh & Dhillon, "Label Disentanglement in Partition-based
Extreme Multilabel Classification", NeurIPS 2021, Section 3: a label with
several meanings (e.g. "apple") does not fit one cluster, so after the matcher
(the rankers of levels ``1 .. D-1``) is trained on the first tree, the labels
are re-assigned to the leaf clusters that the matcher actually sends their
instances to, up to ``lambda`` clusters each, and the rankers of the last level
are retrained on the new assignment.

The score of (label ``l``, cluster ``c``) is ``S = Y^T M`` (their Eq. 10), with
``M: [n, K_{D-1}]`` the matcher's beam on the training set -- here its path
probabilities rather than 0/1, a soft count of the label's instances that the
matcher routes to ``c``.  Assignment (:func:`reassign`):

1. every label gets exactly ``lambda' = min(lambda, K_{D-1})`` copies in distinct
   clusters (with ``copy_fraction < 1``, only that share of the labels, the most
   entangled ones -- whose second-best cluster scores closest to their best --
   and one copy for the others), and the clusters hold ``floor`` or ``ceil`` of
   ``T / K_{D-1}`` of the ``T`` copies each (sizes differ by at most one, so the
   leaf level stays a complete tree with little padding);
2. the greedy over the non-zeros of ``S``, best first: (``l``, ``c``) is taken
   while ``l`` has fewer copies than it should and ``c`` holds fewer than
   ``floor(T / K)`` -- computed as the stable assignment by deferred
   acceptance in vectorised rounds (:func:`_stable_assignment`), which equals the
   greedy when both sides rank by the same score;
3. copies still missing go, in this order, to the label's best remaining
   cluster that may take one more (the ``ceil`` clusters), to its cluster in the
   first tree, or to the cluster with the most room that does not hold it yet (a
   swap with another cluster's label when every cluster with room holds it);
   labels without training instances have no scores and land here.

The assignment is host-side index bookkeeping (numpy), like the tree's
permutation; the matcher's beam that feeds it is jitted JAX.

At prediction a label reached through several of its leaves is returned once,
with its best path score (:func:`jxmc.tree.beam.beam_search`, ``merge_copies``).
``lambda = 1`` is never re-assigned (the first tree is kept as it is).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jxmc.tree.label_tree import LabelTree, label_positions


def matcher_scores(Y: sp.spmatrix, beam_ids: np.ndarray, beam_scores: np.ndarray,
                   n_clusters: int) -> sp.csr_matrix:
    """``S = Y^T M``: ``csr f32[L, K]``, the summed matcher scores of each label's instances.

    Args:
      Y: ``csr [n, L]`` training positives.
      beam_ids: ``i32[n, b]`` the level ``D-1`` nodes kept by the matcher's beam (``-1`` padded).
      beam_scores: ``f32[n, b]`` their path scores (probabilities).
      n_clusters: ``K_{D-1}``.
    """
    ids, scores = np.asarray(beam_ids), np.asarray(beam_scores, np.float32)
    ok = ids >= 0
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1]).reshape(ids.shape)
    M = sp.csr_matrix((scores[ok], (rows[ok], ids[ok])), shape=(ids.shape[0], n_clusters))
    Yt = sp.csr_matrix(sp.csr_matrix(Y, dtype=np.float32).T)
    S = sp.csr_matrix(Yt @ M, dtype=np.float32)
    S.eliminate_zeros()
    return S


def _stable_assignment(S: sp.csr_matrix, target: np.ndarray, cap: int):
    """Each label's best clusters under a size limit: deferred acceptance in vectorised rounds.

    Labels with missing copies propose to their next-best clusters (by ``S``); a
    cluster keeps the ``cap`` best of what it holds and what it is offered, by
    score, and turns the rest away (a turned-away label never proposes there again).
    With one score for both sides the result is the greedy assignment in
    descending order of ``S`` (the unique stable assignment).

    Args:
      S: ``[L, K]`` scores; target: ``i64[L]`` copies wanted per label; cap: size limit.

    Returns:
      ``(label: i64[N], cluster: i64[N], indptr: i64[L + 1], cand: i64[nnz])``:
      the accepted pairs, and each label's candidate clusters, best first (CSR).
    """
    L = S.shape[0]
    S = sp.csr_matrix(S)
    row = np.repeat(np.arange(L), np.diff(S.indptr))
    o = np.lexsort((S.indices, -S.data, row))  # by label, best score first
    cand, score = S.indices[o].astype(np.int64), S.data[o]
    ptr, end = S.indptr[:-1].astype(np.int64), S.indptr[1:].astype(np.int64)
    held_l = np.zeros(0, np.int64)
    held_c = np.zeros(0, np.int64)
    held_s = np.zeros(0, np.float32)
    target = np.broadcast_to(np.asarray(target, np.int64), (L,)).copy()
    deficit = target.copy()
    while True:
        act = np.nonzero((deficit > 0) & (ptr < end))[0]
        if len(act) == 0:
            break
        n_prop = np.minimum(deficit[act], end[act] - ptr[act])
        start = np.repeat(ptr[act] - np.cumsum(n_prop) + n_prop, n_prop)
        idx = start + np.arange(int(n_prop.sum()))
        ptr[act] += n_prop
        pool_l = np.concatenate([held_l, np.repeat(act, n_prop)])
        pool_c = np.concatenate([held_c, cand[idx]])
        pool_s = np.concatenate([held_s, score[idx]])
        o = np.lexsort((pool_l, -pool_s, pool_c))  # by cluster, best first, ties by label
        pool_l, pool_c, pool_s = pool_l[o], pool_c[o], pool_s[o]
        first = np.searchsorted(pool_c, pool_c, side="left")
        keep = np.arange(len(pool_c)) - first < cap
        held_l, held_c, held_s = pool_l[keep], pool_c[keep], pool_s[keep]
        deficit = target - np.bincount(held_l, minlength=L)
    return held_l, held_c, S.indptr, cand


def _most_entangled(S: sp.csr_matrix, n: int) -> np.ndarray:
    """The ``n`` labels whose second-best cluster scores closest to their best (ties: label id)."""
    S = sp.csr_matrix(S)
    L = S.shape[0]
    row = np.repeat(np.arange(L), np.diff(S.indptr))
    o = np.lexsort((-S.data, row))
    rank = np.arange(S.nnz) - S.indptr[row[o]]
    first, second = np.zeros(L, np.float32), np.zeros(L, np.float32)
    first[row[o][rank == 0]] = S.data[o][rank == 0]
    second[row[o][rank == 1]] = S.data[o][rank == 1]
    ratio = np.where(first > 0, second / np.maximum(first, 1e-30), 0.0)
    return np.lexsort((np.arange(L), -ratio))[:n]


def reassign(S: sp.spmatrix, tree: LabelTree, clusters_per_label: int, *,
             copy_fraction: float = 1.0) -> LabelTree:
    """The leaf level of ``tree`` rebuilt with up to ``clusters_per_label`` copies per label.

    Args:
      S: ``[L, K]`` label-cluster scores (:func:`matcher_scores`), ``K = K_{D-1}``.
      tree: the first tree (no copies); its levels ``1 .. D-1`` are kept.
      clusters_per_label: ``lambda >= 1``.
      copy_fraction: the share of labels that get ``lambda'`` copies, the most
        entangled first (largest ratio of their second-best to best score in
        ``S``); the others keep one.  1: every label.

    Returns:
      A :class:`LabelTree` with branching ``(B_1, ..., B_{D-1}, ceil(T / K))``: the
      chosen labels at exactly ``lambda' = min(lambda, K)`` leaf positions in distinct
      clusters, the others at one, ``T`` copies in all, cluster sizes ``floor`` or
      ``ceil`` of ``T / K``, labels of a cluster in ascending order.

    Raises:
      ValueError: ``clusters_per_label < 1``, ``copy_fraction`` outside ``[0, 1]``, a
        tree of depth < 2, or a shape mismatch.
    """
    if clusters_per_label < 1:
        raise ValueError(f"clusters_per_label must be >= 1, got {clusters_per_label}")
    if not 0.0 <= copy_fraction <= 1.0:
        raise ValueError(f"copy_fraction must be in [0, 1], got {copy_fraction}")
    if tree.depth < 2:
        raise ValueError("label disentanglement needs a tree of depth >= 2")
    S = sp.csr_matrix(S)
    L = S.shape[0]
    K = int(np.prod(tree.branching[:-1]))
    if S.shape[1] != K:
        raise ValueError(f"S has {S.shape[1]} columns, the tree {K} leaf clusters")
    lam = min(int(clusters_per_label), K)
    target = np.ones(L, np.int64)
    n_multi = int(round(copy_fraction * L))
    if lam > 1 and n_multi > 0:
        target[_most_entangled(S, n_multi)] = lam
    q, r = divmod(int(target.sum()), K)
    held_l, held_c, indptr, cand = _stable_assignment(S, target, q)
    members = [set() for _ in range(K)]
    held = [set() for _ in range(L)]
    for lab, c in zip(held_l.tolist(), held_c.tolist(), strict=True):
        members[c].add(lab)
        held[lab].add(c)
    cnt = np.array([len(m) for m in members], np.int64)
    n_full = int((cnt == q + 1).sum())
    home = label_positions(tree, L) // int(tree.branching[-1])

    def can_take(c: int) -> bool:
        return cnt[c] < q or (cnt[c] == q and n_full < r)

    def put(lab: int, c: int) -> None:
        nonlocal n_full
        n_full += int(cnt[c] == q)
        members[c].add(lab)
        held[lab].add(c)
        cnt[c] += 1

    need = target - np.array([len(h) for h in held])
    for lab in np.argsort(-need, kind="stable").tolist():
        for _ in range(int(need[lab])):
            best = next((c for c in cand[indptr[lab]:indptr[lab + 1]].tolist()
                         if c not in held[lab] and can_take(c)), None)
            if best is not None:  # a cluster at q that may still take one more
                put(lab, best)
                continue
            h = int(home[lab])
            if h >= 0 and h not in held[lab] and can_take(h):
                put(lab, h)
                continue
            free = [c for c in np.argsort(cnt, kind="stable").tolist() if can_take(c)]
            pick = next((c for c in free if c not in held[lab]), None)
            if pick is None:  # every cluster with room holds lab: swap with another cluster
                room = free[0]
                for c2 in range(K):
                    if c2 in held[lab]:
                        continue
                    l2 = next((x for x in members[c2] if room not in held[x]), None)
                    if l2 is not None:
                        members[c2].discard(l2)
                        held[l2].discard(c2)
                        n_full -= int(cnt[c2] == q + 1)
                        cnt[c2] -= 1
                        put(l2, room)
                        pick = c2
                        break
            put(lab, pick)
    size = q + (1 if r else 0)
    perm = np.full((K, size), -1, np.int32)
    for c, m in enumerate(members):
        perm[c, : len(m)] = sorted(m)
    return LabelTree(perm.reshape(-1), tuple(tree.branching[:-1]) + (size,))
