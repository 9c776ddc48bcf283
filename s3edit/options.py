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
# Edit guidance (see DiffusionFaceAutoencoder.sample): "auto" decodes a face that faces the
# camera, or is seen in profile, without it (1: one network pass a decoding step), and a face
# turned aside short of a profile (s3edit.face.hair.PROFILE_TURN) with TURNED_FACE_GUIDANCE,
# since there the decoder draws a fraction of the edit: at +0.6 on three turned clips,
# guidance 2 took Smiling from +0.29 to +0.55, Gray_Hair from +0.04 to +0.17 and the
# eyeglasses edits that succeed on megaportrait -1eKufUP5XQ_4 from none to all, for 0.005-0.016
# of identity (bench/README.md, stop 28). Putting eyeglasses on, "auto" instead takes the
# guidance from how the clip's first keyframes draw the edit (s3edit.model.guidance).
DEFAULT_GUIDANCE = "auto"
TURNED_FACE_GUIDANCE = 2.0
MAX_GUIDANCE = 20.0
# Stochastic decoding (DDIM's eta, see DiffusionFaceAutoencoder.sample): fresh noise in each
# decoding step lets the decoder draw an edit's fine structure (spectacle frames) rather than
# its mean (dark shading over the eyes); 0 decodes deterministically.
DEFAULT_ETA = 0.0
# The UNet's arithmetic: "auto" is bf16 where the hardware has it (see
# s3edit.model.face_model.uses_bf16), "fp32" the full computation.
PRECISIONS = ("auto", "bf16", "fp32")
DEFAULT_PRECISION = "auto"
# The model runs on every 4th tracked frame (and on fast motion); the edit's change is
# interpolated in between (s3edit/keyframes.py). 1 runs it on every frame.
DEFAULT_KEYFRAME_EVERY = 4
DEFAULT_EDITOR = "s3"  # it measures better than linear and lt at equal target change
EDITORS = ("linear", "lt", "s3")
# residual: the edit's change (decoded edit minus input crop) added onto the frame;
# residual-decoded: the change against a decoded reconstruction; plain: the decoded face;
# adaptive: residual, but the decoded face where the edit changes the crop strongly, so that
# what the edit removes (sharp spectacle frames) does not show through from the frame; auto:
# adaptive where the edit takes off something worn (eyeglasses, hats...), residual otherwise.
# Removing eyeglasses, residual leaves the frames on; adding them, adaptive blurs the eyes
# under the drawn rims (identity 0.967 -> 0.935 on liveportrait d0), and making a face older
# it costs identity too (0.982 -> 0.972 on dpe s; bench/README.md, stop 23).
BLENDS = ("auto", "residual", "residual-decoded", "plain", "adaptive")
WORN = ("Eyeglasses", "Wearing_Earrings", "Wearing_Hat", "Wearing_Necklace", "Wearing_Necktie")
# A crop pixel's change (0-255) from which adaptive starts dropping the frame's detail, and
# where it has dropped it: over the model's reconstruction error (about 40 dB, a change of 2-3)
# and the faint change an edit spreads over the whole face. On liveportrait d13 (glasses) at
# eyeglasses -0.6, (4, 12) blurred the whole face and (10, 30) left the frames showing.
ADAPTIVE_DETAIL_KNEE = (6.0, 20.0)
# Where the 68 landmarks and the paste mask come from: mediapipe's mesh, whose weights ship in
# its wheel, or the optional backends, face-alignment's FAN and facexlib's BiSeNet parsing
# (s3edit/face/backends.py), whose weights the user supplies. The mask "auto" is the mesh's,
# but BiSeNet's for hair attributes when its package and weights are there: the parsed hair is
# the real hair region, and the mask the reference paste-back uses.
LANDMARKS = ("mediapipe", "fan")
# The noise map under the hair: inverted holds the frame's own hair colour, so a hair edit of
# the code only greys dark hair; fresh redraws the hair region of each keyframe's noise map
# (one draw for the whole clip, in crop coordinates), so the edited code decides the colour.
# auto: fresh for hair edits of a face that faces the camera (s3edit.face.hair.faces_camera);
# on a turned face the decoder draws no blond hair, only a second head of hair at the crop's
# edge (bench/README.md, stop 26).
HAIR_NOISES = ("auto", "fresh", "inverted")
# What the decoder draws for eyeglasses is their mean: thin rims plus a dark tint over the
# lenses and round the eyes, which in the frame reads as sunglasses or a dark band. clear
# drops the change's broad part (its Gaussian blur of CLEAR_LENS_SIGMA crop pixels at 64 px,
# scaled with the crop) and keeps the rims; decoded keeps the change as decoded. auto: clear
# when adding eyeglasses (bench/README.md, stop 26).
LENSES = ("auto", "clear", "decoded")
CLEAR_LENS_SIGMA = 3.0
MASKS = ("auto", "mesh", "bisenet")
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
    blend: str = "auto"
    face_index: int | None = None  # counted left to right on the first frame; None: largest
    # Keyframes per model batch. Torch's threads sleep between kernels here (see
    # s3edit/__init__.py), which costs least on big batches: a batch of 8 crops ran 7.0 s
    # per 8, 16 ran 5.1 and 32 ran 4.0 (2 cores, bf16). 16 keyframes hold up to 64 frames in
    # memory until their faces come back from the model.
    batch_size: int = 16
    keyframe_every: int = DEFAULT_KEYFRAME_EVERY
    identity_frames: int = 16  # evenly spread frames whose codes make the clip code
    track: TrackOptions = field(default_factory=TrackOptions)
    landmarks: str = LANDMARKS[0]  # see LANDMARKS
    mask: str = MASKS[0]  # see MASKS
    hair_noise: str = HAIR_NOISES[0]  # see HAIR_NOISES; "auto" stays for hair edits
    lenses: str = LENSES[0]  # see LENSES
    guidance: float | str = DEFAULT_GUIDANCE  # a weight, or "auto" (see DEFAULT_GUIDANCE)
    crf: int = DEFAULT_CRF
    encoder: str = DEFAULT_ENCODER  # ffmpeg video encoder
    audio: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        from s3edit.edit.attributes import resolve_attribute
        from s3edit.face.mask import hair_attribute

        self.attr = resolve_attribute(self.attr)
        if self.blend not in BLENDS:
            raise UsageError(f"unknown blend {self.blend!r}: choose from {', '.join(BLENDS)}")
        if self.landmarks not in LANDMARKS:
            raise UsageError(f"unknown landmarks {self.landmarks!r}: choose from "
                             f"{', '.join(LANDMARKS)}")
        if self.mask not in MASKS:
            raise UsageError(f"unknown mask {self.mask!r}: choose from {', '.join(MASKS)}")
        if self.blend == "auto":
            self.blend = "adaptive" if self.scale < 0 and self.attr in WORN else "residual"
        if self.mask == "auto":
            self.mask = "bisenet" if hair_attribute(self.attr) and _bisenet_present() else "mesh"
        if self.hair_noise not in HAIR_NOISES:
            raise UsageError(f"unknown hair noise {self.hair_noise!r}: choose from "
                             f"{', '.join(HAIR_NOISES)}")
        if self.hair_noise == "auto" and not (hair_attribute(self.attr) and self.scale):
            self.hair_noise = "inverted"  # at scale 0 the inverted noise decodes the frame
        if self.lenses not in LENSES:
            raise UsageError(f"unknown lenses {self.lenses!r}: choose from {', '.join(LENSES)}")
        if self.lenses == "auto":
            self.lenses = "clear" if self.attr == "Eyeglasses" and self.scale > 0 else "decoded"
        self.guidance = parse_guidance(self.guidance)
        if self.keyframe_every < 1:
            raise UsageError(f"keyframe_every must be at least 1, got {self.keyframe_every}")


def parse_guidance(value: float | str) -> float | str:
    """An edit guidance weight in [0, MAX_GUIDANCE], or "auto"; a UsageError otherwise."""
    if value == "auto":
        return value
    try:
        weight = float(value)
    except ValueError:
        raise UsageError(f"guidance must be a number or auto, got {value!r}") from None
    if not 0 <= weight <= MAX_GUIDANCE:
        raise UsageError(f"guidance must be between 0 and {MAX_GUIDANCE:g}, got {value}")
    return weight


def _bisenet_present() -> bool:
    from s3edit.face.backends import bisenet_present  # imports torch: only for hair edits

    return bisenet_present()
