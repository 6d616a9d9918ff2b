import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxmc.tree.beam import beam_search, l2_hinge_log, l3_hinge_log
from jxmc.tree.merge import average_lists, merge_duplicates


def _exhaustive(logits_by_level, perm, branching, k):
    n = logits_by_level[0].shape[0]
    best = []
    for i in range(n):
        cands = []
        for path in itertools.product(*[range(b) for b in branching]):
            node, s = 0, 0.0
            for lev, c in enumerate(path):
                node = node * branching[lev] + c
                s += float(l3_hinge_log(logits_by_level[lev][i, node]))
            if perm[node] >= 0:
                cands.append((s, perm[node]))
        cands.sort(key=lambda t: -t[0])
        best.append([lab for _, lab in cands[:k]])
    return np.array(best)


def test_full_beam_equals_exhaustive_scoring():
    branching = (3, 4, 2)
    rng = np.random.default_rng(0)
    n = 5
    sizes = np.cumprod(branching)
    logits = [rng.normal(size=(n, s)).astype(np.float32) for s in sizes]
    perm = np.arange(sizes[-1], dtype=np.int32)
    perm[[3, 10]] = -1  # dummy leaves
    perm = np.where(perm >= 0, rng.permutation(sizes[-1]).astype(np.int32), -1)

    def score(level, parents):
        B = branching[level - 1]
        kids = jnp.maximum(parents, 0)[:, :, None] * B + jnp.arange(B)
        return jnp.take_along_axis(jnp.asarray(logits[level - 1]), kids.reshape(n, -1), 1).reshape(kids.shape)

    out = jax.jit(lambda: beam_search(score, jnp.asarray(perm), branching, n, beam=24, k=6))()
    np.testing.assert_array_equal(np.asarray(out.ids), _exhaustive(logits, perm, branching, 6))
    assert np.all(np.diff(np.asarray(out.scores), axis=1) <= 0)


def test_padding_when_k_exceeds_reachable_labels():
    perm = jnp.array([0, -1, 1, -1], jnp.int32)
    out = beam_search(lambda lev, p: jnp.zeros(p.shape + (2,)), perm, (2, 2), 3, beam=2, k=5)
    ids = np.asarray(out.ids)
    assert ids.shape == (3, 5)
    assert set(ids[0, :2]) == {0, 1} and (ids[:, 2:] == -1).all()
    assert np.isneginf(np.asarray(out.scores)[:, 2:]).all()


def _exhaustive_merged(logits_by_level, perm, branching, k, log_t=l3_hinge_log):
    """Every path scored; a label keeps the best score over its leaves."""
    n = logits_by_level[0].shape[0]
    out_ids, out_scores = [], []
    for i in range(n):
        best = {}
        for path in itertools.product(*[range(b) for b in branching]):
            node, s = 0, 0.0
            for lev, c in enumerate(path):
                node = node * branching[lev] + c
                s += float(log_t(logits_by_level[lev][i, node]))
            lab = int(perm[node])
            if lab >= 0:
                best[lab] = max(best.get(lab, -np.inf), s)
        top = sorted(best.items(), key=lambda t: -t[1])[:k]
        out_ids.append([lab for lab, _ in top])
        out_scores.append([np.exp(s) for _, s in top])
    return np.array(out_ids), np.array(out_scores)


def _copies_problem(seed=0):
    branching = (3, 2, 4)  # 6 leaf clusters of 4 slots
    rng = np.random.default_rng(seed)
    n = 6
    sizes = np.cumprod(branching)
    logits = [rng.normal(size=(n, s)).astype(np.float32) for s in sizes]
    perm = np.full(sizes[-1], -1, np.int32)
    for lab in range(10):  # 10 labels, 2 copies each in distinct clusters
        for c in rng.choice(6, size=2, replace=False):
            free = np.nonzero(perm[c * 4:(c + 1) * 4] < 0)[0]
            if len(free):
                perm[c * 4 + free[0]] = lab
    return branching, logits, perm, n


