"""The transformer methods (cascadexml, lightxml, xr-transformer) on a
``data=2,model=2`` mesh: label tables split on ``model`` in training and
prediction, the same model and predictions as on one device, and a finished
checkpoint restored back into the mesh layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_sharding import run_worker

METHODS = ("cascadexml", "lightxml", "xr-transformer")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    run_worker("text", str(out), "--devices", "4", "--mesh", "data=2,model=2", timeout=900)
    return np.load(out / "text.npz"), json.loads((out / "text.json").read_text())


@pytest.mark.parametrize("name", METHODS)
def test_mesh_training_and_prediction_match_one_device(run, name):
    r, info = run
    # every sharded step saw the label tables split on model and the rest replicated
    layouts = info[name]["layouts"]
    assert len(layouts) >= 2  # at least one train and one predict step
    for lay in layouts:
        tables = {k: v for k, v in lay.items() if k.split("/")[-1] in ("w", "b")}
        assert tables and set(tables.values()) == {"P('model',)"}, lay
        assert all(v == "P()" for k, v in lay.items() if k not in tables), lay
    np.testing.assert_array_equal(r[f"{name}/mesh/ids"], r[f"{name}/one/ids"])
    np.testing.assert_allclose(r[f"{name}/mesh/scores"], r[f"{name}/one/scores"], rtol=1e-4,
                               atol=1e-6)
    keys = [k for k in r.files if k.startswith(f"{name}/one/params/")]
    assert len(keys) > 20
    for key in keys:
        mesh, again = key.replace("/one/", "/mesh/"), key.replace("/one/", "/resumed/")
        np.testing.assert_allclose(r[mesh], r[key], rtol=1e-3, atol=2e-4, err_msg=key)
        np.testing.assert_array_equal(r[again], r[mesh], err_msg=key)
