"""jxmc.ops.svm_dual: lock-step dual coordinate descent against a reference solver."""

import numpy as np
import pytest
from scipy.optimize import minimize

from jxmc.ops import svm_dual


def _primal(w, X, y, C):
    m = X @ w
    return 0.5 * w @ w + C * np.sum(np.maximum(0, 1 - y * m) ** 2)


def _problem(seed=0, sizes=((14, 5), (9, 3), (6, 4)), B=3, width=2):
    """Parents with dense instance rows on their own slots, as chunk entries."""
    rng = np.random.default_rng(seed)
    blocks, slot, val, pair, pair_parent, ys = [], [], [], [], [], []
    s0 = p0 = 0
    for u, (n, s) in enumerate(sizes):
        Xp = (rng.normal(size=(n, s)) * (rng.random((n, s)) < 0.8)).astype(np.float32)
        Xp[:, -1] = 1.0  # a shared bias feature couples every instance of a parent
        Yp = np.where(rng.random((n, B)) < 0.3, 1.0, -1.0).astype(np.float32)
        for i in range(n):
            nz = np.nonzero(Xp[i])[0]
            slot += list(s0 + nz)
            val += list(Xp[i, nz])
            pair += [p0 + i] * len(nz)
        pair_parent += [u] * n
        ys.append(Yp)
        blocks.append((Xp, Yp, slice(s0, s0 + s), slice(p0, p0 + n)))
        s0, p0 = s0 + s, p0 + n
    y = np.vstack(ys)
    mask = np.ones_like(y)
    mask[2, 1] = 0  # a masked (pair, child) is left out of its problem
    args = (np.array(slot, np.int32), np.array(val, np.float32), np.array(pair, np.int32),
            np.array(pair_parent, np.int32), y, mask, s0 + 1)
    return blocks, mask, args, width


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_matches_a_reference_solver(lanes):
    blocks, mask, (slot, val, pair, pp, y, msk, S), width = _problem()
    chunk = svm_dual.chunk_layout(slot, val, pair, pp, y, msk, S, n_lanes=lanes, width=width)
    # every row survives the piece layout
    rows = np.zeros((y.shape[0], S), np.float32)
    for r in range(y.shape[0]):
        for q in range(chunk.first[r], chunk.first[r] + chunk.count[r]):
            np.add.at(rows[r], chunk.idx[q], chunk.val[q])
    dense = np.zeros_like(rows)
    np.add.at(dense, (pair, slot), val)
    np.testing.assert_allclose(rows[:, :-1], dense[:, :-1])
    # the rows' squared norms (summed on the host), 0 for the inert row
    np.testing.assert_allclose(chunk.sqnorm, np.append((dense ** 2).sum(axis=1), 0.0), rtol=1e-6)
    walks = svm_dual.epoch_walks(chunk.length, 200, seed=0)
    W, epochs = svm_dual.solve_dual_cd(chunk, walks, 200, cost=1.0, eps=1e-4, n_slots=S)
    W = np.asarray(W)
    assert np.all(W[-1] == 0) and 1 <= int(epochs) < 200
    for Xp, Yp, srows, prow in blocks:
        for c in range(y.shape[1]):
            keep = mask[prow, c] > 0
            ref = minimize(_primal, np.zeros(Xp.shape[1]), args=(Xp[keep], Yp[keep, c], 1.0),
                           method="BFGS", options={"gtol": 1e-8}).x
            np.testing.assert_allclose(W[srows, c], ref, atol=2e-3)


def test_padding_to_common_shapes_changes_nothing():
    _, _, (slot, val, pair, pp, y, msk, S), width = _problem(seed=1)
    chunk = svm_dual.chunk_layout(slot, val, pair, pp, y, msk, S, n_lanes=2, width=width)
    big = svm_dual.pad_chunk(chunk, n_slots=S + 7, rows=y.shape[0] + 5,
                             pieces=chunk.idx.shape[0] + 3, steps=chunk.sched.shape[0] + 4)
    assert big.sqnorm.shape == (y.shape[0] + 6,) and np.all(big.sqnorm[y.shape[0]:] == 0)
    walks = svm_dual.epoch_walks(chunk.length, 30, seed=3)
    a, ea = svm_dual.solve_dual_cd(chunk, walks, 30, cost=1.0, eps=0.0, n_slots=S)
    b, eb = svm_dual.solve_dual_cd(big, walks, 30, cost=1.0, eps=0.0, n_slots=S + 7)
    assert int(ea) == int(eb) == 30
    np.testing.assert_allclose(np.asarray(b)[: S - 1], np.asarray(a)[: S - 1], atol=1e-5)
    assert np.all(np.asarray(b)[S - 1:] == 0)


def test_lanes_pack_parents_longest_first():
    sizes = np.array([5, 9, 1, 4, 3])
    lane = svm_dual.assign_lanes(sizes, 2)
    np.testing.assert_array_equal(lane, [1, 0, 1, 1, 0])  # 9 | 5, 4 | 3 | 1 to the lighter
    loads = np.bincount(lane, weights=sizes)
    assert loads.max() <= sizes.max() + sizes.sum() / 2


def test_epoch_walks_visit_every_row_once():
    length = np.array([1, 7, 12, 0], np.int32)
    walks = svm_dual.epoch_walks(length, 5, seed=4)
    assert walks.shape == (5, 2, 4)
    for e in range(5):
        for u, n in enumerate(length):
            if n:
                stride, start = walks[e, :, u]
                seen = {(int(start) + t * int(stride)) % int(n) for t in range(n)}
                assert seen == set(range(n))
    np.testing.assert_array_equal(walks, svm_dual.epoch_walks(length, 5, seed=4))