def _score_fn(logits, branching, n):
    def score(level, parents):
        B = branching[level - 1]
        kids = jnp.maximum(parents, 0)[:, :, None] * B + jnp.arange(B)
        return jnp.take_along_axis(jnp.asarray(logits[level - 1]), kids.reshape(n, -1), 1).reshape(kids.shape)
    return score


def test_copies_full_beam_equals_exhaustive_best_copy_and_no_duplicates():
    branching, logits, perm, n = _copies_problem()
    assert len(np.unique(perm[perm >= 0])) < (perm >= 0).sum()  # some labels do have copies
    out = jax.jit(lambda: beam_search(_score_fn(logits, branching, n), jnp.asarray(perm), branching, n,
                                      beam=24, k=5, merge_copies=True))()
    ids, scores = np.asarray(out.ids), np.asarray(out.scores)
    want_ids, want_scores = _exhaustive_merged(logits, perm, branching, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    for row in ids:
        assert len(set(row[row >= 0])) == (row >= 0).sum()


def test_narrow_beam_with_copies_returns_distinct_labels():
    branching, logits, perm, n = _copies_problem(1)
    out = beam_search(_score_fn(logits, branching, n), jnp.asarray(perm), branching, n,
                      beam=2, k=8, merge_copies=True)
    for row, sc in zip(np.asarray(out.ids), np.asarray(out.scores), strict=True):
        assert len(set(row[row >= 0])) == (row >= 0).sum()
        assert np.all(np.diff(sc[row >= 0]) <= 0)


def test_merge_is_a_no_op_without_copies():
    branching = (3, 4, 2)
    rng = np.random.default_rng(2)
    n = 5
    logits = [rng.normal(size=(n, s)).astype(np.float32) for s in np.cumprod(branching)]
    perm = rng.permutation(24).astype(np.int32)
    perm[[3, 10]] = -1
    score = _score_fn(logits, branching, n)
    a = beam_search(score, jnp.asarray(perm), branching, n, beam=3, k=6)
    b = beam_search(score, jnp.asarray(perm), branching, n, beam=3, k=6, merge_copies=True)
    np.testing.assert_array_equal(np.asarray(a.ids), np.asarray(b.ids))
    np.testing.assert_allclose(np.asarray(a.scores), np.asarray(b.scores), rtol=1e-6)


def test_l2_hinge_transform_full_beam_equals_exhaustive():
    branching = (3, 4, 2)
    rng = np.random.default_rng(3)
    n = 4
    logits = [rng.normal(size=(n, s)).astype(np.float32) for s in np.cumprod(branching)]
    perm = rng.permutation(24).astype(np.int32)
    out = beam_search(_score_fn(logits, branching, n), jnp.asarray(perm), branching, n, beam=24, k=6,
                      transform="l2-hinge")
    want, _ = _exhaustive_merged(logits, perm, branching, 6, log_t=l2_hinge_log)
    np.testing.assert_array_equal(np.asarray(out.ids), want)
    with pytest.raises(ValueError):
        beam_search(_score_fn(logits, branching, n), jnp.asarray(perm), branching, n, beam=2, k=2,
                    transform="sigmoid")


def test_merge_duplicates_max_and_sum():
    ids = jnp.array([[3, 1, 3, -1, 2, 1]], jnp.int32)
    scores = jnp.array([[0.2, 0.5, 0.4, 9.0, 0.1, 0.3]], jnp.float32)
    top = merge_duplicates(ids, scores, 4, reduce="max")
    np.testing.assert_array_equal(np.asarray(top.ids), [[1, 3, 2, -1]])
    np.testing.assert_allclose(np.asarray(top.scores)[0, :3], [0.5, 0.4, 0.1])
    assert np.isneginf(np.asarray(top.scores)[0, 3])
    avg = average_lists(ids, scores, k=2, n_lists=2)
    np.testing.assert_array_equal(np.asarray(avg.ids), [[1, 3]])
    np.testing.assert_allclose(np.asarray(avg.scores), [[0.4, 0.3]], rtol=1e-6)
