"""Shared fixtures: where the real inputs live.

Tests read the project's shared data folder (``../shared/data`` beside the checkout, or ``$IOVATRACE_SHARED_DATA``)
and skip with a clear reason when it is absent; small inputs are copied into ``tests/data`` with their provenance.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS_DATA = Path(__file__).resolve().parent / "data"


def _shared_data() -> Path | None:
    env = os.environ.get("IOVATRACE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


SHARED_DATA = _shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; skips the test when it is not there."""
    if SHARED_DATA is None:
        pytest.skip("shared data folder not found (set IOVATRACE_SHARED_DATA or place ../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trace_cmd() -> str:
    """Path of Debian's trace-cmd (the reference decoder); skips when absent."""
    exe = shutil.which("trace-cmd")
    if exe is None:
        pytest.skip("trace-cmd not installed (apt-get install trace-cmd); .ci/run installs it")
    return exe


@pytest.fixture(scope="session")
def tests_data() -> Path:
    """tests/data of this checkout."""
    return TESTS_DATA
