"""What s3edit knows of an input video: a leaf module, so the ffmpeg helpers and the prober
can both use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


@dataclass(frozen=True)
class VideoInfo:
    """What the rest of s3edit needs to know about an input video.

    `rotation` is the clockwise angle (0/90/180/270) a player turns the coded picture to show
    it; `display_width/height` are the size after that turn, which is the size of every frame
    `read_frames` yields. `fps` is exact. For variable-frame-rate input (`vfr`), `read_frames`
    resamples to `fps` so frames are evenly spaced and stay in sync with the audio, and
    `frame_count` counts the resampled frames.
    """

    path: Path
    width: int
    height: int
    rotation: int
    display_width: int
    display_height: int
    fps: Fraction
    frame_count: int
    duration: float
    has_audio: bool
    codec: str
    vfr: bool = False
    stream_index: int = 0

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Shape of one RGB frame in display orientation."""
        return (self.display_height, self.display_width, 3)
