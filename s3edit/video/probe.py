"""Read a video's geometry, timing and streams (ffprobe, or `ffmpeg -i` when ffprobe is absent)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import s3edit.video.binaries as binaries
from s3edit.errors import VideoError
from s3edit.video.binaries import decode_command, error_reason, ffmpeg_exe
from s3edit.video.info import VideoInfo

# Above this r_frame_rate is a timebase artefact (e.g. 1000/1 in webm), not a frame rate.
_MAX_PLAUSIBLE_FPS = 120


@dataclass
class _Stream:
    """The facts probe() needs, whichever tool supplied them."""

    index: int
    codec: str
    width: int
    height: int
    rotation: int
    avg_rate: Fraction
    guess_rate: Fraction
    nb_frames: int | None
    duration: float | None


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe the first video stream of `path`; raise VideoError (one line) if it is unusable."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty")

    if binaries.ffprobe_exe():
        fmt, stream, has_audio, fmt_duration = _run_ffprobe(path)
    else:
        fmt, stream, has_audio, fmt_duration = _parse_ffmpeg_banner(path)

    # ffmpeg opens a single picture as a one-frame video through these demuxers.
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise VideoError(f"{path}: not a video file (it is a still image)")
    if fmt == "tty":  # ffmpeg renders ANSI text files as video
        raise VideoError(f"{path}: not a video file (it is text)")
    if stream is None:
        raise VideoError(f"{path}: not a video file (no video stream found)")

    fps, irregular = _choose_fps(path, stream)
    # The container's duration also covers a longer audio track; prefer the video stream's.
    duration = stream.duration or fmt_duration or 0.0
    swap = stream.rotation in (90, 270)
    info = VideoInfo(
        path=path,
        width=stream.width,
        height=stream.height,
        rotation=stream.rotation,
        display_width=stream.height if swap else stream.width,
        display_height=stream.width if swap else stream.height,
        fps=fps,
        frame_count=0,
        duration=duration,
        has_audio=has_audio,
        codec=stream.codec,
        stream_index=stream.index,
    )
    count = stream.nb_frames or _count_packets(info)
    # avg_frame_rate also differs from r_frame_rate on constant-rate files whose last frame has
    # an odd duration; only a frame count far from duration * fps means irregular timestamps.
    if irregular and not (duration and abs(count - duration * float(fps)) <= 1.5):
        info = replace(info, vfr=True)
        count = _progress_frames(decode_command(info), path)
    if count <= 0:
        raise VideoError(f"{path}: the video stream has no frames")
    if not stream.duration and not info.vfr:
        duration = count / float(fps)
    return replace(info, frame_count=count, duration=duration)


def has_audio_stream(path: str | os.PathLike[str]) -> bool:
    """Whether `path` has an audio stream (works for audio-only files, unlike probe())."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: file not found")
    if binaries.ffprobe_exe():
        proc = _run([binaries.ffprobe_exe(), "-v", "error", "-select_streams", "a",
                     "-show_entries", "stream=index", "-of", "csv=p=0", str(path)], path)
        return bool(proc.stdout.strip())
    return bool(re.search(r"Stream #\d+:\d+.*: Audio:", _ffmpeg_banner(path)))


