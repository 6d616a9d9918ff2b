"""cascadexml, lightxml and xr-transformer end to end on a tiny random encoder,
and resume after an interrupted run."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jxmc.checkpoint import TrainCheckpoints
from jxmc.errors import ConfigError
from jxmc.models.transformer import cascadexml, lightxml, xr_transformer
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


def test_cli_train_then_predict_a_plain_text_file(tmp_path, capsys):
    from jxmc.cli import main
    from jxmc.data.text import write_text_labels, write_texts

    enc = tiny_encoder_dir(str(tmp_path / "enc"), words=32, layers=2, hidden=32, max_len=16,
                           weights=True)
    data = tmp_path / "data"
    data.mkdir()
    for split, n, seed in (("train", 64, 0), ("test", 16, 1)):
        texts, _, Y = toy_texts(n, 12, words=32, seed=seed)
        write_texts(data / f"{split}_texts.txt", texts)
        write_text_labels(data / f"{split}_labels.txt",
                          [[f"tag{j}" for j in Y[i].indices] for i in range(n)])
    model = str(tmp_path / "model")
    argv = ["train", "--data", str(data), "--method", "lightxml", "--encoder", enc,
            "--epochs", "1", "--max-len", "12", "--batch-size", "16", "--model-dir", model,
            "--set", "max_leaf_size=4", "--set", "nr_splits=2", "--set", "beam_size=2",
            "--set", "lr_encoder=1e-3", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr()
    # the per-epoch summary, kept without the progress bar (what an experiment's log reads)
    assert "lightxml: epoch 1/1 loss" in out.out and "seq/s" in out.out
    assert "P " in out.out and "test (16 points), lightxml" in out.out
    docs = tmp_path / "new_docs.txt"
    docs.write_text("w1 w1 w5 w7\nw3 w3 w2\nw9 w9 w10 w11 w4\n", encoding="utf-8")
    pred = tmp_path / "pred.txt"
    assert main(["predict", "--data", str(docs), "--model-dir", model, "--top-k", "3",
                 "--out", str(pred)]) == 0
    lines = pred.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    for line in lines:
        pairs = [p.rsplit(":", 1) for p in line.split()]
        assert 1 <= len(pairs) <= 3 and all(name.startswith("tag") for name, _ in pairs)
        scores = [float(s) for _, s in pairs]
        assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert main(argv) == 0  # the same command again finds the trained model
    assert "already holds this trained model" in capsys.readouterr().err


def test_experiment_configs_state_a_valid_command_and_an_estimate():
    import importlib.util
    import pathlib
    import shlex

    from jxmc.cli import _parser
    from jxmc.commands import _flag_overrides
    from jxmc.models import get_method
    from jxmc.models.base import parse_overrides

    folder = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
    paths = sorted(folder.glob("*.py"))
    assert {p.stem for p in paths} >= {f"{m}_{d}" for m in ("cascadexml", "lightxml",
                                                            "xr_transformer")
                                       for d in ("debtags", "debian_deps")}
    for path in paths:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        doc = mod.__doc__
        assert "Expected runtime (ESTIMATE" in doc, path
        line = next(x.strip() for x in doc.splitlines() if x.strip().startswith("jxmc train"))
        assert line.startswith(mod.command(mod.get_config()) + " --model-dir "), path
        args = _parser().parse_args(shlex.split(line)[1:])
        method = get_method(args.method)
        config = parse_overrides(method.Config, _flag_overrides(args) + args.overrides)
        assert config.max_len == 128 and config.epochs >= 3, path
        smoke = mod.get_config("smoke")
        assert smoke["epochs"] == 1 and smoke["max_len"] < 128
