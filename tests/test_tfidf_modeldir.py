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
    terms = featurizer.vectorizer.get_feature_names_out().tolist()
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
