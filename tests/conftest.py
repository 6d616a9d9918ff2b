"""Shared fixtures: where ../shared/data is, and a quiet JAX."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("JXMC_SHARED_DATA", REPO.parent / "shared" / "data"))


IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_data(what: str) -> None:
    """Skips the test, or fails it under ``CI=true``: CI must prove the real-data claims."""
    if IN_CI:
        pytest.fail(f"CI=true but {what} is missing: the real-data tests cannot run", pytrace=False)
    pytest.skip(f"{what} not available")


def shared_root() -> Path:
    """``../shared/data`` (or ``$JXMC_SHARED_DATA``); skip, or fail under CI, when absent."""
    if not SHARED_DATA.is_dir():
        missing_data(str(SHARED_DATA))
    return SHARED_DATA


def shared_dataset(name: str) -> Path:
    """``../shared/data/<name>``; skip the test when it is absent (fail under ``CI=true``)."""
    path = SHARED_DATA / name
    if not path.is_dir():
        missing_data(str(path))
    return path


def pytest_sessionstart(session):
    if IN_CI and not SHARED_DATA.is_dir():
        raise pytest.UsageError(f"CI=true but {SHARED_DATA} is missing: the real-data tests "
                                "cannot run (set JXMC_SHARED_DATA or check out ../shared/data)")
