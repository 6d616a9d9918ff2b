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


# --- the training shortlist of a cascade level: every positive, and the negatives option ---

import flax.linen as nn  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from jxmc.errors import ConfigError  # noqa: E402
from jxmc.nn import cascade  # noqa: E402
from jxmc.nn.encoder import EncoderOutput  # noqa: E402
from jxmc.nn.heads import init_table  # noqa: E402
from jxmc.tree.label_tree import LabelTree, label_positions  # noqa: E402
from jxmc.tree.shortlist import NEGATIVES, level_positives  # noqa: E402

B1, B2 = 8, 8  # 8 clusters of 8 labels


class _Bag(nn.Module):
    """A bag-of-embeddings encoder with two 'layers' (cheap stand-in for BERT)."""

    @nn.compact
    def __call__(self, ids, mask, deterministic=True, cls_only=False):
        m = mask.astype(jnp.float32)[:, :, None]
        x = (nn.Embed(16, 8)(ids) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        feats = []
        for i in range(2):
            x = jnp.tanh(nn.Dense(8, name=f"layer_{i}")(x))
            feats.append(x)
        return EncoderOutput(jnp.stack(feats, axis=1), None if cls_only else x)


def _net(Y, negatives, beam=2, seed=0):
    perm = np.random.default_rng(seed).permutation(B1 * B2).astype(np.int32)
    tree = LabelTree(perm, (B1, B2))
    n = Y.shape[0]
    ids = jnp.asarray(np.random.default_rng(seed + 1).integers(0, 16, size=(n, 5)), jnp.int32)
    mask = jnp.ones_like(ids)
    spec = cascade.Spec(_Bag(), tree.branching, ((0,), (1,)), beam=beam, negatives=negatives)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 2))
    params = {"encoder": _Bag().init(jax.random.PRNGKey(seed), ids, mask)["params"],
              "heads": {"level_1": init_table(k1, B1, 8), "level_2": init_table(k2, B1 * B2, 8)}}
    pos = tuple(jnp.asarray(p) for p in level_positives(Y, tree))
    return tree, spec, params, ids, mask, pos


_jit_forward = jax.jit(cascade.forward, static_argnames=("spec", "upto"))


def _forward(net, key=0):
    tree, spec, params, ids, mask, pos = net
    return _jit_forward(params, ids, mask, jnp.asarray(tree.perm), spec=spec, positives=pos,
                        rng=jax.random.PRNGKey(key))


def test_every_positive_is_in_the_shortlist_and_trained_as_positive():
    # point 0 has 40 labels, more than the 32 positives the old fixed buffer kept
    rows = [list(range(40))] + [[41], [45, 49], [63]]
    assert len(rows[0]) == 40
    Y = sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32),
                       (np.repeat(np.arange(len(rows)), [len(r) for r in rows]),
                        np.concatenate(rows))), shape=(len(rows), 64))
    for negatives in ("tfn+man", "uniform"):
        net = _net(Y, negatives, beam=1)
        tree, _, _, _, _, pos = net
        leaves = label_positions(tree, 64)[rows[0]]
        assert pos[1].shape[1] >= 40 and set(np.asarray(pos[1][0]).tolist()) - {-1} == set(
            leaves.tolist())
        last = _forward(net)[-1]
        cand = np.asarray(last.ids[0])
        y = np.asarray(hits(last.ids, pos[1]))[0]  # the BCE targets of cascade.level_loss
        for leaf in leaves:
            (at,) = np.flatnonzero(cand == leaf)  # in the shortlist, once
            assert y[at], (negatives, leaf)  # ... and a positive, never a negative
        assert y.sum() == 40
        loss = cascade.level_loss(last, pos[1], jnp.ones(len(rows), bool))
        assert np.isfinite(float(loss))


def _batch_labels():
    """6 points whose labels lie in clusters 0..3 only (by leaf position), so clusters
    4..7 are nobody's positive."""
    perm = np.random.default_rng(0).permutation(B1 * B2).astype(np.int32)
    label_at = {int(pos): int(lab) for pos, lab in enumerate(perm)}
    leaf_rows = [[0, 1], [9], [17, 25], [26], [3, 30], [12]]  # leaf positions, clusters 0..3
    rows = [[label_at[p] for p in r] for r in leaf_rows]
    Y = sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32),
                       (np.repeat(np.arange(6), [len(r) for r in rows]), np.concatenate(rows))),
                      shape=(6, 64))
    own = [{p // B2 for p in r} for r in leaf_rows]
    return Y, own


def _parents(levels):
    """Per point, the set of level-1 clusters whose children level 2 trains on."""
    ids = np.asarray(levels[1].ids)
    return [set((r[r >= 0] // B2).tolist()) for r in ids], ids.shape[1]


def test_each_negatives_option_shapes_the_shortlist():
    Y, own = _batch_labels()
    widths = set()
    out = {}
    for negatives in NEGATIVES:
        levels = _forward(_net(Y, negatives))
        sets, width = _parents(levels)
        widths.add(width)
        lp = np.asarray(levels[0].logp)
        beam = [set(np.argsort(-r)[:2].tolist()) for r in lp]  # the model's 2 best clusters
        out[negatives] = (sets, beam)
    assert len(widths) == 1  # one fixed shortlist size for every option
    sets, beam = out["tfn"]
    assert sets == own  # the positives' clusters: positives and their siblings only
    sets, beam = out["man"]
    assert sets == beam  # the model's top scored clusters only
    sets, beam = out["tfn+man"]
    assert sets == [o | b for o, b in zip(own, beam, strict=True)]
    batch_pool = set().union(*own)
    drew_uniform, drew_other = set(), False
    net_u, net_ib = _net(Y, "uniform"), _net(Y, "in-batch")
    for key in range(8):
        u, _ = _parents(_forward(net_u, key))
        ib, _ = _parents(_forward(net_ib, key))
        for i in range(6):
            assert own[i] <= u[i] and own[i] <= ib[i]  # positives always trained
            drew_uniform |= u[i] - own[i]
            assert ib[i] <= batch_pool  # in-batch: only clusters some batch member holds
            drew_other |= bool(ib[i] - own[i])
    assert drew_uniform & set(range(4, 8))  # uniform reaches clusters no point holds
    assert drew_other  # in-batch adds other members' positive clusters


def test_unknown_negatives_is_a_config_error():
    from jxmc.models.transformer import cascadexml, common, lightxml, xr_transformer

    for module in (cascadexml, lightxml, xr_transformer):
        assert module.Config().negatives == "tfn+man"  # today's behaviour is the default
        with pytest.raises(ConfigError, match="negatives") as err:
            common.check_negatives(module.Config(negatives="hard"))
        assert "\n" not in str(err.value)
    tree, spec, params, ids, mask, pos = _net(_batch_labels()[0], "hard")
    with pytest.raises(ValueError, match="negatives"):
        cascade.forward(params, ids, mask, jnp.asarray(tree.perm), spec=spec, positives=pos,
                        rng=jax.random.PRNGKey(0))
