import numpy as np
import pytest
import scipy.sparse as sp

from jxmc.tree.kmeans import build_tree, build_wide_tree, n_bisections, prune_rows, wide_branching
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


def test_parabel_shape_is_a_binary_tree_with_leaves_of_at_most_100():
    assert branching_from_bisections(n_bisections(983, 100), 62, 2) == (2, 2, 2, 2, 62)
    tree = build_tree(_emb(37), max_leaf_size=5, nr_splits=2, seed=0)
    check_tree(tree, 37)
    assert tree.branching[:-1] == (2, 2, 2) and tree.branching[-1] <= 5


def test_wide_branching_is_bonsais_shape():
    assert wide_branching(159) == (100, 2)  # bibtex
    assert wide_branching(983) == (100, 10)  # delicious
    assert wide_branching(50694) == (100, 100, 6)  # 3 levels at most
    assert wide_branching(50694, max_depth=2) == (100, 507)
    assert wide_branching(40, branching=100) == (40, 1)  # never more clusters than labels
    with pytest.raises(ValueError):
        wide_branching(100, branching=1)


@pytest.mark.parametrize("L,B,leaf,depth", [(37, 4, 3, 3), (101, 10, 5, 3), (64, 3, 2, 4), (40, 100, 100, 3)])
def test_wide_tree_is_balanced_at_every_level(L, B, leaf, depth):
    shape = wide_branching(L, branching=B, max_leaf_size=leaf, max_depth=depth)
    tree = build_wide_tree(_emb(L), shape, seed=1)
    check_tree(tree, L)
    assert tree.branching == shape and len(shape) <= depth
    labels_per_node = (tree.perm >= 0).astype(int)
    for B_l in reversed(shape):  # sibling subtrees of equal width differ by at most 1 per leaf
        labels_per_node = labels_per_node.reshape(-1, B_l).sum(axis=1)
        width = len(tree.perm) // len(labels_per_node)
        assert labels_per_node.max() - labels_per_node.min() <= width // shape[-1]


def test_wide_tree_with_power_of_two_branching_is_pecos_tree():
    # one internal level of 4 = two rounds of bisection with the same keys as build_tree
    Z = _emb(32, seed=4)
    a = build_wide_tree(Z, (4, 8), seed=5)
    b = build_tree(Z, max_leaf_size=8, nr_splits=4, seed=5)
    assert b.branching == (4, 8)
    np.testing.assert_array_equal(a.perm, b.perm)


def test_wide_tree_separates_obvious_groups():
    Z = sp.csr_matrix(np.vstack([np.tile([1.0, 0, 0, 0], (8, 1)) + 0.01 * np.eye(8, 4),
                                 np.tile([0, 0, 1.0, 0], (8, 1)) + 0.01 * np.eye(8, 4)]).astype(np.float32))
    tree = build_wide_tree(Z, (2, 8), seed=3)
    halves = [set(h[h >= 0]) for h in tree.perm.reshape(2, -1)]
    assert halves[0] in ({*range(8)}, {*range(8, 16)})
