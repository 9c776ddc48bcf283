"""Public sample clips for demos and tests, fetched on demand and verified by checksum.

The clips are not shipped with s3edit: `samples/manifest.json` pins each one to a commit of
its source repository. `fetch_sample` copies a clip from a local mirror (`mirror_dir` or
$S3EDIT_SAMPLES_DIR, laid out like the manifest's `mirror_path`) or downloads it, and caches
it in $S3EDIT_CACHE/samples (default ~/.cache/s3edit/samples).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from s3edit.errors import S3EditError
from s3edit.storage import cache_root, sha256

MANIFEST = Path(__file__).resolve().parent.parent / "samples" / "manifest.json"
DEFAULT_SAMPLE = "retalking-1"
_LFS_POINTER = b"version https://git-lfs.github.com/spec"
_LFS_MEDIA = "https://media.githubusercontent.com/media"


@dataclass(frozen=True)
class Sample:
    """One manifest entry; `fps` is an exact fraction as text ("2997/125")."""

    name: str
    mirror_path: str
    repo: str
    commit: str
    path: str
    url: str
    sha256: str
    bytes: int
    licence: str
    duration: float
    fps: str
    width: int
    height: int
    audio: bool
    vfr: bool


@lru_cache(maxsize=1)
def _manifest() -> dict[str, Sample]:
    try:
        doc = json.loads(MANIFEST.read_text())
    except OSError as exc:
        raise S3EditError(f"sample manifest {MANIFEST} is missing ({exc.strerror})") from exc
    return {entry["name"]: Sample(**entry) for entry in doc["samples"]}


def list_samples() -> list[Sample]:
    """All sample clips, in manifest order."""
    return list(_manifest().values())


def default_cache_dir() -> Path:
    """Where fetched samples are kept: the cache root's samples/ folder."""
    return cache_root() / "samples"


def fetch_sample(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the local path of sample `name`, copying or downloading it first if needed.

    The file is checked against the manifest's sha256; a mismatch raises S3EditError and
    leaves nothing in the cache.
    """
    samples = _manifest()
    if name not in samples:
        raise S3EditError(f"unknown sample {name!r}; choose one of: {', '.join(samples)}")
    sample = samples[name]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{sample.name}{Path(sample.path).suffix}"
    if target.is_file():
        if sha256(target) == sample.sha256:
            return target
        target.unlink()  # stale or damaged copy

    mirror = mirror_dir if mirror_dir is not None else os.environ.get("S3EDIT_SAMPLES_DIR")
    cache.mkdir(parents=True, exist_ok=True)
    # Fetch under a temporary name so an interrupted or bad fetch never looks cached.
    partial = cache / f".{target.name}.partial-{secrets.token_hex(4)}"
    try:
        if mirror:
            source = str(Path(mirror) / sample.mirror_path)
            if not Path(source).is_file():
                raise S3EditError(f"sample {name}: {source} not found in the mirror")
            shutil.copyfile(source, partial)
        else:
            source = sample.url
            _download(sample, source, partial)
            if _is_lfs_pointer(partial):  # the repository keeps the clip in Git LFS
                source = f"{_LFS_MEDIA}/{sample.repo}/{sample.commit}/{sample.path}"
                _download(sample, source, partial)
        digest = sha256(partial)
        if digest != sample.sha256:
            raise S3EditError(
                f"sample {name}: checksum mismatch for {source} "
                f"(expected sha256 {sample.sha256[:12]}..., got {digest[:12]}...)"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _download(sample: Sample, url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise S3EditError(
            f"sample {sample.name}: download from {url} failed ({reason}); "
            "set S3EDIT_SAMPLES_DIR to a local mirror instead"
        ) from exc


def _is_lfs_pointer(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_LFS_POINTER)) == _LFS_POINTER
