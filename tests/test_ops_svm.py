import numpy as np
from scipy.optimize import minimize

from jxmc.ops.svm import solve_squared_hinge


def _primal(w, X, y, C):
    m = X @ w
    return 0.5 * w @ w + C * np.sum(np.maximum(0, 1 - y * m) ** 2)


def test_matches_a_reference_solver_on_two_parents():
    rng = np.random.default_rng(0)
    # parent 0: 12 instances on slots 0..4, parent 1: 8 instances on slots 5..7
    X0 = rng.normal(size=(12, 5)).astype(np.float32)
    X1 = rng.normal(size=(8, 3)).astype(np.float32)
    Y0 = np.sign(rng.normal(size=(12, 2))).astype(np.float32)
    Y1 = np.sign(rng.normal(size=(8, 2))).astype(np.float32)
    slot, val, pair = [], [], []
    for Xp, off, poff in ((X0, 0, 0), (X1, 5, 12)):
        for i in range(Xp.shape[0]):
            for j in range(Xp.shape[1]):
                slot.append(off + j)
                val.append(Xp[i, j])
                pair.append(poff + i)
    E = 256
    S, P = 8, 20
    pad = E - len(slot)
    slot = np.array(slot + [S] * pad, np.int32)
    val = np.array(val + [0.0] * pad, np.float32)
    pair = np.array(pair + [P] * pad, np.int32)
    y = np.vstack([Y0, Y1, np.zeros((1, 2))]).astype(np.float32)
    mask = np.vstack([np.ones((20, 2)), np.zeros((1, 2))]).astype(np.float32)
    mask[3, 1] = 0  # a masked pair is ignored
    slot_parent = np.array([0] * 5 + [1] * 3 + [1], np.int32)
    pair_parent = np.array([0] * 12 + [1] * 8 + [1], np.int32)
    W = np.asarray(solve_squared_hinge(slot, val, pair, y, mask, slot_parent, pair_parent, cost=1.0,
                                       n_parents=2, newton_iters=6, cg_iters=8, block=64))
    assert np.all(W[-1] == 0)
    for c in range(2):
        for Xp, Yp, rows, msk in ((X0, Y0, slice(0, 5), mask[:12, c]),
                                  (X1, Y1, slice(5, 8), mask[12:20, c])):
            keep = msk > 0
            ref = minimize(_primal, np.zeros(Xp.shape[1]), args=(Xp[keep], Yp[keep, c], 1.0)).x
            np.testing.assert_allclose(W[rows, c], ref, atol=2e-3)
