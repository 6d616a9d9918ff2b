import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.ops import sparse_weights as sw
from jxmc.ops.sparse import add_bias, csr_to_ell


def test_slots_entries_and_compressed_scoring_match_dense():
    rng = np.random.default_rng(0)
    X = sp.random(10, 30, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    Xb = add_bias(X, 1.0)
    inst = np.array([0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9], np.int32)
    parent = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2], np.int32)
    A = sw.parent_supports(Xb, inst, parent, 4)  # parent 3 has no pairs
    slot, val, pair = sw.pair_entries(Xb, A, inst, parent)
    feats = A.indices
    slot_parent = np.repeat(np.arange(4), np.diff(A.indptr))
    assert np.all(slot_parent[slot] == parent[pair])
    assert np.all(feats[slot] == Xb[inst].indices)
    B = 5
    W = rng.normal(size=(A.nnz, B)).astype(np.float32)
    W[:3] = 0.01  # slots that vanish entirely
    # two chunks, compressed separately, then joined
    parts = []
    for sl in (slice(0, 7), slice(7, A.nnz)):
        keep, counts, ch, v = sw.compress_rows(W[sl], 0.3)
        parts.append((slot_parent[sl][keep], feats[sl][keep], counts, ch, v))
    level = sw.assemble_level(parts, 4, B)
    assert level["children"].dtype == np.int16 and level["indptr"][-1] == len(level["features"])
    Wt = np.where(np.abs(W) >= 0.3, W, 0)
    dense = np.zeros((4, 31, B), np.float32)
    np.add.at(dense, (slot_parent, feats), Wt)
    assert len(level["values"]) == np.count_nonzero(Wt)
    q = add_bias(sp.random(4, 30, density=0.3, random_state=rng, format="csr",
                              dtype=np.float32), 1.0)
    e = csr_to_ell(q)
    parents = np.array([[0, 2], [1, -1], [2, 3], [0, 0]], np.int32)
    steps, width = sw.level_shape(level)
    assert width <= B
    dev = {k: jnp.asarray(v) for k, v in level.items()}
    got = np.asarray(jax.jit(sw.score_children, static_argnames=('n_children', 'steps', 'width'))(dev, e.indices, e.values, jnp.asarray(parents),
                                       n_children=B, steps=steps, width=width))
    qd = q.toarray()
    want = np.zeros((4, 2, B), np.float32)
    for i in range(4):
        for j in range(2):
            if parents[i, j] >= 0:
                want[i, j] = qd[i] @ dense[parents[i, j]]
    np.testing.assert_allclose(got, want, atol=1e-5)
    for light_width in (0, 1, 2, B):  # all dense rows, mixed, all compressed
        light, heavy, (ls, lw, hs) = sw.scoring_layout(level, B, packed_width=light_width)
        light, heavy = jax.tree.map(jnp.asarray, (light, heavy))
        assert (light is None) == (light_width == 0) and (heavy is None) == (light_width == B)
        out = np.zeros_like(want)
        if light is not None:
            assert lw <= light_width
            out += np.asarray(jax.jit(sw.score_children, static_argnames=('n_children', 'steps', 'width'))(light, e.indices, e.values, parents,
                                                n_children=B, steps=ls, width=lw))
        if heavy is not None:
            out += np.asarray(jax.jit(sw.score_dense_rows, static_argnames=('steps',))(heavy, e.indices, e.values, parents, steps=hs))
        np.testing.assert_allclose(out, want, atol=1e-5)


def test_empty_level_gets_one_inert_slot():
    keep, counts, ch, v = sw.compress_rows(np.full((3, 2), 0.01, np.float32), 0.1)
    level = sw.assemble_level([(np.zeros(0, np.int64)[keep[:0]], np.zeros(0, np.int32), counts,
                                ch, v)], 2, 2)
    assert len(level["features"]) == 1 and level["values"][0] == 0
    assert list(level["indptr"]) == [0, 1, 1]


def test_plan_chunks_respects_limits():
    sizes = np.array([[3, 1], [4, 1], [10, 1], [1, 1], [1, 5]])
    chunks = sw.plan_chunks(sizes, np.array([8, 5]))
    assert chunks == [(0, 2), (2, 3), (3, 4), (4, 5)]
