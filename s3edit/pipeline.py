"""The one place that knows the order of the stages.

Pass 1 streams the video through the face detector and tracker (landmarks only are kept) and
embeds the identity, and with a model that reads them the attributes, on a few evenly spread
frames. The edit then changes the clip code once (an expression instead adds one offset to
every frame's landmark code). Pass 2 streams the video again: aligned crops go through the
model in batches, are pasted back through the soft face mask, and the frames go straight to
the encoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from s3edit.edit.base import Editor
from s3edit.edit.expression import CodeEdit, ExpressionDirections, edit_codes
from s3edit.face.align import align_crop, square_from_landmarks, to_crop_coords
from s3edit.face.identity import IdentityEncoder
from s3edit.face.landmarks import FaceDetector, landmarks68
from s3edit.face.mask import face_mask
from s3edit.face.paste import paste_back
from s3edit.face.track import FaceTrack, FaceTracker
from s3edit.model.codec import FaceCodec
from s3edit.model.codes import clip_code, identity_code, landmark_code
from s3edit.video import VideoInfo, VideoWriter, probe, read_frames

# Stage name, total units -> a function that advances that stage by n units.
ProgressHook = Callable[[str, int], Callable[[int], None]]


def no_progress(stage: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass
class EditOptions:
    attr: str
    scale: float
    blend: str = "residual"  # or "residual-decoded" or "plain"
    face_index: int | None = None
    batch_size: int = 8
    identity_frames: int = 16
    max_gap: int = 8
    sigma_centre: float = 1.0
    sigma_xy: float = 3.0
    crf: int = 18
    codec: str = "libx264"
    audio: bool = True
    overwrite: bool = False


@dataclass
class EditResult:
    input: str
    output: str
    frames: int
    frames_with_face: int
    frames_filled: int
    frames_passed_through: int
    fps: str
    seconds: float
    attr: str
    scale: float
    status: str = "ok"
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ClipAnalysis:
    """Everything pass 1 learns: the tracked face and the clip code."""

    track: FaceTrack
    # (128,) L2-normalised mean identity over sampled frames, then (with a model that reads
    # them) the mean of their 40 attribute values
    clip_code: torch.Tensor


# Side of the crops the attribute encoder sees in pass 1 (that of the training cache).
ATTRIBUTE_CROP = 128


class ClipCodeSampler:
    """The clip code of a face seen on a few frames: the mean of its L2-normalised identity
    embeddings and, given `attributes` (aligned crops in [-1, 1] -> (N, 40) values), the mean
    attribute values of its crops. Keeps only embeddings and small crops, not frames."""

    def __init__(self, identity_encoder: IdentityEncoder,
                 attributes: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.identity_encoder = identity_encoder
        self.attributes = attributes
        self.embeddings: list[np.ndarray] = []
        self.crops: list[np.ndarray] = []

    def add(self, frame: np.ndarray, lm68: np.ndarray) -> None:
        self.embeddings.append(self.identity_encoder([frame], [lm68])[0])
        if self.attributes is not None:
            self.crops.append(align_crop(frame, square_from_landmarks(lm68), ATTRIBUTE_CROP))

    def clip_code(self) -> torch.Tensor:
        mean = identity_code(torch.from_numpy(np.asarray(self.embeddings))).mean(0)
        values = None
        if self.attributes is not None:
            crops = torch.from_numpy(np.stack(self.crops)).permute(0, 3, 1, 2).float()
            values = self.attributes(crops / 127.5 - 1).mean(0)
        return clip_code(mean, values)


def analyse_clip(info: VideoInfo, opts: EditOptions, identity_encoder: IdentityEncoder,
                 progress: ProgressHook = no_progress,
                 attributes: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> ClipAnalysis:
    """Pass 1: track one face through the clip and sample its clip code on a few evenly
    spread frames (see `ClipCodeSampler`)."""
    stride = max(1, info.frame_count // opts.identity_frames)
    tracker = FaceTracker(face_index=opts.face_index)
    sampler = ClipCodeSampler(identity_encoder, attributes)
    advance = progress("tracking face", info.frame_count)
    with FaceDetector(video=True) as detect:
        for t, frame in enumerate(read_frames(info)):
            face = tracker.update(detect(frame))
            if face is not None and t % stride == 0:
                sampler.add(frame, face.lm68)
            advance(1)
    track = tracker.finish(max_gap=opts.max_gap, sigma_centre=opts.sigma_centre,
                           sigma_xy=opts.sigma_xy)
    if not sampler.embeddings:  # the face showed only between the sampled frames: use its first
        first = int(np.flatnonzero(track.valid)[0])
        frame = next(f for t, f in enumerate(read_frames(info)) if t == first)
        sampler.add(frame, landmarks68(track.mesh[first]))
    return ClipAnalysis(track=track, clip_code=sampler.clip_code())


class Pipeline:
    def __init__(self, codec: FaceCodec, editor: Editor, options: EditOptions,
                 progress: ProgressHook = no_progress,
                 expressions: ExpressionDirections | None = None):
        self.codec = codec
        self.editor = editor
        self.expressions = expressions
        self.options = options
        self.progress = progress
        self._identity_encoder: IdentityEncoder | None = None

    @property
    def identity_encoder(self) -> IdentityEncoder:
        if self._identity_encoder is None:
            self._identity_encoder = IdentityEncoder()
        return self._identity_encoder

    def analyse(self, info: VideoInfo) -> ClipAnalysis:
        return analyse_clip(info, self.options, self.identity_encoder, self.progress,
                            self.codec.attributes)

    def render(self, info: VideoInfo, clip: ClipAnalysis, writer: VideoWriter) -> None:
        """Pass 2: edit every tracked frame and write the video."""
        opts = self.options
        edit = edit_codes(self.editor, self.expressions, clip.clip_code, opts.attr, opts.scale)
        advance = self.progress("editing frames", info.frame_count)
        pending: list[tuple[int, np.ndarray]] = []
        with writer:
            for t, frame in enumerate(read_frames(info)):
                pending.append((t, frame))
                if sum(clip.track.valid[i] for i, _ in pending) >= opts.batch_size:
                    self._flush(pending, clip, edit, writer)
                    advance(len(pending))
                    pending = []
            self._flush(pending, clip, edit, writer)
            advance(len(pending))

    def _flush(self, pending: list[tuple[int, np.ndarray]], clip: ClipAnalysis,
               edit: CodeEdit, writer: VideoWriter) -> None:
        track, size = clip.track, self.codec.resolution
        todo = [(t, frame) for t, frame in pending if track.valid[t]]
        edited: dict[int, np.ndarray] = {}
        if todo:
            crops = np.stack([align_crop(frame, track.squares[t], size) for t, frame in todo])
            lm = np.stack([to_crop_coords(landmarks68(track.mesh[t]), track.squares[t], size)
                           for t, _ in todo]) / size
            landmarks = landmark_code(torch.from_numpy(lm))
            x0 = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
            latents = self.codec.encode(x0, clip.clip_code, landmarks)
            out = to_uint8(self.codec.decode(latents, edit.identity, edit.landmarks(landmarks),
                                             reference=(clip.clip_code, landmarks)))
            recon = None
            if self.options.blend == "plain":
                pass
            elif not edit.changes(clip.clip_code):
                recon = out  # nothing to add: the frame stays as it was
            elif self.options.blend == "residual":
                # Inversion and decoding are exact reverses (about 40 dB), so the input crop
                # stands in for the decoded reconstruction and saves its network passes.
                recon = crops
            elif self.options.blend == "residual-decoded":
                recon = to_uint8(self.codec.decode(latents, clip.clip_code, landmarks))
            for i, (t, frame) in enumerate(todo):
                mask = face_mask(track.mesh[t], frame.shape[:2], attr=self.options.attr)
                edited[t] = paste_back(frame, out[i], track.squares[t], mask,
                                       reconstructed_crop=None if recon is None else recon[i])
        for t, frame in pending:
            writer.write(edited.get(t, frame))

    def run(self, input_path: Path, output_path: Path) -> EditResult:
        start = time.perf_counter()
        info = probe(input_path)
        opts = self.options
        # Built first: its checks (output exists, same file as the input...) fail fast.
        writer = VideoWriter(output_path, info, audio_from=info.path if opts.audio else None,
                             crf=opts.crf, codec=opts.codec, overwrite=opts.overwrite)
        clip = self.analyse(info)
        tracked = time.perf_counter()
        self.render(info, clip, writer)
        done = time.perf_counter()
        track = clip.track
        return EditResult(
            input=str(input_path), output=str(output_path), frames=track.frames,
            frames_with_face=track.frames_with_face, frames_filled=track.frames_filled,
            frames_passed_through=track.frames_passed_through, fps=str(info.fps),
            seconds=round(done - start, 3), attr=self.options.attr, scale=self.options.scale,
            stage_seconds={"analyse": round(tracked - start, 3),
                           "render": round(done - tracked, 3)},
        )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, R, R) in [-1, 1] -> (N, R, R, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

