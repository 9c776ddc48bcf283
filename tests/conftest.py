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


# --- Running the real CLI as a subprocess (tests/test_cli.py, tests/test_end_to_end.py) ------


def cli_env() -> dict[str, str]:
    """The environment the CLI runs in: mediapipe's C++ logging down, no terminal width hint
    (so the output is the same wherever the suite runs)."""
    env = dict(os.environ, GLOG_minloglevel="2")
    for name in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def s3edit_env() -> dict[str, str]:
    return cli_env()


@pytest.fixture(scope="session")
def run_s3edit():
    """`run_s3edit(*args)` runs `python -m s3edit *args` and returns the CompletedProcess
    (text stdout/stderr, returncode)."""
    import subprocess
    import sys

    def run(*args: object, timeout: float = 300, cwd: Path | None = None):
        return subprocess.run([sys.executable, "-m", "s3edit", *map(str, args)],
                              capture_output=True, text=True, encoding="utf-8",
                              errors="replace", env=cli_env(), timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL)

    return run
