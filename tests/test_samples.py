"""Sample manifest and fetch_sample (mirror copy, download, checksum, cache)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3edit import samples
from s3edit.errors import S3EditError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("S3EDIT_SHARED_DATA", REPO.parent / "shared" / "data"))
MIRROR = SHARED / "videos"


def test_manifest_lists_all_clips_pinned_to_commits() -> None:
    entries = samples.list_samples()
    assert len(entries) == 33
    assert len({s.name for s in entries}) == 33
    assert samples.DEFAULT_SAMPLE == "retalking-1" == entries[0].name
    doc = json.loads(samples.MANIFEST.read_text())
    assert doc["default"] == samples.DEFAULT_SAMPLE
    for s in entries:
        assert re.fullmatch(r"[0-9a-f]{40}", s.commit)
        assert re.fullmatch(r"[0-9a-f]{64}", s.sha256)
        assert s.url == f"https://raw.githubusercontent.com/{s.repo}/{s.commit}/{s.path}"
        assert s.bytes > 0 and s.licence and s.width > 0 and s.height > 0


@pytest.fixture
def fake_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """A one-clip manifest whose clip lives in a temporary mirror, with an empty cache."""
    mirror = tmp_path / "mirror"
    clip = mirror / "group" / "clip.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"pretend this is a video" * 100)
    entry = {
        "name": "fake-1", "mirror_path": "group/clip.mp4", "repo": "someone/repo",
        "commit": "0" * 40, "path": "assets/clip.mp4", "url": clip.as_uri(),
        "sha256": hashlib.sha256(clip.read_bytes()).hexdigest(), "bytes": clip.stat().st_size,
        "licence": "MIT", "duration": 1.0, "fps": "25", "width": 8, "height": 8,
        "audio": False, "vfr": False,
    }
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"default": "fake-1", "samples": [entry]}))
    monkeypatch.setattr(samples, "MANIFEST", manifest)
    monkeypatch.delenv("S3EDIT_SAMPLES_DIR", raising=False)
    monkeypatch.setenv("S3EDIT_CACHE", str(tmp_path / "cache"))
    samples._manifest.cache_clear()
    yield {"mirror": mirror, "clip": clip, "cache": tmp_path / "cache" / "samples"}
    samples._manifest.cache_clear()


def test_fetch_from_mirror_then_from_cache(fake_manifest: dict[str, Path]) -> None:
    path = samples.fetch_sample("fake-1", mirror_dir=fake_manifest["mirror"])
    assert path == fake_manifest["cache"] / "fake-1.mp4"
    assert path.read_bytes() == fake_manifest["clip"].read_bytes()
    fake_manifest["clip"].unlink()  # a verified cached copy needs no source
    assert samples.fetch_sample("fake-1", mirror_dir=fake_manifest["mirror"]) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake-1.mp4"]


def test_fetch_mirror_from_environment(
    fake_manifest: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("S3EDIT_SAMPLES_DIR", str(fake_manifest["mirror"]))
    path = samples.fetch_sample("fake-1", cache_dir=tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "fake-1.mp4" and path.is_file()


def test_fetch_downloads_url(fake_manifest: dict[str, Path]) -> None:
    # The fake manifest's url is a file:// URL, which urllib fetches like a download.
    path = samples.fetch_sample("fake-1")
    assert path.read_bytes() == fake_manifest["clip"].read_bytes()


def test_corrupted_mirror_file_leaves_nothing(fake_manifest: dict[str, Path]) -> None:
    fake_manifest["clip"].write_bytes(b"corrupted")
    with pytest.raises(S3EditError, match="fake-1: checksum mismatch"):
        samples.fetch_sample("fake-1", mirror_dir=fake_manifest["mirror"])
    assert list(fake_manifest["cache"].iterdir()) == []


def test_damaged_cached_copy_is_replaced(fake_manifest: dict[str, Path]) -> None:
    fake_manifest["cache"].mkdir(parents=True)
    (fake_manifest["cache"] / "fake-1.mp4").write_bytes(b"half a download")
    path = samples.fetch_sample("fake-1", mirror_dir=fake_manifest["mirror"])
    assert path.read_bytes() == fake_manifest["clip"].read_bytes()


def test_missing_mirror_file(fake_manifest: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(S3EditError, match="not found in the mirror"):
        samples.fetch_sample("fake-1", mirror_dir=tmp_path / "empty-mirror")


def test_unknown_name_lists_names() -> None:
    with pytest.raises(S3EditError, match="unknown sample 'nope'; choose one of: retalking-1, "):
        samples.fetch_sample("nope")


@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"local sample mirror {MIRROR} not available")
def test_real_manifest_checksums_match_mirror(tmp_path: Path) -> None:
    path = samples.fetch_sample(samples.DEFAULT_SAMPLE, cache_dir=tmp_path, mirror_dir=MIRROR)
    assert path.stat().st_size == samples.list_samples()[0].bytes
    for s in samples.list_samples():  # ~20 MB in all, hashed in well under a second
        data = (MIRROR / s.mirror_path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (s.bytes, s.sha256), s.name
