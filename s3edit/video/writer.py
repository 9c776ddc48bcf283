"""Encode RGB frames into a video file through an ffmpeg pipe, atomically."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from s3edit.errors import S3EditError, UsageError
from s3edit.options import DEFAULT_CRF, DEFAULT_ENCODER
from s3edit.video.binaries import error_reason, ffmpeg_exe, passthrough_args
from s3edit.video.info import VideoInfo
from s3edit.video.probe import has_audio_stream

# The containers written, and the file name endings taken for videos when a folder is given.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
# Containers where the index should sit at the front so playback can start while downloading.
_FASTSTART = {".mp4", ".mov", ".m4v"}
# Audio encoder used when the source audio cannot be copied into the output container.
_AUDIO_FALLBACK = {".webm": "libopus"}
# Video encoder in place of the default (H.264) for containers that cannot hold H.264.
_VIDEO_FALLBACK = {".webm": "libvpx-vp9"}
# Encoder options besides -crf: VP9 reads -crf as constant quality only with -b:v 0, and its
# default speed is several times slower than x264's.
_ENCODER_ARGS = {"libvpx-vp9": ["-b:v", "0", "-row-mt", "1", "-cpu-used", "4"]}


def check_video_name(out: Path) -> None:
    """Refuse an output file name whose ending is not a container `VideoWriter` writes."""
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"{out}: a video's name must end in one of "
                         f"{', '.join(VIDEO_SUFFIXES)}")


class VideoWriter:
    """Write frames of `info`'s display size at `info.fps` to `output_path`.

    Use as a context manager and call `write(frame)` for every RGB uint8 frame. Frames are
    encoded to a hidden temporary file next to the output, which replaces the output only once
    ffmpeg has finished successfully; if the `with` block raises (KeyboardInterrupt included),
    ffmpeg is killed and nothing is left behind.

    Even sizes are encoded as yuv420p (plays everywhere). H.264/HEVC cannot store an odd width
    or height in 4:2:0, so odd sizes are encoded as yuv444p at the exact size instead of being
    padded or scaled (some browsers and QuickTime do not play 4:4:4 H.264).

    The audio of `audio_from`, if it has any, is copied in full (not cut to the video length);
    when the output container cannot hold that codec it is re-encoded (AAC, Opus for webm).
    The default video encoder (H.264) becomes VP9 for webm, which cannot hold H.264.
    """

    def __init__(
        self,
        output_path: str | os.PathLike[str],
        info: VideoInfo,
        *,
        audio_from: str | os.PathLike[str] | None = None,
        crf: int = DEFAULT_CRF,
        encoder: str = DEFAULT_ENCODER,
        overwrite: bool = False,
    ) -> None:
        self.output = Path(output_path)
        self.info = info
        self.crf = crf
        self.encoder = (_VIDEO_FALLBACK.get(self.output.suffix.lower(), encoder)
                        if encoder == DEFAULT_ENCODER else encoder)  # ffmpeg's -c:v
        self.frames_written = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._temps: list[Path] = []

        # All checks happen here, before any process starts or any file is created.
        out = self.output
        check_video_name(out)
        if not out.parent.is_dir():
            raise S3EditError(f"output folder {out.parent} does not exist")
        sources = [Path(info.path)] + ([Path(audio_from)] if audio_from is not None else [])
        for src in sources:
            if _same_file(out, src):
                raise S3EditError(f"{out}: output would overwrite the input {src}; choose another")
        if out.is_dir():
            raise S3EditError(f"{out}: output is a folder")
        if out.exists() and not overwrite:
            raise S3EditError(f"{out} exists; use --overwrite")
        self.audio_from: Path | None = None
        if audio_from is not None:
            has_audio = (info.has_audio if _same_file(Path(audio_from), Path(info.path))
                         else has_audio_stream(audio_from))
            self.audio_from = Path(audio_from) if has_audio else None

    def __enter__(self) -> VideoWriter:
        height, width, _ = self.info.frame_shape
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        rate = f"{self.info.fps.numerator}/{self.info.fps.denominator}"
        video_tmp = self._new_temp()
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            # The exact rate goes on the input; output timestamps follow it one to one.
            "-framerate", rate, "-i", "pipe:0",
            "-map", "0:v:0", "-c:v", self.encoder, "-crf", str(self.crf),
            *_ENCODER_ARGS.get(self.encoder, []), "-pix_fmt", pix_fmt,
            # Convert and tag as BT.709 so players and our reader agree on the colours.
            "-vf", "scale=out_color_matrix=bt709:out_range=tv",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-color_range", "tv", *passthrough_args(),
        ]
        if self.audio_from is None and self.output.suffix.lower() in _FASTSTART:
            cmd += ["-movflags", "+faststart"]
        self._stderr = tempfile.TemporaryFile()
        # A new session keeps Ctrl-C away from ffmpeg: Python gets the KeyboardInterrupt and
        # kills it in __exit__, instead of ffmpeg finalising a file we are about to delete.
        try:
            self._proc = subprocess.Popen(cmd + [str(video_tmp)], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=self._stderr,
                                          start_new_session=True)
        except BaseException:
            self._cleanup()  # __exit__ does not run when __enter__ raises
            raise
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of shape `info.frame_shape`."""
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("VideoWriter.write() must be called inside its `with` block")
        if frame.shape != self.info.frame_shape or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be uint8 of shape {self.info.frame_shape}, "
                f"got {frame.dtype} {frame.shape}"
            )
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except BrokenPipeError:
            self._proc.wait()
            raise S3EditError(f"{self.output}: encoding failed ({self._reason()})") from None
        self.frames_written += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            self._cleanup()

    def _finish(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if self.frames_written == 0:
            raise S3EditError(f"{self.output}: no frames were written")
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        if self._proc.wait() != 0:
            raise S3EditError(f"{self.output}: encoding failed ({self._reason()})")
        result = self._temps[0]
        if self.audio_from is not None:
            result = self._mux_audio(result)
        os.replace(result, self.output)

    def _mux_audio(self, video: Path) -> Path:
        muxed = self._new_temp()
        fallback = _AUDIO_FALLBACK.get(self.output.suffix.lower(), "aac")
        reason = ""
        for audio_codec in ("copy", fallback):
            cmd = [
                ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y",
                "-i", str(video), "-i", str(self.audio_from),
                "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", audio_codec,
            ]
            if self.output.suffix.lower() in _FASTSTART:
                cmd += ["-movflags", "+faststart"]
            proc = subprocess.run(cmd + [str(muxed)], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace")
            if proc.returncode == 0:
                return muxed
            reason = error_reason(proc.stderr, muxed)
        raise S3EditError(f"{self.output}: adding the audio of {self.audio_from} failed ({reason})")

    def _new_temp(self) -> Path:
        # Same folder so os.replace is atomic; same extension so ffmpeg picks the same muxer.
        out = self.output
        path = out.with_name(f".{out.name}.partial-{secrets.token_hex(4)}{out.suffix}")
        self._temps.append(path)
        return path

    def _reason(self) -> str:
        assert self._stderr is not None
        self._stderr.seek(0)
        return error_reason(self._stderr.read().decode("utf-8", "replace"))

    def _cleanup(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()
                except BrokenPipeError:
                    pass
        if self._stderr is not None:
            self._stderr.close()
        for path in self._temps:
            path.unlink(missing_ok=True)


def _same_file(a: Path, b: Path) -> bool:
    """True if both paths name one file (also via links), or would once created."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False
