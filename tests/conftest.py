"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder ($S3EDIT_SHARED_DATA or ../shared/data); skips the test if absent."""
    path = Path(os.environ.get("S3EDIT_SHARED_DATA") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set S3EDIT_SHARED_DATA to its folder)")
    return path
