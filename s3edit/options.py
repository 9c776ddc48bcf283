"""The options of an edit and their defaults, in one place: the library's dataclasses, which
the command line's flags take their defaults from. Light to import (no torch), so that
`s3edit --help` stays quick."""

from __future__ import annotations

from dataclasses import dataclass, field

from s3edit.errors import UsageError

# 10 DDIM steps with 3 fixed-point iterations per inversion step: 50 network passes a frame
# (inversion 40, edit 10) for a round trip of about 40 dB; plain inversion needs more than 50
# steps for 30 (weights/manifest.json has the figures).
DEFAULT_STEPS = 10
DEFAULT_REFINE = 3
DEFAULT_GUIDANCE = 1.0  # edit guidance off: one network pass a decoding step
DEFAULT_EDITOR = "s3"  # it measures better than linear and lt at equal target change
EDITORS = ("linear", "lt", "s3")
# residual: the edit's change (decoded edit minus input crop) added onto the frame;
# residual-decoded: the change against a decoded reconstruction; plain: the decoded face.
BLENDS = ("residual", "residual-decoded", "plain")
# What `s3edit apply` encodes with unless told otherwise (visually lossless H.264).
DEFAULT_CRF = 18
DEFAULT_ENCODER = "libx264"


@dataclass(frozen=True)
class TrackOptions:
    """How a track is finished: gaps of up to `max_gap` frames between detections are
    interpolated, and each run's squares smoothed over time (Gaussian sigmas in frames: the
    centre lightly, so the crop follows quick head moves; the axes more, so it does not
    breathe)."""

    max_gap: int = 8
    sigma_centre: float = 1.0
    sigma_xy: float = 3.0


@dataclass
class EditOptions:
    """One edit of one video: the attribute and its strength, how the face is tracked and
    pasted back, and how the output is encoded. `attr` takes any case ("eyeglasses")."""

    attr: str
    scale: float = 0.5
    blend: str = "residual"
    face_index: int | None = None  # counted left to right on the first frame; None: largest
    batch_size: int = 8  # frames per model batch
    identity_frames: int = 16  # evenly spread frames whose codes make the clip code
    track: TrackOptions = field(default_factory=TrackOptions)
    crf: int = DEFAULT_CRF
    encoder: str = DEFAULT_ENCODER  # ffmpeg video encoder
    audio: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        from s3edit.edit.attributes import resolve_attribute

        self.attr = resolve_attribute(self.attr)
        if self.blend not in BLENDS:
            raise UsageError(f"unknown blend {self.blend!r}: choose from {', '.join(BLENDS)}")
