"""Fixed-size shortlists inside jit: TFN holds the positives, no duplicates, fixed widths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jxmc.ops.ids import dedupe, hits
from jxmc.tree import shortlist as neg
from jxmc.tree.beam import children


def _pos(rng, n=6, m=4, K=40):
    p = rng.integers(0, K, size=(n, m)).astype(np.int32)
    p[rng.random((n, m)) < 0.3] = -1
    return jnp.asarray(p)


def _rows_unique(a):
    for row in np.asarray(a):
        r = row[row >= 0]
        assert len(r) == len(np.unique(r))


def test_dedupe_and_children():
    d = dedupe(jnp.asarray([[3, -1, 3, 1], [-1, -1, -1, -1]], jnp.int32))
    assert d.tolist() == [[1, 3, -1, -1], [-1, -1, -1, -1]]
    c = children(jnp.asarray([[2, -1]], jnp.int32), 3)
    assert c.tolist() == [[6, 7, 8, -1, -1, -1]]


def test_tfn_holds_positives():
    pos = _pos(np.random.default_rng(0))
    s = jax.jit(neg.tfn, static_argnums=1)(pos, 5)
    assert s.shape == (6, 20)
    assert bool(jnp.all(hits(pos, s) | (pos < 0)))  # every positive is in its shortlist
    _rows_unique(s)
    # nothing else: every shortlisted node is a sibling of one of the point's positives
    for row, p in zip(np.asarray(s), np.asarray(pos), strict=True):
        parents = set((p[p >= 0] // 5).tolist())
        assert set((row[row >= 0] // 5).tolist()) == parents
        assert (row >= 0).sum() == 5 * len(parents)  # all children of each parent, once


def test_man_holds_positives_and_beam():
    rng = np.random.default_rng(1)
    pos = _pos(rng)
    beam = jnp.asarray(rng.integers(0, 8, size=(6, 3)), jnp.int32)
    s = jax.jit(neg.man, static_argnums=1)(beam, 5, pos)
    assert s.shape == (6, (3 + 4) * 5)
    assert bool(jnp.all(hits(pos, s) | (pos < 0)))
    assert bool(jnp.all(hits(beam * 5 + 4, s)))
    _rows_unique(s)
    for row, p, b in zip(np.asarray(s), np.asarray(pos), np.asarray(beam), strict=True):
        allowed = set((p[p >= 0] // 5).tolist()) | set(b.tolist())
        assert set((row[row >= 0] // 5).tolist()) == allowed
    assert neg.man(beam, 5).shape == (6, 15)


def test_in_batch_and_uniform():
    pos = _pos(np.random.default_rng(2))
    key = jax.random.PRNGKey(0)
    for s in (jax.jit(neg.in_batch, static_argnums=2)(pos, key, 7),
              jax.jit(neg.uniform, static_argnums=(2, 3))(pos, key, 7, 40)):
        assert s.shape == (6, 11)
        assert bool(jnp.all(hits(pos, s) | (pos < 0)))
        _rows_unique(s)
        assert int(s.max()) < 40
    ib = np.asarray(neg.in_batch(pos, key, 7))
    pool = set(np.asarray(pos).ravel().tolist())
    assert set(ib.ravel().tolist()) <= pool | {-1}
