"""Compute measured in training (:mod:`jxmc.train.compute`, :func:`jxmc.train.loop.run_epochs`):
XLA's FLOPs of the compiled step, the measured peak, and the epoch line that reports them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxmc.train import compute
from jxmc.train.loop import run_epochs


def _matmul_step(m=64, k=128, n=32):
    @jax.jit
    def step(state, batch):
        y = batch["x"] @ state  # [m, k] @ [k, n]
        return state, {"loss": jnp.sum(y)}

    return step, jnp.ones((k, n)), {"x": np.ones((m, k), np.float32)}


def test_step_flops_counts_the_compiled_matmul():
    step, state, batch = _matmul_step(64, 128, 32)
    step(state, batch)
    flops = compute.step_flops(step, state, batch)
    # one [64, 128] x [128, 32] product (2 m k n) plus the sum (m n, XLA may count it)
    assert 2 * 64 * 128 * 32 <= flops <= 2 * 64 * 128 * 32 + 2 * 64 * 32


def test_step_flops_of_a_plain_function_is_none():
    assert compute.step_flops(lambda s, b: (s, {}), 0, {}) is None


def test_measured_peak_is_the_rate_of_a_matmul_chain():
    peak = compute.measured_peak_flops(size=256, repeats=2)
    assert peak > 1e8  # any CPU of the last decade does > 0.1 GFLOP/s in f32
    u = compute.utilisation(1e9, 2.0, peak)
    assert u["flops_s"] == 2e9 and u["mfu"] == pytest.approx(2e9 / peak)
    assert compute.utilisation(None, 2.0, peak) == {}


def test_epoch_line_reports_flops_and_utilisation(capsys):
    step, state, batch = _matmul_step()
    _, metrics = run_epochs(state, step, lambda e: [batch] * 3, n_batches=3, epochs=(0, 1),
                            points=3 * 64, desc="toy")
    line = capsys.readouterr().out
    assert "GFLOP/step (XLA)" in line and "MFU" in line and "of the measured" in line
    assert metrics["step_flops"] >= 2 * 64 * 128 * 32
    assert 0 < metrics["mfu"] and metrics["peak_flops_s"] > 0
    assert metrics["flops_s"] == pytest.approx(metrics["mfu"] * metrics["peak_flops_s"])


def test_epoch_line_without_an_analysis_has_no_utilisation(capsys):
    def step(state, batch):  # not jitted: nothing to analyse
        return state, {"loss": np.float32(1.0)}

    _, metrics = run_epochs(0, step, lambda e: [{}] * 2, n_batches=2, epochs=(0, 1), points=2)
    assert "MFU" not in capsys.readouterr().out and "mfu" not in metrics
