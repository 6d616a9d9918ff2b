"""The method contract (:mod:`jxmc.models.base`), checked on every entry of ``METHODS``.

Each method, at a tiny setting, is fitted with checkpoints, saved and loaded
through the model directory, and predicts through ``prepare``: shapes, ``-1`` /
``-inf`` padding, scores sorted, no label twice; an interrupted fit resumed from
its checkpoint ends where an uninterrupted one does; every ``predict_fields``
entry can be changed at prediction (as ``jxmc predict --set`` does) and no other
field can.  Adding a method is one module, one line in ``METHODS``, one line in
:data:`TINY` below, and this test passing; a method that breaks the contract
fails it (:func:`test_a_method_that_breaks_the_contract_fails_it`).
"""

from __future__ import annotations

import dataclasses
import typing

import jax
import numpy as np
import pytest

from jxmc import modeldir
from jxmc.checkpoint import TrainCheckpoints
from jxmc.errors import ConfigError
from jxmc.models import METHODS, get_method
from jxmc.models.base import Prepared, method, parse_overrides, with_predict_fields
from jxmc.nn.testing import tiny_encoder_dir, toy_texts
from jxmc.types import TopK

N, N_LABELS, WORDS = 48, 12, 32
_TEXT = ["pretrained=false", "epochs=2", "max_len=12", "batch_size=16", "max_leaf_size=4",
         "nr_splits=2", "lr_encoder=1e-3", "predict_batch_size=32", "beam_size=2"]

# A setting of each method that fits the toy data in seconds (``--set`` pairs;
# ``{encoder}`` is a tiny random BERT folder).
TINY: dict[str, list[str]] = {
    "ovr": ["epochs=2", "batch_size=16"],
    "xr-linear": ["nr_splits=2", "max_leaf_size=4"],
    "plst": ["rank=4"],
    "cplst": ["rank=4"],
    "leml": ["rank=4", "iters=3"],
    "cs": ["m=8", "sparsity=3"],
    "parabel": ["max_leaf_size=4", "n_trees=2"],
    "bonsai": ["max_leaf_size=4", "nr_splits=4", "n_trees=2"],
    "cascadexml": ["encoder={encoder}", *_TEXT],
    "xr-transformer": ["encoder={encoder}", *_TEXT, "levels=2"],
    "x-transformer": ["encoder={encoder}", *_TEXT],
    "lightxml": ["encoder={encoder}", *_TEXT],
    "elmo": ["encoder={encoder}", "pretrained=false", "epochs=2", "max_len=12", "batch_size=16",
             "lr_encoder=1e-3", "predict_batch_size=32", "chunk=4", "predict_chunk=8"],
    "attentionxml": ["epochs=2", "max_len=12", "batch_size=16", "emb_dim=16", "hidden=8",
                     "linear=16", "nr_splits=4", "candidates=2", "beam_size=2",
                     "predict_batch_size=32"],
}

# Another valid value for a string-typed predict field (numbers are doubled, flags flipped).
OTHER_VALUE = {"transform": {"l3-hinge": "l2-hinge", "l2-hinge": "l3-hinge"}}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    encoder = tiny_encoder_dir(str(tmp_path_factory.mktemp("enc")), words=WORDS, layers=2,
                               hidden=32, max_len=16)
    texts, X, Y = toy_texts(N, N_LABELS, words=WORDS, seed=0)
    return encoder, texts, X, Y


class _Interrupt(TrainCheckpoints):
    """Checkpoints that stop the run (as a kill would) right after the first save."""

    def save(self, step, state):
        super().save(step, state)
        raise KeyboardInterrupt


def _config(m, encoder):
    return parse_overrides(m.Config, [p.format(encoder=encoder) for p in TINY[m.name]])


def _changed(m, config, field: str):
    """``config`` with a different valid value of ``field``."""
    value = getattr(config, field)
    hint = str(typing.get_type_hints(m.Config)[field])
    if "bool" in hint:
        new = not value
    elif "int" in hint or "float" in hint:
        new = 2 * value if value else 1
    else:
        assert field in OTHER_VALUE, f"{m.name}: add another value of {field!r} to OTHER_VALUE"
        new = OTHER_VALUE[field][value]
    return dataclasses.replace(config, **{field: new})


