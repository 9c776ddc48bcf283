"""Where s3edit keeps derived files, and how it checks files it did not make."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """$S3EDIT_CACHE, else $XDG_CACHE_HOME/s3edit, else ~/.cache/s3edit."""
    root = os.environ.get("S3EDIT_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "s3edit"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
