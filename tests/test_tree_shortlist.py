import numpy as np
import scipy.sparse as sp

from jxmc.tree.label_tree import LabelTree, ancestors_of_positions, label_positions
from jxmc.tree.shortlist import pair_targets, training_pairs


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
