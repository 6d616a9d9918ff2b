import numpy as np
import scipy.sparse as sp

from jxmc.tree.disentangle import reassign
from jxmc.tree.label_tree import LabelTree, ancestors_of_positions, label_copies, label_positions
from jxmc.tree.shortlist import pair_targets, positive_nodes, training_pairs


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    branching = (2, 3, 4)
    K = int(np.prod(branching))
    perm = rng.permutation(K).astype(np.int32)
    perm[perm >= 20] = -1  # 20 labels, 4 dummies
    tree = LabelTree(perm, branching)
    Y = sp.random(15, 20, density=0.15, random_state=rng, format="csr", dtype=np.float32)
    Y.data[:] = 1
    return tree, Y


def test_tfn_pairs_contain_every_positive_ancestor():
    tree, Y = _setup()
    pos = label_positions(tree, 20)
    for level in range(1, tree.depth + 1):
        inst, parent = training_pairs(Y, tree, level)
        have = set(zip(inst.tolist(), parent.tolist(), strict=True))
        for i in range(Y.shape[0]):
            for lab in Y[i].indices:
                assert (i, int(ancestors_of_positions(tree, pos[lab], level - 1))) in have
        y, mask = pair_targets(Y, tree, level, inst, parent)
        assert (y > 0).sum() == len({(i, int(ancestors_of_positions(tree, pos[lab], level)))
                                     for i in range(15) for lab in Y[i].indices})
        if level == tree.depth:
            assert (mask[y > 0] == 1).all() and mask.min() == 0


def test_man_adds_beam_parents_and_keeps_tfn():
    tree, Y = _setup(1)
    beam = np.full((15, 2), -1, np.int32)
    beam[:, 0] = 5
    inst, parent = training_pairs(Y, tree, 3, beam_parents=beam)
    tfn_i, tfn_p = training_pairs(Y, tree, 3)
    have = set(zip(inst.tolist(), parent.tolist(), strict=True))
    assert set(zip(tfn_i.tolist(), tfn_p.tolist(), strict=True)) <= have
    assert all((i, 5) in have for i in range(15))
    assert len(have) == len(inst)  # no duplicates
    assert np.all(np.diff(parent) >= 0)


def _copies_setup(seed=0):
    """The tree of ``_setup`` with labels re-assigned to 2 leaf clusters each."""
    tree, Y = _setup(seed)
    rng = np.random.default_rng(seed)
    S = sp.random(20, 6, density=0.5, random_state=rng, format="csr", dtype=np.float32)
    return reassign(S, tree, 2), Y


def test_tfn_pairs_hold_the_ancestors_of_every_copy():
    tree, Y = _copies_setup()
    indptr, positions = label_copies(tree, 20)
    assert (np.diff(indptr) == 2).all()
    for level in range(1, tree.depth + 1):
        inst, parent = training_pairs(Y, tree, level)
        have = set(zip(inst.tolist(), parent.tolist(), strict=True))
        want_pos = set()
        for i in range(Y.shape[0]):
            for lab in Y[i].indices:
                for q in positions[indptr[lab]:indptr[lab + 1]]:
                    assert (i, int(ancestors_of_positions(tree, q, level - 1))) in have
                    want_pos.add((i, int(ancestors_of_positions(tree, q, level))))
        y, _ = pair_targets(Y, tree, level, inst, parent)
        assert (y > 0).sum() == len(want_pos)  # every copy's node is a positive of its pair


def test_positive_nodes_with_one_extra_copy_adds_exactly_that_copy():
    tree, Y = _setup(2)
    perm = tree.perm.copy()
    lab = int(Y.indices[0])
    pos = label_positions(tree, 20)[lab]
    other = next(q for q in np.nonzero(perm < 0)[0] if q // 4 != pos // 4)
    perm[other] = lab
    copied = LabelTree(perm, tree.branching)
    base = positive_nodes(Y, tree, tree.depth).toarray()
    more = positive_nodes(Y, copied, tree.depth).toarray()
    has = np.asarray(Y[:, lab].toarray()).ravel() > 0
    np.testing.assert_array_equal(more[:, other], has)
    more[:, other] = False
    np.testing.assert_array_equal(base, more)
