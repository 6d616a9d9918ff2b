import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jxmc.tree.beam import beam_search, l3_hinge_log


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
