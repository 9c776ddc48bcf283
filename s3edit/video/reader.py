"""Stream decoded RGB frames out of ffmpeg one at a time."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from s3edit.errors import VideoError
from s3edit.video.binaries import decode_command, error_reason
from s3edit.video.info import VideoInfo


def read_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    """Yield every frame of `info` as an RGB uint8 array of `info.frame_shape`, in display
    orientation, in order; only one frame is held at a time.

    Closing the generator early stops ffmpeg. Raises VideoError if ffmpeg fails to decode.
    """
    height, width, _ = info.frame_shape
    # `-s` pins the output size so the byte stream always splits into frames of the probed size.
    cmd = decode_command(info) + ["-s", f"{width}x{height}", "-pix_fmt", "rgb24",
                                  "-f", "rawvideo", "pipe:1"]
    # stderr goes to a file: a pipe nobody drains would fill up on a damaged file and block
    # ffmpeg while we wait on stdout.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, start_new_session=True)
        assert proc.stdout is not None
        count = 0
        partial = False
        try:
            while True:
                frame = np.empty(info.frame_shape, dtype=np.uint8)
                got = _read_full(proc.stdout, frame)
                if got < frame.nbytes:
                    partial = got > 0
                    break
                count += 1
                yield frame
            returncode = proc.wait()
        finally:
            # Reached on normal end, on error and when the consumer closes the generator early
            # (GeneratorExit); in the last two cases ffmpeg is still running.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()

        err.seek(0)
        log = err.read().decode("utf-8", "replace")
        # ffmpeg exits 0 on a truncated file whose index survived; it only logs the damage.
        short = count < info.frame_count and log.strip()
        if returncode != 0 or partial or count == 0 or short:
            where = f"after {count} of {info.frame_count} frames" if count else "before any frame"
            reason = error_reason(log, info.path)
            raise VideoError(f"{info.path}: decoding failed {where} ({reason})")


def _read_full(stream: BinaryIO, frame: np.ndarray) -> int:
    """Fill `frame` from the pipe; returns the number of bytes read (short only at EOF)."""
    view = memoryview(frame).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got
