"""Sparse row updates of the tree heads' label tables (:mod:`jxmc.nn.sparse_rows`,
:func:`jxmc.train.sparse_step.make_sparse_train_step`): equal to the dense update written
densely, no dense ``K x h`` gradient in the compiled step, bf16 storage, frozen levels."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.models.transformer import common, plan
from jxmc.nn import cascade, heads, sparse_rows
from jxmc.nn.encoder import BertConfig, BertEncoder, init_params
from jxmc.nn.heads import init_table
from jxmc.train.batches import batches
from jxmc.train.optim import make_optimizer, warmup_linear
from jxmc.train.sparse_step import (
    RowUpdate,
    init_sparse_state,
    make_sparse_train_step,
    sparse_params,
)
from jxmc.tree.label_tree import LabelTree
from jxmc.tree.shortlist import level_positives

BERT = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=8, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
LEVELS = (1, 2, 3)


def _toy(n=24):
    rng = np.random.default_rng(0)
    tree = LabelTree(np.array([3, 0, 5, 1, 4, 2, 6, -1], np.int32), (2, 2, 2))
    Y = sp.csr_matrix((rng.random((n, 7)) < 0.3).astype(np.float32))
    ids = rng.integers(5, 30, size=(n, 8)).astype(np.int32)
    arrays = {"ids": ids, "mask": np.ones_like(ids), "pos": level_positives(Y, tree, 4)}
    spec = cascade.Spec(BertEncoder(BERT), tree.branching, ((0,), (1,), (1,)), beam=1)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    params = {"encoder": init_params(BERT, jax.random.PRNGKey(0)),
              "heads": {f"level_{t}": init_table(keys[t - 1], K, 16)
                        for t, K in enumerate(tree.level_sizes(), 1)}}
    return tree, arrays, spec, params


def _rows(update, tables, trained, lr=0.05, wd=0.1, clip=0.5, dtype="float32"):
    return RowUpdate(update, tables, trained, warmup_linear(lr, 10, 2), wd, clip, dtype=dtype)


def _dense_reference(params, tx, opt, acc, batch, rng, grad_ids, rows: RowUpdate, step):
    """The same update written densely: the full gradient (``K x h`` tables included),
    clipped by its global norm, AdamW on the rest, SGD / row-wise Adagrad on every row
    of the tables (untouched rows have a zero gradient), decay on the scored rows."""
    _, sub, _ = jax.random.split(rng, 3)
    grads, ids = grad_ids(params, batch, sub)
    scale = min(1.0, rows.clip_norm / float(optax.tree.norm(grads)))
    grads = jax.tree_util.tree_map(lambda g: g * scale, grads)
    rest, tables = sparse_rows.split_tables(params, rows.tables)
    g_rest, g_tab = sparse_rows.split_tables(grads, rows.tables)
    upd, opt = tx.update(g_rest, opt, rest)
    rest = optax.apply_updates(rest, upd)
    lr = float(rows.lr(step))
    new = {}
    for name, t in tables.items():
        w, b = np.asarray(t["w"], np.float64), np.asarray(t["b"], np.float64)
        gw, gb = np.asarray(g_tab[name]["w"]), np.asarray(g_tab[name]["b"])
        touched = np.zeros(len(b), bool)
        touched[np.asarray(ids[name]).ravel()[np.asarray(ids[name]).ravel() >= 0]] = True
        if rows.update == "rowwise-adagrad":
            acc[name] = acc[name] + (np.sum(gw ** 2, 1) + gb ** 2) / (w.shape[1] + 1)
            s = lr / (np.sqrt(acc[name]) + rows.eps)
        else:
            s = np.full(len(b), lr)
        w = w - s[:, None] * gw - np.where(touched, lr * rows.weight_decay, 0.0)[:, None] * w
        new[name] = {"w": w.astype(np.float32), "b": (b - s * gb).astype(np.float32)}
    return sparse_rows.merge_tables(rest, new), opt, acc, np.asarray(ids["level_3"])


def _gather_in_chunks(monkeypatch) -> list:
    """Shortlists gathered 3 rows at a time (:func:`jxmc.nn.heads.score_shortlist`, batches
    of 8 points, 16 wide); the widths of the gathers made, for the test to check."""
    monkeypatch.setattr(heads, "GATHER_CHUNK_BYTES", 8 * 3 * 16 * 4)
    widths, scores = [], heads._scores

    def spy(w, b, x, ids, dtype=None):
        widths.append((ids.shape[1], dtype is not None))
        return scores(w, b, x, ids, dtype)

    monkeypatch.setattr(heads, "_scores", spy)
    return widths


@pytest.mark.parametrize("update,chunked", [("sgd", False), ("rowwise-adagrad", False),
                                            ("rowwise-adagrad", True)])
def test_sparse_step_equals_the_dense_reference(update, chunked, monkeypatch):
    widths = _gather_in_chunks(monkeypatch) if chunked else []
    tree, arrays, spec, params = _toy()
    perm = jnp.asarray(tree.perm)
    tables = sparse_rows.shortlist_levels(params["heads"])
    assert tables == ("level_2", "level_3")
    rows = _rows(update, tables, tables)
    tx = make_optimizer(lr_encoder=1e-3, lr_heads=1e-2, total_steps=10, warmup_steps=2,
                        clip_norm=None)
    step = make_sparse_train_step(
        lambda p, b, r, d: cascade.row_loss_fn(p, b, r, d, perm, spec=spec, train_levels=LEVELS),
        tx, rows)
    state = init_sparse_state(params, tx, rows, seed=0)
    ref = jax.tree_util.tree_map(np.asarray, params)
    opt = tx.init(sparse_rows.split_tables(ref, tables)[0])
    acc = {k: np.zeros(params["heads"][k]["b"].shape[0]) for k in tables}

    @jax.jit
    def grad_ids(p, b, r):  # the dense gradient, and the rows each level scored
        g = jax.grad(lambda q: cascade.loss_fn(q, b, r, perm, spec=spec,
                                               train_levels=LEVELS)[0])(p)
        scored = cascade.row_loss_fn(p, b, r, None, perm, spec=spec, train_levels=LEVELS)[1][1]
        return g, {k: ids for k, (ids, _) in scored.items()}

    dup = False
    for i, b in enumerate(batches(arrays, 8, epoch=0)):
        ref, opt, acc, ids = _dense_reference(ref, tx, opt, acc, b, state.rng, grad_ids, rows, i)
        live = ids[ids >= 0]
        dup |= len(np.unique(live)) < len(live)  # a row scored by several points
        state, m = step(state, b)
    assert dup and int(state.step) == 3
    assert not chunked or (3, False) in widths  # f32 tables, read in chunks of 3
    got = sparse_params(state.params, rows)
    for (path, a), r in zip(jax.tree_util.tree_leaves_with_path(got),
                            jax.tree_util.tree_leaves(ref), strict=True):
        if "key" in jax.tree_util.keystr(path):
            # attention key biases: a zero gradient up to rounding (softmax is shift
            # invariant), which AdamW turns into +-lr either way; no effect on the output
            continue
        np.testing.assert_allclose(np.asarray(a), r, rtol=2e-4, atol=2e-6)
    if update == "rowwise-adagrad":
        for k in tables:
            np.testing.assert_allclose(np.asarray(state.opt_state[1][k]["acc"]), acc[k],
                                       rtol=2e-4, atol=1e-9)
    moved = np.abs(np.asarray(got["heads"]["level_3"]["w"])
                   - np.asarray(params["heads"]["level_3"]["w"])).max()
    assert moved > 1e-4  # the check compares steps that did something


def test_row_coefficients_sum_duplicates_and_drop_padding():
    ids = jnp.array([[3, -1, 5], [5, 3, -1]], jnp.int32)
    gs = jnp.arange(6, dtype=jnp.float32).reshape(2, 3) + 1  # [[1, 2, 3], [4, 5, 6]]
    x = jnp.array([[1.0, 2.0], [10.0, 20.0]])
    rows, coef, gb = sparse_rows.row_coefficients(ids, gs)
    gw = coef @ x
    got = {int(r): (np.asarray(gw[i]), float(gb[i])) for i, r in enumerate(rows) if r >= 0}
    assert set(got) == {3, 5}
    # row 3: point 0 with gs 1, point 1 with gs 5; row 5: point 0 with 3, point 1 with 4
    np.testing.assert_allclose(got[3][0], 1 * x[0] + 5 * x[1])
    np.testing.assert_allclose(got[5][0], 3 * x[0] + 4 * x[1])
    assert got[3][1] == 1 + 5 and got[5][1] == 3 + 4
    assert float(jnp.abs(coef[rows < 0]).sum()) == 0.0 and float(jnp.abs(gb[rows < 0]).sum()) == 0
    np.testing.assert_allclose(np.asarray(sparse_rows.row_sq_norms(coef, x)),
                               np.sum(np.asarray(gw) ** 2, 1), rtol=1e-6)


def test_chunked_row_updates_equal_one_update(monkeypatch):
    """More distinct rows than ``ROW_CHUNK``: the chunked loop gives the single update."""
    import jxmc.train.sparse_step as ss

    rng = np.random.default_rng(0)
    K, h, n, c = 50, 4, 3, 10
    ids = jnp.asarray(rng.integers(-1, K, (n, c)), jnp.int32)
    gs = jnp.asarray(rng.normal(size=(n, c)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(n, h)), jnp.float32)
    table = {"w": sparse_rows.as_bits({"heads": {"t": {"w": jnp.asarray(
        rng.normal(size=(K, h)), jnp.float32)}}}, ("t",))["heads"]["t"]["w"],
        "b": jnp.zeros(K, jnp.float32)}
    grads = sparse_rows.row_segments(ids, gs)
    spec = RowUpdate("rowwise-adagrad", ("t",), ("t",), lambda s: 0.1, 0.01)
    state = {"acc": jnp.zeros(K, jnp.float32)}
    key = jax.random.PRNGKey(0)
    one = ss._update_in_chunks(table, state, grads, x, 0.5, 0.1, key, spec)
    sq_one = float(ss._sq_norm(grads, x))
    monkeypatch.setattr(ss, "ROW_CHUNK", 7)  # 30 slots: 5 chunks, the last padded
    many = ss._update_in_chunks(table, state, grads, x, 0.5, 0.1, key, spec)
    # the squared norm of all rows' gradients, a chunk at a time and at once
    _, coef, _ = sparse_rows.row_coefficients(ids, gs)
    want = float(np.sum((np.asarray(coef, np.float64) @ np.asarray(x, np.float64)) ** 2))
    np.testing.assert_allclose([sq_one, float(ss._sq_norm(grads, x))], [want, want], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(many),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                   rtol=1e-6)
    assert float(jnp.abs(many[1]["acc"]).max()) > 0


def _big_cascade(update, dtype):
    """A cascade whose leaf table (``2^17 x 64``) dwarfs everything else."""
    bert = BertConfig(vocab_size=32, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=8)
    branching = (64, 64, 32)
    sizes = np.cumprod(branching)
    spec = cascade.Spec(BertEncoder(bert), branching, ((0,), (0,), (0,)), beam=4)
    enc = jax.eval_shape(lambda: init_params(bert, jax.random.PRNGKey(0)))
    f32 = jnp.float32
    heads = {f"level_{t}": {"w": jax.ShapeDtypeStruct((int(K), 64), f32),
                            "b": jax.ShapeDtypeStruct((int(K),), f32)}
             for t, K in enumerate(sizes, 1)}
    config = common.TextConfig(max_len=8, head_update=update, head_dtype=dtype)
    return plan.compile_train_step({"encoder": enc, "heads": heads}, spec,
                                     jax.ShapeDtypeStruct((int(sizes[-1]),), jnp.int32), config,
                                     batch_size=8, positives=(2, 2, 2)), int(sizes[-1])


def _buffers(hlo: str) -> str:
    """The instructions of the computations that are not fusion bodies (what holds a
    buffer; inside a fusion a ``convert`` of the table feeding a gather is never stored)."""
    blocks = re.split(r"\n(?=\S)", hlo)
    return "\n".join(b for b in blocks if not re.match(r"%(fused|wrapped)_\w*computation", b))


def test_the_sparse_step_has_no_dense_table_gradient():
    dense_bytes = 2 ** 17 * 64 * 4  # the leaf table in f32: 32 MiB
    buffer = re.compile(r"f32\[131072,64\]")
    sparse, K = _big_cascade("rowwise-adagrad", "bfloat16")
    assert K == 2 ** 17
    temp = sparse.memory_analysis().temp_size_in_bytes
    assert temp < dense_bytes / 4, temp  # ~5 MiB: the n x c x h shortlist rows
    text = _buffers(sparse.as_text())
    assert "ENTRY" in text and not buffer.search(text)
    assert re.search(r"u16\[131072,64\]\S* parameter", text)  # the bf16 table's bits, donated
    adam, _ = _big_cascade("adam", "float32")  # the check can fail: the dense path has one
    assert adam.memory_analysis().temp_size_in_bytes >= dense_bytes
    assert buffer.search(_buffers(adam.as_text()))


@pytest.mark.parametrize("dtype,chunked", [("bfloat16", False), ("float8_e4m3fn", False),
                                          ("bfloat16", True)])
def test_low_precision_tables_keep_their_dtype_and_frozen_levels_do_not_move(dtype, chunked,
                                                                             monkeypatch):
    widths = _gather_in_chunks(monkeypatch) if chunked else []
    tree, arrays, spec, params = _toy()
    perm = jnp.asarray(tree.perm)
    tables = sparse_rows.shortlist_levels(params["heads"])
    params = sparse_rows.cast_tables(params, tables, dtype)
    rows = _rows("rowwise-adagrad", tables, ("level_3",), lr=0.05, dtype=dtype)  # level_2 frozen
    tx = make_optimizer(lr_encoder=1e-3, lr_heads=1e-2, total_steps=10, warmup_steps=2,
                        clip_norm=None, frozen_heads=("level_1", "level_2"))
    step = make_sparse_train_step(
        lambda p, b, r, d: cascade.row_loss_fn(p, b, r, d, perm, spec=spec, train_levels=(3,)),
        tx, rows)
    state = init_sparse_state(params, tx, rows, seed=0)
    for epoch in range(2):
        for b in batches(arrays, 8, epoch=epoch):
            state, _ = step(state, b)
    bits = state.params["heads"]["level_3"]["w"].dtype  # the state holds the bit patterns
    assert bits == (jnp.uint16 if dtype == "bfloat16" else jnp.uint8)
    heads = sparse_params(state.params, rows)["heads"]
    assert heads["level_3"]["w"].dtype == jnp.dtype(dtype) == heads["level_2"]["w"].dtype
    assert heads["level_3"]["b"].dtype == jnp.float32
    for k in ("level_1", "level_2"):
        for key in ("w", "b"):
            np.testing.assert_array_equal(np.asarray(heads[k][key]),
                                          np.asarray(params["heads"][k][key]))
    assert not np.array_equal(np.asarray(heads["level_3"]["w"]),
                              np.asarray(params["heads"]["level_3"]["w"]))
    assert float(jnp.abs(state.opt_state[1]["level_2"]["acc"]).sum()) == 0.0
    assert not chunked or (3, True) in widths  # read from the bits in chunks of 3
    assert float(state.opt_state[1]["level_3"]["acc"].max()) > 0.0


def test_head_options_are_checked():
    bad = [dict(head_update="adagrad"), dict(head_dtype="float16"),
           dict(head_dtype="bfloat16")]  # adam keeps f32 tables
    for over in bad:
        with pytest.raises(ConfigError):
            plan.head_options(common.TextConfig(**over))
    with pytest.raises(ConfigError):
        plan.head_options(common.TextConfig(head_update="sgd"), mesh=object())
    assert plan.head_options(common.TextConfig(head_update="sgd", head_dtype="bfloat16")) == (
        "sgd", "bfloat16")


SMALL = dict(pretrained=False, epochs=2, max_len=12, batch_size=16, max_leaf_size=4,
             nr_splits=2, lr_encoder=1e-3, predict_batch_size=32, beam_size=2,
             head_update="rowwise-adagrad", head_dtype="bfloat16", lr_rows=0.05)


@pytest.fixture(scope="module")
def toy_text(tmp_path_factory):
    from jxmc.nn.testing import tiny_encoder_dir, toy_texts

    folder = tiny_encoder_dir(str(tmp_path_factory.mktemp("enc")), words=32, layers=2,
                              hidden=32, max_len=16)
    texts, X, Y = toy_texts(48, 12, words=32, seed=0)
    return folder, texts, X, Y


def test_cascadexml_with_sparse_bf16_heads_resumes_and_predicts(toy_text, tmp_path):
    from jxmc.checkpoint import TrainCheckpoints
    from jxmc.models.transformer import cascadexml

    folder, texts, X, Y = toy_text
    config = cascadexml.Config(encoder=folder, **SMALL)
    full = cascadexml.fit(X, Y, config, seed=3, texts=texts, progress=False)
    heads = full["heads"]
    assert heads["level_1"]["w"].dtype == np.float32  # level 1: AdamW, f32
    assert all(heads[k]["w"].dtype == jnp.bfloat16 for k in heads if k != "level_1")

    class Interrupt(TrainCheckpoints):
        def save(self, step, state):
            super().save(step, state)
            if step == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cascadexml.fit(X, Y, config, seed=3, texts=texts, ckpt=Interrupt(tmp_path / "c"),
                       progress=False)
    resumed = cascadexml.fit(X, Y, config, seed=3, texts=texts,
                             ckpt=TrainCheckpoints(tmp_path / "c"), progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=1e-5, atol=1e-6)
    top = cascadexml.predict(full, X[:5], config, k=3, texts=texts[:5])
    assert top.ids.shape == (5, 3) and (top.ids[:, 0] >= 0).all()


def test_xr_transformer_phases_keep_frozen_bf16_tables(toy_text):
    from jxmc.models.transformer import xr_transformer

    folder, texts, X, Y = toy_text
    config = xr_transformer.Config(encoder=folder, **{**SMALL, "epochs": 1, "levels": 3})
    _, net = xr_transformer.fit_with_network(X, Y, config, seed=0, texts=texts,
                                             progress=False)
    heads = net.params["heads"]
    assert len(heads) == 3
    assert heads["level_2"]["w"].dtype == heads["level_3"]["w"].dtype == jnp.bfloat16
    top = common.network_predict(xr_transformer.make_spec)(
        common.prepare_network(common.saved_params(net), config), None, config, k=2,
        texts=texts[:4])
    assert top.ids.shape == (4, 2)
