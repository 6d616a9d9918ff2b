"""orbax checkpoints saved on one mesh restore onto another: a process with 8 fake
devices saves a tree laid out on ``data=2,model=4``; a process with 4 devices
restores it onto ``model=4``, ``data=2,model=2`` and one device, saves the
4-device layout and restores that onto one device (8 -> 4, 8 -> 1, 4 -> 1)."""

from __future__ import annotations

import json

import numpy as np
from test_sharding import run_worker


def test_save_on_8_devices_restore_on_4_and_1(tmp_path):
    ckpt = tmp_path / "ckpt" / "from8"
    run_worker("ckpt-save", str(tmp_path), "--devices", "8", "--ckpt", str(ckpt))
    saved = json.loads((tmp_path / "save.json").read_text())
    assert saved == {"devices": 8, "spec": "P('model',)"}
    run_worker("ckpt-restore", str(tmp_path), "--devices", "4", "--ckpt", str(ckpt))
    info = json.loads((tmp_path / "restore.json").read_text())
    r = np.load(tmp_path / "restore.npz")
    src = np.load(tmp_path / "source.npz")
    assert info["devices"] == 4
    # the level_2 table (64 rows) lands split as each target mesh asks
    assert info["8to4"]["shard_shapes"] == [[16, 6]] and len(info["8to4"]["devices"]) == 4
    assert info["8to2x2"]["shard_shapes"] == [[32, 6]] and info["8to2x2"]["mesh"] == {
        "data": 2, "model": 2}
    assert info["8to1"]["shard_shapes"] == [[64, 6]] and info["8to1"]["devices"] == [0]
    assert info["4to1"]["shard_shapes"] == [[64, 6]]
    assert len(src.files) == 6
    for name in ("8to4", "8to2x2", "8to1", "4to1"):
        for key in src.files:
            np.testing.assert_array_equal(r[f"{name}/{key}"], src[key], err_msg=f"{name} {key}")
