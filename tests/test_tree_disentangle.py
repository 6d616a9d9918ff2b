import numpy as np
import pytest
import scipy.sparse as sp

from jxmc.tree.disentangle import _stable_assignment, matcher_scores, reassign
from jxmc.tree.label_tree import LabelTree, check_tree, label_copies


def _tree(L=30, K=6, seed=0):
    rng = np.random.default_rng(seed)
    leaf = -(-L // K)
    perm = np.full(K * leaf, -1, np.int32)
    slots = np.concatenate([np.arange(c * leaf, c * leaf + (L // K + (c < L % K))) for c in range(K)])
    perm[slots] = rng.permutation(L)
    return LabelTree(perm, (2, K // 2, leaf))


def _random_scores(L, K, density=0.4, seed=0):
    rng = np.random.default_rng(seed)
    S = sp.random(L, K, density=density, random_state=rng, format="csr", dtype=np.float32)
    S.data = rng.permutation(len(S.data)).astype(np.float32) + 1  # distinct scores
    return S


@pytest.mark.parametrize("L,K,lam", [(30, 6, 2), (31, 6, 2), (29, 4, 3), (12, 4, 9)])
def test_every_label_in_lambda_distinct_clusters_and_leaves_balanced(L, K, lam):
    tree = _tree(L, K)
    new = reassign(_random_scores(L, K), tree, lam)
    check_tree(new, L, max_copies=min(lam, K))
    indptr, pos = label_copies(new, L)
    assert (np.diff(indptr) == min(lam, K)).all()
    leaf = new.branching[-1]
    sizes = (new.perm.reshape(-1, leaf) >= 0).sum(axis=1)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == min(lam, K) * L
    assert new.branching[:-1] == tree.branching[:-1]


def _sequential_greedy(S, lam, cap):
    S = sp.coo_matrix(S)
    lab_cnt, clu_cnt, out = {}, {}, set()
    for i in np.argsort(-S.data, kind="stable"):
        lab, c = int(S.row[i]), int(S.col[i])
        if lab_cnt.get(lab, 0) < lam and clu_cnt.get(c, 0) < cap:
            out.add((lab, c))
            lab_cnt[lab] = lab_cnt.get(lab, 0) + 1
            clu_cnt[c] = clu_cnt.get(c, 0) + 1
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deferred_acceptance_equals_the_greedy_by_score(seed):
    L, K, lam = 40, 5, 2
    S = _random_scores(L, K, density=0.6, seed=seed)
    cap = lam * L // K
    held_l, held_c, _, _ = _stable_assignment(S, lam, cap)
    assert set(zip(held_l.tolist(), held_c.tolist(), strict=True)) == _sequential_greedy(S, lam, cap)


def test_clusters_follow_the_matcher_and_unscored_labels_go_home():
    tree = LabelTree(np.arange(12, dtype=np.int32), (2, 2, 3))  # label l in cluster l // 3
    rows, cols = [], []
    for lab in range(10):  # labels 10 and 11 have no training instance: no scores
        rows += [lab, lab]
        cols += [lab % 4, (lab + 1) % 4]
    S = sp.csr_matrix((np.linspace(2, 1, 20, dtype=np.float32), (rows, cols)), shape=(12, 4))
    new = reassign(S, tree, 2)
    indptr, pos = label_copies(new, 12)
    clusters = [set((pos[indptr[a]:indptr[a + 1]] // new.branching[-1]).tolist()) for a in range(12)]
    for lab in range(10):  # no cluster is over its 6 copies: the matcher's choice stands
        assert clusters[lab] == {lab % 4, (lab + 1) % 4}
    assert 3 in clusters[10] and 3 in clusters[11]  # their first-tree cluster has room


def test_matcher_scores_sum_the_beam_scores_of_each_label_instances():
    Y = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 1]], np.float32))
    ids = np.array([[0, 2], [2, -1]], np.int32)
    scores = np.array([[0.5, 0.25], [1.0, -np.inf]], np.float32)
    S = matcher_scores(Y, ids, scores, 3).toarray()
    np.testing.assert_allclose(S, [[0.5, 0, 0.25], [0, 0, 1.0], [0.5, 0, 1.25]])


def test_bad_arguments():
    tree = _tree()
    with pytest.raises(ValueError):
        reassign(_random_scores(30, 6), tree, 0)
    with pytest.raises(ValueError):
        reassign(_random_scores(30, 5), tree, 2)


def test_copy_fraction_gives_lambda_copies_to_the_most_entangled_labels():
    L, K = 20, 4
    tree = _tree(L, K)
    rows, cols, vals = [], [], []
    for lab in range(L):  # label l: best cluster 1.0, second 0.05 * l (higher l = more entangled)
        rows += [lab, lab]
        cols += [lab % K, (lab + 1) % K]
        vals += [1.0, 0.05 * lab]
    S = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(L, K))
    new = reassign(S, tree, 2, copy_fraction=0.25)
    indptr, _ = label_copies(new, L)
    copies = np.diff(indptr)
    np.testing.assert_array_equal(np.nonzero(copies == 2)[0], [15, 16, 17, 18, 19])
    assert (copies[:15] == 1).all()
    sizes = (new.perm.reshape(-1, new.branching[-1]) >= 0).sum(axis=1)
    assert sizes.sum() == 25 and sizes.max() - sizes.min() <= 1
    with pytest.raises(ValueError):
        reassign(S, tree, 2, copy_fraction=1.5)
