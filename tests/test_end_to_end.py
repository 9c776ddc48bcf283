"""`s3edit apply --no-model` end to end on real clips: the output keeps the input's timing, size
and audio, and everything outside the face is left as it was (up to codec noise)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import FACE_CLIP, PCAVS_CLIP, PORTRAIT_CLIP, ffmpeg, shared_clip

from s3edit.face.landmarks import FaceDetector
from s3edit.face.mask import face_mask
from s3edit.video import binaries, has_audio_stream, probe, read_frames

# Each module fixture below runs the CLI over real clips for 20 to 30 s.
pytestmark = pytest.mark.slow




def audio_duration(path: Path) -> float:
    out = subprocess.run([binaries.ffprobe_exe() or "ffprobe", "-v", "error", "-select_streams",
                          "a:0", "-show_entries", "stream=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip())


def assert_same_timing_and_size(src: Path, dst: Path) -> None:
    a, b = probe(src), probe(dst)
    assert (b.display_width, b.display_height) == (a.display_width, a.display_height)
    assert b.frame_count == a.frame_count
    assert b.fps == a.fps
    assert b.rotation == 0


# --- The talking head of video-retalking, exactly as the README's check runs it ---------------


@pytest.fixture(scope="module")
def retalk(run_s3edit, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    src = shared_clip(shared_data, FACE_CLIP)
    out = tmp_path_factory.mktemp("e2e") / "out.mp4"
    proc = run_s3edit("apply", src, "-o", out, "--attr", "eyeglasses", "--scale", "0",
                      "--no-model", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return src, out, proc


def test_output_keeps_timing_size_and_audio(retalk) -> None:
    src, out, _ = retalk
    info = probe(src)
    assert info.vfr and info.frame_count == 182  # the clip's known shape
    assert_same_timing_and_size(src, out)
    assert not probe(out).vfr
    # The audio is kept by default, in full.
    assert has_audio_stream(out)
    assert audio_duration(out) == pytest.approx(audio_duration(src), abs=0.1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"]


def test_json_summary(retalk) -> None:
    src, out, proc = retalk
    record = json.loads(proc.stdout)  # one line, one object
    info = probe(src)
    assert record["status"] == "ok"
    assert record["input"] == str(src) and record["output"] == str(out)
    assert record["frames"] == info.frame_count
    assert record["fps"] == str(info.fps) == "30"
    assert record["attr"] == "Eyeglasses" and record["scale"] == 0
    # A talking head is in every frame; the counts add up.
    assert record["frames_with_face"] >= 0.95 * record["frames"]
    assert (record["frames_with_face"] + record["frames_filled"]
            + record["frames_passed_through"]) == record["frames"]
    assert record["seconds"] > 0 and set(record["stage_seconds"]) == {"analyse", "render"}


def test_frames_outside_the_face_are_unchanged(retalk) -> None:
    src, out, _ = retalk
    before, after = probe(src), probe(out)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))  # grow the face by 10 px
    outside_psnr, whole_psnr, with_face = [], [], 0
    with FaceDetector(video=True) as detect:
        for a, b in zip(read_frames(before), read_frames(after), strict=True):
            faces = detect(a)
            keep = np.ones(a.shape[:2], bool)
            if faces:
                face = max(faces, key=lambda f: f.area)
                support = (face_mask(face.mesh, a.shape[:2]) > 0).astype(np.uint8)
                keep = cv2.dilate(support, kernel) == 0
                with_face += 1
            diff = a.astype(np.float64) - b.astype(np.float64)
            outside_psnr.append(psnr_of(diff[keep]))
            whole_psnr.append(psnr_of(diff))
    assert with_face >= 0.95 * before.frame_count
    assert min(outside_psnr) >= 40, (min(outside_psnr), int(np.argmin(outside_psnr)))
    assert np.mean(whole_psnr) >= 38  # the face itself only went through the codec too


def psnr_of(diff: np.ndarray) -> float:
    mse = float(np.mean(diff**2)) if diff.size else 0.0
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


# --- Other shapes: a portrait phone clip, a 224 px VoxCeleb crop; --no-audio ------------------


@pytest.fixture(scope="module")
def shapes(run_s3edit, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One --no-audio run over the first 2 s of the portrait clip and a whole pcavs clip."""
    portrait = shared_clip(shared_data, PORTRAIT_CLIP)
    pcavs = shared_clip(shared_data, PCAVS_CLIP)
    base = tmp_path_factory.mktemp("shapes")
    folder, out = base / "in", base / "out"
    folder.mkdir()
    out.mkdir()
    ffmpeg("-i", portrait, "-t", "2", "-c", "copy", folder / "portrait.mp4")
    (folder / "pcavs.mp4").symlink_to(pcavs)
    proc = run_s3edit("apply", folder, "--out-dir", out, "--attr", "eyeglasses", "--scale", "0",
                      "--no-model", "--no-audio", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    records = {Path(r["input"]).stem: r for r in map(json.loads, proc.stdout.splitlines())}
    return folder, out, records


@pytest.mark.parametrize(("name", "size", "fps"),
                         [("portrait", (720, 1280), 30), ("pcavs", (224, 224), 25)])
def test_clip_keeps_size_fps_and_frames(shapes, name: str, size: tuple[int, int],
                                        fps: int) -> None:
    folder, out, records = shapes
    src, dst = folder / f"{name}.mp4", out / f"{name}.eyeglasses+0.mp4"
    info = probe(src)
    assert (info.display_width, info.display_height) == size and info.fps == fps
    assert_same_timing_and_size(src, dst)
    record = records[name]
    assert record["status"] == "ok" and record["output"] == str(dst)
    assert record["frames"] == info.frame_count
    assert record["frames_with_face"] >= 0.9 * info.frame_count
    assert sorted(p.name for p in out.iterdir()) == ["pcavs.eyeglasses+0.mp4",
                                                     "portrait.eyeglasses+0.mp4"]


def test_no_audio_drops_the_audio(shapes) -> None:
    folder, out, _ = shapes
    assert has_audio_stream(folder / "pcavs.mp4")
    assert not has_audio_stream(out / "pcavs.eyeglasses+0.mp4")
    assert not probe(out / "pcavs.eyeglasses+0.mp4").has_audio
