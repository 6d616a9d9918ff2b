from __future__ import annotations

import json

import numpy as np
import pytest

from jxmc import modeldir
from jxmc.data.tfidf import Featurizer, fit_tfidf
from jxmc.errors import ModelError
from jxmc.models.base import config_from_dict, config_to_dict, parse_overrides
from jxmc.models.ovr import Config

TEXTS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "red mat, red log",
         "the red dog sat"]


def test_tfidf_settings_and_round_trip(tmp_path):
    featurizer, X = fit_tfidf(TEXTS)
    terms = featurizer.terms
    assert "the cat" not in terms and "sat on" in terms  # bigrams with min_df=2
    np.testing.assert_allclose(np.sqrt(X.multiply(X).sum(1)).A.ravel(), 1.0, rtol=1e-6)
    featurizer.save(tmp_path)
    loaded = Featurizer.load(tmp_path)
    new = ["a red cat sat on the log", "unknown words only"]
    assert abs(loaded.transform(new) - featurizer.transform(new)).max() == 0
    assert loaded.transform(new)[1].nnz == 0


def test_tfidf_load_errors(tmp_path):
    with pytest.raises(ModelError, match="cannot read the TF-IDF"):
        Featurizer.load(tmp_path)


def _save(path, **kw):
    args = dict(method="ovr", config={"epochs": 1}, seed=0, data={"name": "x", "n_features": 3,
                "n_labels": 2}, params={"w": np.ones((3, 2), np.float32)}, label_names=["a", "b"],
                featurizer=None)
    args.update(kw)
    modeldir.save(str(path), **args)


def test_model_dir_round_trip_and_version_check(tmp_path):
    _save(tmp_path / "m")
    model = modeldir.load(str(tmp_path / "m"))
    assert model.method == "ovr" and model.label_names == ["a", "b"]
    np.testing.assert_array_equal(model.params["w"], np.ones((3, 2)))
    manifest = tmp_path / "m" / modeldir.MANIFEST
    info = json.loads(manifest.read_text())
    info["model_format"] = 999
    info["jxmc_version"] = "9.9"
    manifest.write_text(json.dumps(info))
    with pytest.raises(ModelError, match=r"jxmc 9.9 in model format 999.*retrain"):
        modeldir.load(str(tmp_path / "m"))


def test_unfinished_model_dir_is_not_a_model(tmp_path):
    (tmp_path / "m" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ModelError, match="no finished jxmc model"):
        modeldir.load(str(tmp_path / "m"))
    with pytest.raises(ModelError, match="not found"):
        modeldir.load(str(tmp_path / "absent"))


def test_config_overrides_are_typed():
    c = parse_overrides(Config, ["epochs=7", "learning_rate=0.5", "loss=bce"])
    assert (c.epochs, c.learning_rate, c.loss) == (7, 0.5, "bce")
    assert config_from_dict(Config, config_to_dict(c)) == c
    from jxmc.errors import ConfigError
    for bad in (["epochs=seven"], ["nope=1"], ["epochs"]):
        with pytest.raises(ConfigError):
            parse_overrides(Config, bad)


def test_tfidf_transform_matches_scikit_learn_on_real_text():
    """jxmc's own transform (no scikit-learn at prediction) against scikit-learn's
    ``TfidfVectorizer.transform`` with the same vocabulary and IDF, on debtags texts."""
    import lzma

    from conftest import shared_dataset

    from jxmc.data.tfidf import vectorizer

    root = shared_dataset("debtags")
    with lzma.open(root / "train_texts.txt.xz", "rt", encoding="utf-8") as f:
        texts = [next(f) for _ in range(1500)]
    featurizer, X = fit_tfidf(texts[:1000])
    new = texts[1000:] + ["", "ÉCOLE école Straße ß x y", "aa aa aa aa bb", "12 34 56 12 34"]
    vec = vectorizer(featurizer.config, vocabulary=featurizer.vocabulary)
    vec._validate_vocabulary()
    vec.idf_ = featurizer.idf
    want = vec.transform(new).tocsr()
    got = featurizer.transform(new)
    assert got.dtype == np.float32 and got.shape == want.shape and got.has_sorted_indices
    want.sort_indices()
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=2e-6, atol=1e-7)
    assert got[len(texts) - 1000].nnz == 0  # the empty text
    # the training rows too: the fitted matrix and the transform of the same texts agree
    np.testing.assert_allclose(featurizer.transform(texts[:50]).toarray(), X[:50].toarray(),
                               rtol=2e-6, atol=1e-7)


def test_loading_and_applying_a_featuriser_does_not_import_scikit_learn(tmp_path):
    """``jxmc predict``'s path (the CLI's modules, a model directory with a TF-IDF
    featuriser, its transform) leaves scikit-learn unimported (issue 17: 0.7 s)."""
    import subprocess
    import sys

    featurizer, _ = fit_tfidf(TEXTS)
    _save(tmp_path / "m", featurizer=featurizer, data={"name": "x",
          "n_features": featurizer.n_features, "n_labels": 2})
    code = ("import sys; import jxmc.cli, jxmc.commands, jxmc.predictor; from jxmc import modeldir; "
            f"m = modeldir.load({str(tmp_path / 'm')!r}); X = m.featurizer.transform(['red cat']); "
            "assert X.nnz > 0; print(sorted(k for k in sys.modules if k.split('.')[0] == 'sklearn'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