def _run(cmd: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise VideoError(f"{path}: not a readable video ({error_reason(proc.stderr, path)})")
    return proc


def _rate(text: str | None) -> Fraction:
    try:
        return Fraction(text) if text else Fraction(0)
    except (ValueError, ZeroDivisionError):  # "0/0" for unknown rates
        return Fraction(0)


def _clockwise(ccw_degrees: float) -> int:
    """Display-matrix angles are counter-clockwise; snap to a quarter turn, report clockwise."""
    return int(round(-ccw_degrees / 90.0)) % 4 * 90


def _run_ffprobe(path: Path) -> tuple[str, _Stream | None, bool, float | None]:
    proc = _run([binaries.ffprobe_exe(), "-v", "error", "-print_format", "json", "-show_format",
                 "-show_streams", str(path)], path)
    data = json.loads(proc.stdout or "{}")
    fmt = data.get("format", {})
    streams = data.get("streams", [])
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    video = next(
        (s for s in streams
         if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")),
        None,
    )
    fmt_duration = float(fmt["duration"]) if fmt.get("duration") else None
    if video is None:
        return fmt.get("format_name", ""), None, has_audio, fmt_duration

    rotation = 0
    matrix = [d for d in video.get("side_data_list", []) if "rotation" in d]
    if matrix:
        rotation = _clockwise(float(matrix[0]["rotation"]))
    elif "rotate" in video.get("tags", {}):  # legacy tag, already clockwise
        rotation = _clockwise(-float(video["tags"]["rotate"]))
    nb_frames = int(video["nb_frames"]) if video.get("nb_frames", "").isdigit() else None
    stream = _Stream(
        index=int(video["index"]),
        codec=video.get("codec_name", "unknown"),
        width=int(video.get("width", 0)),
        height=int(video.get("height", 0)),
        rotation=rotation,
        avg_rate=_rate(video.get("avg_frame_rate")),
        guess_rate=_rate(video.get("r_frame_rate")),
        nb_frames=nb_frames,
        duration=float(video["duration"]) if video.get("duration") else None,
    )
    return fmt.get("format_name", ""), stream, has_audio, fmt_duration


def _ffmpeg_banner(path: Path) -> str:
    # Without an output ffmpeg exits 1 after printing the input description; only the banner
    # matters, and an unreadable file shows up as a missing "Input #0" line.
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, errors="replace",
                          stdin=subprocess.DEVNULL)
    if "Input #0" not in proc.stderr:
        raise VideoError(f"{path}: not a readable video ({error_reason(proc.stderr, path)})")
    return proc.stderr


def _approx_rate(text: str) -> Fraction:
    """ffmpeg prints rates rounded to 2 decimals ("29.97", "23.98", "1k"); recover NTSC-style
    n*1000/1001 rates when they round to the printed value, else take the decimal as is."""
    value = Fraction(text[:-1]) * 1000 if text.endswith("k") else Fraction(text)
    ntsc = Fraction(round(value * Fraction(1001, 1000)) * 1000, 1001)
    if value.denominator != 1 and abs(float(ntsc) - float(value)) < 0.005:
        return ntsc
    return value


def _parse_ffmpeg_banner(path: Path) -> tuple[str, _Stream | None, bool, float | None]:
    """Fallback for systems without ffprobe. fps is approximate (see _approx_rate)."""
    text = _ffmpeg_banner(path)
    m = re.search(r"Input #0, (.+?), from '", text)
    fmt = m[1] if m else ""
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    fmt_duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None
    has_audio = bool(re.search(r"Stream #\d+:\d+.*: Audio:", text))

    # Each stream's description runs until the next "Stream #" line (side data included).
    blocks = re.split(r"\n(?=\s*Stream #)", text)
    for block in blocks:
        head = re.match(r"\s*Stream #\d+:(\d+)\S*: Video: (\w+)(.*)", block)
        if not head or "(attached pic)" in head[3]:
            continue
        size = re.search(r", (\d+)x(\d+)", head[3])
        avg = re.search(r"(\d+(?:\.\d+)?k?) fps", head[3])
        tbr = re.search(r"(\d+(?:\.\d+)?k?) tbr", head[3])
        rot = re.search(r"display ?matrix: rotation of (-?\d+(?:\.\d+)?) degrees", block, re.I)
        legacy = re.search(r"^\s*rotate\s*:\s*(-?\d+)", block, re.M)
        rotation = 0
        if rot:
            rotation = _clockwise(float(rot[1]))
        elif legacy:  # old ffmpeg shows the clockwise `rotate` tag instead of side data
            rotation = _clockwise(-float(legacy[1]))
        stream = _Stream(
            index=int(head[1]),
            codec=head[2],
            width=int(size[1]) if size else 0,
            height=int(size[2]) if size else 0,
            rotation=rotation,
            avg_rate=_approx_rate(avg[1]) if avg else Fraction(0),
            guess_rate=_approx_rate(tbr[1]) if tbr else Fraction(0),
            nb_frames=None,
            duration=None,
        )
        return fmt, stream, has_audio, fmt_duration
    return fmt, None, has_audio, fmt_duration


def _choose_fps(path: Path, stream: _Stream) -> tuple[Fraction, bool]:
    """Frame rate to read at, and whether the stream's timestamps are irregular.

    r_frame_rate (ffmpeg's guess of the timestamp grid) is preferred: on a VFR clip whose frames
    sit on a 30 fps grid with gaps it is 30 while avg_frame_rate is e.g. 1350/61, and resampling
    to the grid keeps every frame at its original time.
    """
    avg, guess = stream.avg_rate, stream.guess_rate
    if 0 < guess <= _MAX_PLAUSIBLE_FPS:
        return guess, bool(avg) and avg != guess
    if avg > 0:
        return avg, False
    raise VideoError(f"{path}: cannot determine the frame rate")


def _progress_frames(cmd: list[str], path: Path) -> int:
    """Run an ffmpeg command to the null muxer and return how many frames it output.

    For VFR input this runs the reader's own decode: the resampled count depends on ffmpeg's
    rounding at both ends (and differs between ffmpeg versions), so it is measured, not guessed.
    """
    cmd = [cmd[0], "-progress", "pipe:1", "-nostats", *cmd[1:], "-f", "null", "-"]
    proc = subprocess.run(cmd,
                          capture_output=True, text=True, errors="replace",
                          stdin=subprocess.DEVNULL)
    counts = re.findall(r"^frame=(\d+)", proc.stdout, re.M)
    if proc.returncode != 0 or not counts:
        raise VideoError(f"{path}: cannot decode the video ({error_reason(proc.stderr, path)})")
    return int(counts[-1])


def _count_packets(info: VideoInfo) -> int:
    """Frame count when the container does not store it (e.g. mkv/webm): one packet per frame."""
    if binaries.ffprobe_exe():
        proc = _run([binaries.ffprobe_exe(), "-v", "error",
                     "-select_streams", str(info.stream_index), "-count_packets",
                     "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(info.path)],
                    info.path)
        return int(proc.stdout.strip().split(",")[0] or 0)
    return _progress_frames(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(info.path),
         "-map", f"0:{info.stream_index}", "-c", "copy"],
        info.path,
    )


__all__ = ["VideoInfo", "has_audio_stream", "probe"]
