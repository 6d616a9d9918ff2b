"""The jitted train step: compiles once, learns, and the optimizer's schedule."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxmc.nn import cascade
from jxmc.nn.encoder import BertConfig, BertEncoder, init_params
from jxmc.nn.heads import init_table
from jxmc.ops.ids import csr_to_padded
from jxmc.train.batches import batches
from jxmc.train.optim import make_optimizer, warmup_linear
from jxmc.train.step import init_state, make_train_step
from jxmc.tree.label_tree import LabelTree, merge_top_levels
from jxmc.tree.shortlist import level_positives

BERT = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=8, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)


def _setup(n=24):
    rng = np.random.default_rng(0)
    import scipy.sparse as sp

    tree = LabelTree(np.array([3, 0, 5, 1, 4, 2, 6, -1], np.int32), (2, 2, 2))
    Y = sp.csr_matrix((rng.random((n, 7)) < 0.3).astype(np.float32))
    ids = rng.integers(5, 30, size=(n, 8)).astype(np.int32)
    arrays = {"ids": ids, "mask": np.ones_like(ids), "pos": level_positives(Y, tree, 4)}
    spec = cascade.Spec(BertEncoder(BERT), tree.branching, ((0,), (1,), (1,)), beam=1, dropout=0.1)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    params = {"encoder": init_params(BERT, jax.random.PRNGKey(0)),
              "heads": {f"level_{t}": init_table(keys[t - 1], K, 16)
                        for t, K in enumerate(tree.level_sizes(), 1)}}
    return tree, arrays, spec, params


def test_step_compiles_once_and_learns():
    tree, arrays, spec, params = _setup()
    tx = make_optimizer(lr_encoder=1e-3, lr_heads=1e-2, total_steps=30, warmup_steps=2)
    traces = []

    def loss(p, b, r):
        traces.append(1)
        return cascade.loss_fn(p, b, r, jnp.asarray(tree.perm), spec=spec, train_levels=(1, 2, 3))

    step = make_train_step(loss, tx)
    state = init_state(params, tx, 0)
    losses = []
    for epoch in range(5):
        for b in batches(arrays, 8, epoch=epoch):
            state, m = step(state, b)
            losses.append(float(m["loss"]))
    assert len(traces) == 1 and step._cache_size() == 1
    assert int(state.step) == 15
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert set(m) >= {"loss", "loss_1", "loss_3", "grad_norm"}


def test_schedule_and_labels():
    s = warmup_linear(1.0, 10, 2)
    assert float(s(0)) == 0.0 and float(s(2)) == pytest.approx(1.0) and float(s(10)) == 0.0
    with pytest.raises(ValueError):
        make_optimizer(lr_encoder=1e-3, lr_heads=1e-2, total_steps=0)
    # a zero encoder learning rate leaves the encoder untouched, the heads move
    tree, arrays, spec, params = _setup()
    tx = make_optimizer(lr_encoder=0.0, lr_heads=1e-2, total_steps=4)
    params = jax.tree_util.tree_map(np.asarray, params)
    loss = functools.partial(cascade.loss_fn, perm=jnp.asarray(tree.perm), spec=spec,
                             train_levels=(1,))
    step = make_train_step(lambda p, b, r: loss(p, b, r), tx)
    state = init_state(params, tx, 0)
    for b in batches(arrays, 8, epoch=0):  # the first step has learning rate 0 (warm-up)
        state = step(state, b)[0]
    enc0 = jax.tree_util.tree_leaves(params["encoder"])
    for a, b in zip(enc0, jax.tree_util.tree_leaves(state.params["encoder"]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(state.params["heads"]["level_1"]["w"], params["heads"]["level_1"]["w"])


def test_data_helpers():
    import scipy.sparse as sp

    M = sp.csr_matrix(np.array([[0, 1, 1, 1], [0, 0, 0, 0]], np.float32))
    assert csr_to_padded(M, 2).tolist() == [[1, 2], [-1, -1]]
    tree = LabelTree(np.arange(8, dtype=np.int32), (2, 2, 2))
    assert merge_top_levels(tree, 2).branching == (4, 2) and merge_top_levels(tree, 5) is tree
    bs = list(batches({"ids": np.zeros((5, 3), np.int32), "mask": np.ones((5, 3), np.int32)}, 2,
                      epoch=None))
    assert len(bs) == 3 and bs[-1]["valid"].tolist() == [True, False]


def test_shortlists_in_forward_hold_positives():
    tree, arrays, spec, params = _setup()
    b = next(batches(arrays, 8, epoch=0))
    levels = cascade.forward(params, b["ids"], b["mask"], jnp.asarray(tree.perm), spec=spec,
                             positives=b["pos"], rng=jax.random.PRNGKey(0))
    from jxmc.ops.ids import hits

    for lv, pos in zip(levels, b["pos"], strict=True):
        assert bool(jnp.all(hits(jnp.asarray(pos), lv.ids) | (pos < 0)))


def test_frozen_heads_do_not_move():
    tree, arrays, spec, params = _setup()
    params = jax.tree_util.tree_map(np.asarray, params)
    tx = make_optimizer(lr_encoder=1e-3, lr_heads=1e-2, total_steps=4, weight_decay=0.5,
                        frozen_heads=("level_1",))
    loss = functools.partial(cascade.loss_fn, perm=jnp.asarray(tree.perm), spec=spec,
                             train_levels=(2,))
    step = make_train_step(lambda p, b, r: loss(p, b, r), tx)
    state = init_state(params, tx, 0)
    for b in batches(arrays, 8, epoch=0):
        state = step(state, b)[0]
    new = state.params["heads"]
    np.testing.assert_array_equal(new["level_1"]["w"], params["heads"]["level_1"]["w"])
    assert not np.allclose(new["level_2"]["w"], params["heads"]["level_2"]["w"])
    # level 3 has no gradient here, but it is not frozen: weight decay shrinks it
    assert np.abs(new["level_3"]["w"]).sum() < np.abs(params["heads"]["level_3"]["w"]).sum()


def test_phases_resume_in_the_middle_of_a_later_phase(tmp_path):
    from jxmc.checkpoint import TrainCheckpoints
    from jxmc.models.transformer.common import TextConfig, fit_phases

    tree, arrays, spec, params = _setup()
    params = jax.tree_util.tree_map(np.asarray, params)
    config = TextConfig(epochs=2, batch_size=8, lr_encoder=1e-3, lr_heads=1e-2)
    phases = [(1,), (2, 3)]

    at_phase_2 = {}

    def keep(p, prm):  # called at the start of each phase, with the params it starts from
        at_phase_2.setdefault(p, np.array(prm["heads"]["level_1"]["w"]))
        return prm

    def fit(ckpt):
        return fit_phases(params, spec, tree.perm, arrays, phases, config, seed=0, ckpt=ckpt,
                          progress=False, on_phase_start=keep)

    class Interrupt(TrainCheckpoints):
        def save(self, step, state):
            super().save(step, state)
            if step == 3:  # the first of phase 2's two epochs
                raise KeyboardInterrupt

    full = fit(None)
    with pytest.raises(KeyboardInterrupt):
        fit(Interrupt(tmp_path / "ckpt"))
    again = TrainCheckpoints(tmp_path / "ckpt")
    assert again.latest_step() == 3
    resumed = fit(again)
    assert again.latest_step() == 4
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # phase 2 did not train level 1: it is where phase 1 left it (and phase 1 moved it)
    np.testing.assert_array_equal(full["heads"]["level_1"]["w"], at_phase_2[1])
    assert not np.allclose(at_phase_2[1], params["heads"]["level_1"]["w"])


def test_any_flax_encoder_plugs_into_the_heads():
    """A non-BERT encoder (a bag of embeddings with two dense 'layers') takes the same
    path: the heads read its per-layer features, the step trains, prediction runs."""
    import flax.linen as nn

    from jxmc.nn.encoder import EncoderOutput

    class Bag(nn.Module):
        width: int = 16

        @nn.compact
        def __call__(self, ids, mask, deterministic=True, cls_only=False):
            m = mask.astype(jnp.float32)[:, :, None]
            x = (nn.Embed(30, self.width)(ids) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
            feats = []
            for i in range(2):
                x = jnp.tanh(nn.Dense(self.width, name=f"layer_{i}")(x))
                feats.append(x)
            return EncoderOutput(jnp.stack(feats, axis=1), None if cls_only else x)

    tree, arrays, _, params = _setup()
    spec = cascade.Spec(Bag(), tree.branching, ((0,), (1,), ()), beam=1, dropout=0.1)
    ids = jnp.asarray(arrays["ids"][:2])
    mask = jnp.ones_like(ids)
    params = {**params, "encoder": Bag().init(jax.random.PRNGKey(0), ids, mask)["params"]}
    tx = make_optimizer(lr_encoder=1e-3, lr_heads=1e-2, total_steps=3)
    loss = functools.partial(cascade.loss_fn, perm=jnp.asarray(tree.perm), spec=spec,
                             train_levels=(1, 2, 3))
    state = init_state(params, tx, 0)
    for b in batches(arrays, 8, epoch=0):
        state, m = make_train_step(lambda p, b, r: loss(p, b, r), tx)(state, b)
    assert np.isfinite(float(m["loss"]))
    top = cascade.predict_topk(state.params, ids, mask, jnp.asarray(tree.perm), spec=spec, k=3)
    assert top.ids.shape == (2, 3) and bool(jnp.all(top.ids[:, 0] >= 0))
