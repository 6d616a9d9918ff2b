"""cascadexml, lightxml and xr-transformer end to end on a tiny random encoder,
and resume after an interrupted run."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jxmc.checkpoint import TrainCheckpoints
from jxmc.errors import ConfigError
from jxmc.models import cascadexml, lightxml, xr_transformer
from jxmc.nn.testing import tiny_encoder_dir, toy_texts

SMALL = dict(pretrained=False, epochs=1, max_len=12, batch_size=16, max_leaf_size=4,
             nr_splits=2, lr_encoder=1e-3, predict_batch_size=32, beam_size=2)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tiny_encoder_dir(str(tmp_path_factory.mktemp("enc")), words=32, layers=2,
                              hidden=32, max_len=16)
    texts, X, Y = toy_texts(48, 12, words=32, seed=0)
    return folder, texts, X, Y


@pytest.mark.parametrize("module", [cascadexml, lightxml, xr_transformer])
def test_fit_predict(module, toy):
    folder, texts, X, Y = toy
    extra = {"levels": 2} if module is xr_transformer else {}
    config = module.Config(encoder=folder, **SMALL, **extra)
    params = module.fit(X, Y, config, seed=0, texts=texts, progress=False)
    leaves = jax.tree_util.tree_leaves(params)
    assert all(isinstance(a, np.ndarray) for a in leaves)
    top = module.predict(params, X[:5], config, k=4, texts=texts[:5])
    assert top.ids.shape == top.scores.shape == (5, 4)
    ok = top.ids >= 0
    assert ok[:, 0].all() and top.ids.max() < Y.shape[1]
    assert np.all(np.diff(np.where(ok, top.scores, -np.inf), axis=1) <= 1e-6)
    for row in top.ids:
        assert len(set(row[row >= 0])) == (row >= 0).sum()
    with pytest.raises(ConfigError):
        module.fit(X, Y, config, texts=None)


class _Interrupt(TrainCheckpoints):
    """Stops training right after saving ``stop_at``."""

    stop_at = 1

    def save(self, step, state):
        super().save(step, state)
        if step == self.stop_at:
            raise KeyboardInterrupt


def test_resume_continues_from_saved_step(toy, tmp_path, capsys):
    folder, texts, X, Y = toy
    config = cascadexml.Config(encoder=folder, **{**SMALL, "epochs": 2, "dropout": 0.2})
    full = cascadexml.fit(X, Y, config, seed=3, texts=texts, progress=False)
    ckpt = _Interrupt(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        cascadexml.fit(X, Y, config, seed=3, texts=texts, ckpt=ckpt, progress=False)
    assert ckpt.latest_step() == 1
    again = TrainCheckpoints(tmp_path / "ckpt")
    resumed = cascadexml.fit(X, Y, config, seed=3, texts=texts, ckpt=again, progress=True)
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert again.latest_step() == 2
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_configs_have_cli_fields():
    for module in (cascadexml, lightxml, xr_transformer):
        names = {f.name for f in dataclasses.fields(module.Config)}
        assert {"encoder", "epochs", "max_len", "batch_size"} <= names
