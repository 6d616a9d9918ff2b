"""Checkpoints are bound to what they train: a resume of another run is refused."""

from __future__ import annotations

import numpy as np
import pytest

from jxmc.checkpoint import TrainCheckpoints
from jxmc.cli import main
from jxmc.errors import ConfigError

RUN = {"method": "ovr", "config": {"epochs": 2}, "seed": 0, "data_digest": "ab"}


def test_resume_of_the_same_run_is_allowed_and_of_another_refused(tmp_path):
    c = TrainCheckpoints(tmp_path / "c", fingerprint=RUN)
    c.save(1, {"w": np.ones(3, np.float32)})
    again = TrainCheckpoints(tmp_path / "c", fingerprint=dict(RUN))
    assert again.latest_step() == 1
    for key, value in (("seed", 1), ("config", {"epochs": 3}), ("data_digest", "cd")):
        with pytest.raises(ConfigError, match=f"differs in {key}"):
            TrainCheckpoints(tmp_path / "c", fingerprint={**RUN, key: value})


def test_a_run_that_saved_nothing_may_be_restarted_differently(tmp_path):
    TrainCheckpoints(tmp_path / "c", fingerprint=RUN)
    other = TrainCheckpoints(tmp_path / "c", fingerprint={**RUN, "seed": 5})
    assert other.latest_step() is None


def test_cli_refuses_to_resume_with_another_seed(tmp_path, capsys):
    data = "synthetic:n_train=200,n_test=50,n_labels=16,n_features=100,branching=4"
    model = tmp_path / "m"

    class Stop(Exception):
        pass

    original = TrainCheckpoints.save

    def save_then_stop(self, step, state):
        original(self, step, state)
        raise Stop

    TrainCheckpoints.save = save_then_stop
    try:
        with pytest.raises(Stop):
            main(["train", "--data", data, "--model-dir", str(model), "--method", "ovr",
                  "--no-progress"])
    finally:
        TrainCheckpoints.save = original
    capsys.readouterr()
    assert main(["train", "--data", data, "--model-dir", str(model), "--method", "ovr",
                 "--no-progress", "--seed", "1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith("jxmc: error:") and "differs in seed" in err[0], err
    assert main(["train", "--data", data, "--model-dir", str(model), "--method", "ovr",
                 "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().err
