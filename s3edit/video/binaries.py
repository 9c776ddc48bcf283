"""Locate ffmpeg/ffprobe and share the small helpers every ffmpeg call needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from s3edit.errors import S3EditError
from s3edit.video.info import VideoInfo


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """ffmpeg from PATH, else the binary bundled with the imageio-ffmpeg wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise S3EditError(
            "ffmpeg not found: install ffmpeg (apt install ffmpeg) or `pip install imageio-ffmpeg`"
        ) from exc


@lru_cache(maxsize=1)
def ffprobe_exe() -> str | None:
    """ffprobe from PATH; None means probing falls back to parsing `ffmpeg -i` (imageio-ffmpeg
    ships no ffprobe)."""
    return shutil.which("ffprobe")


@lru_cache(maxsize=1)
def passthrough_args() -> tuple[str, ...]:
    """Options that make ffmpeg emit each decoded frame exactly once (no duplicates or drops).

    `-fps_mode` exists since ffmpeg 5.1; `-vsync` is its older spelling.
    """
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True
    ).stdout
    m = re.match(r"ffmpeg version n?(\d+)\.(\d+)", out)
    if m and (int(m[1]), int(m[2])) < (5, 1):
        return ("-vsync", "passthrough")
    return ("-fps_mode", "passthrough")


# "[mov,mp4 @ 0x55..] ", and on ffmpeg 7+ nested ones: "[vist#0:0/h264 @ 0x..] [dec:h264 @ 0x..] "
_LOG_PREFIX = re.compile(r"^(\[[^\]]+ @ 0x[0-9a-f]+\]\s*)+")
# "Error opening input files: <cause>" -> "<cause>"
_WRAPPER = re.compile(r"^Error (opening|while opening) (input|output)( files?)?: ")
# Lines that add nothing to the cause printed before them.
_NOISE = re.compile(
    r"^(Error opening (input|output) file |Conversion failed|At least one output)"
    r"|misdetection possible"
)


def error_reason(stderr: str, path: Path | str | None = None) -> str:
    """Condense ffmpeg/ffprobe stderr into one line: the last distinct specific messages,
    without log prefixes, wrapper phrases or the repeated file name."""
    lines: list[str] = []
    for raw in stderr.splitlines():
        line = _WRAPPER.sub("", _LOG_PREFIX.sub("", raw.strip()))
        if path is not None and line.startswith(f"{path}: "):
            line = line[len(f"{path}: ") :]
        if line and not _NOISE.search(line) and line not in lines:
            lines.append(line)
    # The last messages are the ones that made ffmpeg give up.
    return "; ".join(lines[-2:]) or "ffmpeg gave no reason"


def decode_command(info: VideoInfo) -> list[str]:
    """ffmpeg arguments (without output) that decode `info`'s video stream frame by frame, in
    display orientation (ffmpeg applies the rotation itself), resampled to `info.fps` if VFR."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(info.path),
           "-map", f"0:{info.stream_index}"]
    if info.vfr:
        cmd += ["-vf", f"fps={info.fps.numerator}/{info.fps.denominator}"]
    return cmd + list(passthrough_args())
