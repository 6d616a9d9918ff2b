import numpy as np
import pytest
import scipy.sparse as sp

from jxmc.tree.kmeans import build_tree, prune_rows
from jxmc.tree.label_tree import branching_from_bisections, check_tree


def _emb(L, d=40, seed=0):
    rng = np.random.default_rng(seed)
    Z = sp.random(L, d, density=0.3, random_state=rng, dtype=np.float32, format="csr")
    Z.data = np.abs(Z.data) + 0.01
    return Z


@pytest.mark.parametrize("L,leaf", [(37, 5), (64, 8), (101, 10), (2, 1)])
def test_leaves_are_balanced_and_tree_is_a_permutation(L, leaf):
    tree = build_tree(_emb(L), max_leaf_size=leaf, nr_splits=4, seed=1)
    check_tree(tree, L)
    leaves = tree.perm.reshape(-1, tree.branching[-1])
    sizes = (leaves >= 0).sum(axis=1)
    assert sizes.max() - sizes.min() <= 1
    assert sizes.max() <= leaf


def test_seeded_and_clusters_separate_obvious_groups():
    # two groups of labels on disjoint features end up in different halves
    Z = sp.csr_matrix(np.vstack([np.tile([1.0, 0, 0, 0], (8, 1)) + 0.01 * np.eye(8, 4),
                                 np.tile([0, 0, 1.0, 0], (8, 1)) + 0.01 * np.eye(8, 4)]).astype(np.float32))
    a = build_tree(Z, max_leaf_size=8, seed=3)
    b = build_tree(Z, max_leaf_size=8, seed=3)
    np.testing.assert_array_equal(a.perm, b.perm)
    halves = [set(h[h >= 0]) for h in a.perm.reshape(2, -1)]
    assert halves[0] in ({*range(8)}, {*range(8, 16)})


def test_hashing_path_keeps_balance():
    tree = build_tree(_emb(50, d=3000), max_leaf_size=7, hash_dim=256, hash_budget=4096)
    sizes = (tree.perm.reshape(-1, tree.branching[-1]) >= 0).sum(1)
    assert sizes.max() - sizes.min() <= 1


def test_branching_grouping_like_pecos():
    assert branching_from_bisections(9, 88, 16) == (2, 16, 16, 88)
    assert branching_from_bisections(4, 62, 16) == (16, 62)
    with pytest.raises(ValueError):
        branching_from_bisections(3, 5, 12)


def test_prune_rows_keeps_largest():
    Z = sp.csr_matrix(np.array([[0.1, 0.5, 0.2, 0.9]], np.float32))
    out = prune_rows(Z, 2).toarray()[0]
    assert (out[[0, 2]] == 0).all() and out[1] > 0 and out[3] > 0