def check_topk(top: TopK, n: int, k: int, n_labels: int) -> None:
    """The prediction contract: shapes, padding, order, no label twice."""
    ids, scores = np.asarray(top.ids), np.asarray(top.scores)
    assert ids.shape == scores.shape == (n, k), f"shape {ids.shape}, want {(n, k)}"
    assert ids.dtype == np.int32 and scores.dtype == np.float32
    assert ((ids >= -1) & (ids < n_labels)).all(), "ids outside [-1, L)"
    pad = ids < 0
    assert (scores[pad] == -np.inf).all(), "padding (-1) must score -inf"
    assert np.isfinite(scores[~pad]).all(), "a real label scores +-inf or nan"
    assert (~pad[:, 0]).all(), "a point with no label at all"
    later = scores[:, 1:]
    assert ((later <= scores[:, :-1]) | np.isneginf(later)).all(), \
        "scores not sorted in decreasing order"
    for row in ids:
        assert len(set(row[row >= 0].tolist())) == (row >= 0).sum(), "a label twice in a row"


def check_method(m, toy, tmp_path) -> None:
    """Runs ``m`` through the contract; AssertionError (or the method's error) if it breaks it."""
    encoder, texts, X, Y = toy
    config = _config(m, encoder)
    t = texts if m.needs_texts else None
    # fit, checkpointed
    full = m.fit(X, Y, config, seed=1, ckpt=TrainCheckpoints(tmp_path / "full"), progress=False,
                 texts=t)
    leaves = jax.tree_util.tree_leaves(full)
    assert leaves and all(isinstance(a, np.ndarray) for a in leaves), "params: numpy leaves"
    # save and load through the model directory
    counts = np.asarray(Y.sum(0)).ravel().astype(np.int64)
    modeldir.save(str(tmp_path / "model"), method=m.name, config=dataclasses.asdict(config),
                  seed=1, data={"name": "toy"}, params=full, label_counts=counts,
                  label_names=None, featurizer=None)
    saved = modeldir.load(str(tmp_path / "model"))
    np.testing.assert_array_equal(saved.label_counts, counts)
    for a, b in zip(leaves, jax.tree_util.tree_leaves(saved.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # predict through prepare; k beyond L shows the padding
    model = m.prepare(saved.params, config)
    assert isinstance(model, Prepared)
    k = N_LABELS + 3
    top = m.predict(model, X[:7], config, k=k, texts=texts[:7] if t else None)
    check_topk(top, 7, k, N_LABELS)
    # an interrupted fit, resumed, ends where the full one does
    try:  # a method that trains in one step never saves, and simply finishes
        m.fit(X, Y, config, seed=1, ckpt=_Interrupt(tmp_path / "cut"), progress=False, texts=t)
    except KeyboardInterrupt:
        pass
    resumed = m.fit(X, Y, config, seed=1, ckpt=TrainCheckpoints(tmp_path / "cut"), progress=False,
                    texts=t)
    for a, b in zip(leaves, jax.tree_util.tree_leaves(resumed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # each predict field may change at prediction, as `predict --set` changes it
    for field in m.predict_fields:
        other = _changed(m, config, field)
        again = with_predict_fields(m.Config, config, [f"{field}={getattr(other, field)}"],
                                    m.predict_fields, m.name)
        assert again == other
        check_topk(m.predict(m.prepare(saved.params, other), X[:7], other, k=5,
                             texts=texts[:7] if t else None), 7, 5, N_LABELS)
    # ... and no other field can
    fixed = [f.name for f in dataclasses.fields(m.Config) if f.name not in m.predict_fields]
    if fixed:
        with pytest.raises(ConfigError):
            with_predict_fields(m.Config, config, [f"{fixed[0]}={getattr(config, fixed[0])}"],
                                m.predict_fields, m.name)


@pytest.mark.parametrize("name", list(METHODS))
def test_method_keeps_the_contract(name, toy, tmp_path):
    assert name in TINY, f"add a tiny setting of {name} to TINY"
    check_method(get_method(name), toy, tmp_path)


def test_texts_a_method_cannot_use_or_lacks_are_refused(toy):
    _, texts, X, Y = toy
    for name in METHODS:
        m = get_method(name)
        with pytest.raises(ConfigError):
            m.fit(X, Y, m.Config(), texts=None if m.needs_texts else texts, progress=False)


def test_a_method_that_breaks_the_contract_fails_it(toy, tmp_path):
    good = get_method("plst")

    def unsorted_predict(model, X, config, *, k):  # the best two labels swapped
        top = good.predict(model, X, config, k=k)
        order = [1, 0, *range(2, k)]
        return TopK(top.ids[:, order], top.scores[:, order])

    bad = method("bad", good.Config, fit=lambda X, Y, c, **kw: good.fit(X, Y, c),
                 predict=unsorted_predict)
    TINY["bad"] = TINY["plst"]
    try:
        with pytest.raises(AssertionError, match="sorted"):
            check_method(bad, toy, tmp_path)
    finally:
        del TINY["bad"]
