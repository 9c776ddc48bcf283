"""probe / read_frames / VideoWriter on small synthetic clips made with ffmpeg."""

from __future__ import annotations

import os
import subprocess
import tracemalloc
from fractions import Fraction
from pathlib import Path

import helpers
import numpy as np
import pytest
from helpers import ffmpeg, psnr

from s3edit.errors import S3EditError, UsageError, VideoError
from s3edit.video import (
    VIDEO_SUFFIXES,
    VideoInfo,
    VideoWriter,
    binaries,
    probe,
    read_frames,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("S3EDIT_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_CLIP = (SHARED / "videos").joinpath(*helpers.FACE_CLIP)
LONG_CLIP = (SHARED / "videos").joinpath(*helpers.LONG_CLIP)






@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    c = {name: d / f"{name}.mp4" for name in ("main", "odd", "one", "vfr", "faststart")}
    # Smooth gradients at NTSC film rate with a longer sine track: 24 frames, 1.5 s of audio.
    silent = d / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "gradients=size=64x48:rate=24000/1001:speed=0.05",
           "-frames:v", "24", "-c:v", "libx264", "-crf", "8", "-pix_fmt", "yuv420p", silent)
    ffmpeg("-i", silent, "-f", "lavfi", "-i", "sine=frequency=440:duration=1.5",
           "-c:v", "copy", "-c:a", "aac", c["main"])
    # H.264 4:2:0 cannot hold odd sizes; 4:4:4 can.
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=33x25:rate=25", "-frames:v", "10",
           "-c:v", "libx264", "-pix_fmt", "yuv444p", c["odd"])
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=25", "-frames:v", "1", "-c:v", "libx264",
           c["one"])
    # Frames on a 30 fps grid with every third one missing (variable frame rate).
    fps_mode = binaries.passthrough_args()[0]  # -fps_mode, or -vsync on old ffmpeg
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30:duration=2",
           "-vf", "select='not(eq(mod(n\\,3)\\,2))'", fps_mode, "vfr", "-c:v", "libx264", c["vfr"])
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-frames:v", "100",
           "-c:v", "libx264", "-movflags", "+faststart", c["faststart"])

    # Rotation metadata: `-display_rotation` on ffmpeg >= 6, the `rotate` tag before that.
    c["rotated"] = d / "rotated.mp4"
    try:
        ffmpeg("-display_rotation", "90", "-i", c["main"], "-c", "copy", c["rotated"])
    except subprocess.CalledProcessError:
        ffmpeg("-i", c["main"], "-c", "copy", "-metadata:s:v", "rotate=90", c["rotated"])

    data = c["main"].read_bytes()
    c["truncated"] = d / "truncated.mp4"  # moov atom (at the end) is lost
    c["truncated"].write_bytes(data[: len(data) // 2])
    data = c["faststart"].read_bytes()
    c["truncated_faststart"] = d / "truncated_faststart.mp4"  # index intact, frames missing
    c["truncated_faststart"].write_bytes(data[: len(data) // 2])
    c["empty"] = d / "empty.mp4"
    c["empty"].write_bytes(b"")
    c["text"] = d / "notes.txt"
    c["text"].write_text("not a video\n" * 20)
    c["png"] = d / "still.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32", "-frames:v", "1", c["png"])
    return c


# --- probe -------------------------------------------------------------------------------------


def test_probe_main(clips: dict[str, Path]) -> None:
    info = probe(clips["main"])
    assert info.fps == Fraction(24000, 1001)
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    assert (info.display_width, info.display_height) == (64, 48)
    assert info.frame_count == 24
    assert info.has_audio and info.codec == "h264" and not info.vfr
    assert info.duration == pytest.approx(24 * 1001 / 24000, abs=0.01)


def test_probe_rotated_swaps_display_size(clips: dict[str, Path]) -> None:
    info = probe(clips["rotated"])
    if info.rotation == 0:
        pytest.skip("this ffmpeg cannot write rotation metadata")
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (64, 48)
    assert (info.display_width, info.display_height) == (48, 64)


def test_probe_odd_one_frame_and_vfr(clips: dict[str, Path]) -> None:
    odd = probe(clips["odd"])
    assert (odd.display_width, odd.display_height, odd.frame_count) == (33, 25, 10)
    assert odd.fps == 25 and not odd.has_audio
    one = probe(clips["one"])
    assert one.frame_count == 1
    vfr = probe(clips["vfr"])
    # 40 frames spread over 2 s of a 30 fps grid: read as 30 fps, gaps filled by repeats.
    assert vfr.vfr and vfr.fps == 30
    assert abs(vfr.frame_count - round(vfr.duration * 30)) <= 1


def test_probe_without_ffprobe(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    rotation = probe(clips["rotated"]).rotation
    monkeypatch.setattr(binaries, "ffprobe_exe", lambda: None)
    info = probe(clips["main"])
    assert info.fps == Fraction(24000, 1001)  # recovered from the printed "23.98 fps"
    assert (info.display_width, info.display_height, info.frame_count) == (64, 48, 24)
    assert info.has_audio
    assert probe(clips["rotated"]).rotation == rotation
    assert probe(clips["vfr"]).vfr
    with pytest.raises(VideoError, match="truncated.mp4"):
        probe(clips["truncated"])
    with pytest.raises(VideoError, match="still image"):
        probe(clips["png"])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", "empty"),
        ("text", "not a readable video"),
        ("truncated", "moov atom not found"),
        ("png", "not a video file"),
    ],
)
def test_probe_bad_inputs(clips: dict[str, Path], name: str, message: str) -> None:
    with pytest.raises(VideoError, match=message) as err:
        probe(clips[name])
    text = str(err.value)
    assert clips[name].name in text and "\n" not in text


def test_probe_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="missing.mp4: file not found"):
        probe(tmp_path / "missing.mp4")


# --- read_frames -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["main", "odd", "one", "vfr", "rotated"])
def test_read_frames_count_and_shape(clips: dict[str, Path], name: str) -> None:
    info = probe(clips[name])
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count
    assert all(f.shape == info.frame_shape and f.dtype == np.uint8 for f in frames)


def test_read_frames_rotated_is_display_orientation(clips: dict[str, Path]) -> None:
    rotated = probe(clips["rotated"])
    if rotated.rotation == 0:
        pytest.skip("this ffmpeg cannot write rotation metadata")
    upright = next(iter(read_frames(probe(clips["main"]))))
    turned = next(iter(read_frames(rotated)))
    expected = np.rot90(upright, k=-rotated.rotation // 90)  # rotation is clockwise
    assert np.abs(turned.astype(int) - expected).mean() < 3


def test_read_frames_early_close_stops_ffmpeg(clips: dict[str, Path]) -> None:
    frames = read_frames(probe(clips["main"]))
    next(frames)
    proc = frames.gi_frame.f_locals["proc"]
    frames.close()
    assert proc.poll() is not None


def test_read_frames_truncated_index_intact(clips: dict[str, Path]) -> None:
    info = probe(clips["truncated_faststart"])  # the index still lists all 100 frames
    with pytest.raises(VideoError, match="truncated_faststart.mp4: decoding failed after"):
        for _ in read_frames(info):
            pass


@pytest.mark.skipif(not LONG_CLIP.is_file(), reason=f"shared clip {LONG_CLIP} not available")
def test_read_frames_memory_does_not_grow() -> None:
    info = probe(LONG_CLIP)  # 34 s, 1008 frames of 480x480
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_frames(info))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == info.frame_count
    assert peak < 50e6  # a few frames, not the 700 MB the whole clip would take


@pytest.mark.skipif(not REAL_CLIP.is_file(), reason=f"shared clip {REAL_CLIP} not available")
def test_real_clip() -> None:
    info = probe(REAL_CLIP)
    assert info.fps == 30 and (info.display_width, info.display_height) == (700, 700)
    assert info.has_audio
    # The clip has 135 frames at irregular times on a 30 fps grid; read at 30 fps that is ~184.
    assert info.vfr and 180 <= info.frame_count <= 185
    assert sum(1 for _ in read_frames(info)) == info.frame_count


# --- VideoWriter -------------------------------------------------------------------------------


def write_all(out: Path, info: VideoInfo, frames: list[np.ndarray], **kw: object) -> VideoInfo:
    with VideoWriter(out, info, **kw) as writer:  # type: ignore[arg-type]
        for frame in frames:
            writer.write(frame)
    return probe(out)


def test_round_trip_keeps_timing_size_audio_and_quality(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    info = probe(clips["main"])
    frames = list(read_frames(info))
    out = write_all(tmp_path / "out.mp4", info, frames, audio_from=info.path)
    assert out.fps == info.fps and out.frame_count == info.frame_count
    assert (out.display_width, out.display_height) == (info.display_width, info.display_height)
    assert out.has_audio
    back = list(read_frames(out))
    assert min(psnr(a, b) for a, b in zip(frames, back, strict=True)) > 35
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_audio_is_kept_in_full(clips: dict[str, Path], tmp_path: Path) -> None:
    if binaries.ffprobe_exe() is None:
        pytest.skip("needs ffprobe to measure the audio stream")
    info = probe(clips["main"])
    write_all(tmp_path / "out.mp4", info, list(read_frames(info)), audio_from=info.path)
    audio = subprocess.run(
        [binaries.ffprobe_exe(), "-v", "error", "-select_streams", "a:0",
         "-show_entries", "stream=duration", "-of", "csv=p=0", str(tmp_path / "out.mp4")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert float(audio) == pytest.approx(1.5, abs=0.05)  # longer than the 1 s of video


@pytest.mark.parametrize("name", ["odd", "rotated", "one", "vfr"])
def test_round_trip_other_shapes(clips: dict[str, Path], tmp_path: Path, name: str) -> None:
    info = probe(clips[name])
    out = write_all(tmp_path / "out.mp4", info, list(read_frames(info)), audio_from=info.path)
    assert (out.display_width, out.display_height) == (info.display_width, info.display_height)
    assert out.frame_count == info.frame_count and out.fps == info.fps
    assert out.rotation == 0 and out.has_audio == info.has_audio


def test_writer_refuses_existing_output(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    info = probe(clips["one"])
    with pytest.raises(S3EditError, match="exists; use --overwrite"):
        VideoWriter(out, info)
    assert out.read_bytes() == b"keep me"
    assert write_all(out, info, list(read_frames(info)), overwrite=True).frame_count == 1


def test_writer_refuses_missing_folder(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(S3EditError, match="output folder .*nowhere does not exist"):
        VideoWriter(tmp_path / "nowhere" / "out.mp4", probe(clips["one"]))


def test_writer_refuses_input_path(clips: dict[str, Path], tmp_path: Path) -> None:
    info = probe(clips["one"])
    with pytest.raises(S3EditError, match="would overwrite the input"):
        VideoWriter(clips["one"], info, overwrite=True)
    link = tmp_path / "link.mp4"
    link.symlink_to(clips["main"])
    with pytest.raises(S3EditError, match="would overwrite the input"):
        VideoWriter(link, info, audio_from=clips["main"], overwrite=True)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_writer_exception_leaves_nothing(
    clips: dict[str, Path], tmp_path: Path, error: type[BaseException]
) -> None:
    info = probe(clips["main"])
    frames = read_frames(info)
    with pytest.raises(error):
        with VideoWriter(tmp_path / "out.mp4", info, audio_from=info.path) as writer:
            for i, frame in enumerate(frames):
                writer.write(frame)
                if i == 5:
                    raise error()
    frames.close()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_a_name_it_cannot_write(clips: dict[str, Path], tmp_path: Path) -> None:
    for name in ("out", "out.txt", "out.png"):
        with pytest.raises(UsageError, match="must end in one of .mp4"):
            VideoWriter(tmp_path / name, probe(clips["one"]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
def test_every_container_taken_as_input_can_be_written(clips: dict[str, Path], tmp_path: Path,
                                                       suffix: str) -> None:
    """The default encoder (H.264) becomes VP9 for webm, which cannot hold H.264; the audio is
    kept in each."""
    info = probe(clips["main"])
    frames = list(read_frames(info))
    out = write_all(tmp_path / f"out{suffix}", info, frames, audio_from=info.path)
    assert out.has_audio and float(out.fps) == pytest.approx(float(info.fps), rel=1e-3)
    # Counted by decoding: an AVI header counts one frame more than the file holds.
    assert min(psnr(a, b) for a, b in zip(frames, read_frames(out), strict=True)) > 30


def test_writer_rejects_wrong_frame(clips: dict[str, Path], tmp_path: Path) -> None:
    info = probe(clips["main"])
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(tmp_path / "out.mp4", info) as writer:
            writer.write(np.zeros((48, 64), np.uint8))
    assert list(tmp_path.iterdir()) == []
