"""What the bench scripts share: where the real clips are and how a --video is looked up."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VIDEO = "videoretalking/examples/face/1.mp4"


def default_data_dir() -> Path:
    return Path(os.environ.get("S3EDIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def resolve_video(video: str, data: Path) -> Path:
    """A path as given if it exists, else relative to the shared data's videos/ folder."""
    for candidate in (Path(video), data / "videos" / video):
        if candidate.is_file():
            return candidate
    sys.exit(f"error: {video}: not found (looked here and under {data / 'videos'}; "
             "set --data or S3EDIT_SHARED_DATA)")
