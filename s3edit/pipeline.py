"""The one place that knows the order of the stages, and the library's way in.

    pipeline = Pipeline.from_weights(device="cpu")
    pipeline.run("in.mp4", "out.mp4", EditOptions("eyeglasses", 0.6))

Pass 1 streams the video through the face detector and tracker (landmarks only are kept) and
embeds the identity, and with a model that reads them the attributes, on a few evenly spread
frames. The edit then changes the clip code once (an expression instead adds one offset to
every frame's landmark code). Pass 2 streams the video again: the aligned crops of keyframes
go through the model in batches, the frames between take the change interpolated from the
keyframes around them (s3edit/keyframes.py), every face is pasted back through the soft face
mask, and the frames go straight to the encoder. A hair edit of a face that faces the camera
redraws the noise under the hair found on each frame (s3edit/face/hair.py), since the
inverted noise holds the hair's colour, and pastes through that hair and the face's outer
ring. The optional backends (EditOptions.landmarks and .mask; s3edit/face/backends.py)
refit the tracked face's 68 points in pass 1 and parse its aligned crop for the mask in
pass 2.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from s3edit.edit.base import Editor
from s3edit.edit.expression import CodeEdit, ExpressionDirections, edit_codes
from s3edit.edit.loading import UntrainedEditor, load_editor, load_expressions
from s3edit.errors import S3EditError, UsageError
from s3edit.face.align import align_crop, square_from_landmarks, to_crop_coords, uncrop
from s3edit.face.backends import FaceParser, FanLandmarker
from s3edit.face.hair import (
    FACING_TURN,
    PROFILE_TURN,
    HairSegmenter,
    clip_head_turn,
    faces_camera,
)
from s3edit.face.identity import IdentityEncoder
from s3edit.face.landmarks import FaceDetector
from s3edit.face.mask import face_mask, hair_attribute, parsed_face_mask
from s3edit.face.paste import extend_past_crop, paste_back
from s3edit.face.track import FaceTrack, FaceTracker
from s3edit.keyframes import interpolated_delta, select_keyframes
from s3edit.model.codes import clip_code, identity_code
from s3edit.model.face_model import FaceModel, load_face_model
from s3edit.model.guidance import calibrated_guidance, eye_change
from s3edit.model.inputs import ModelInput, model_input, to_model_range, to_uint8
from s3edit.options import (
    ADAPTIVE_DETAIL_KNEE,
    CLEAR_LENS_SIGMA,
    DEFAULT_EDITOR,
    DEFAULT_ETA,
    DEFAULT_PRECISION,
    DEFAULT_REFINE,
    DEFAULT_STEPS,
    EDITORS,
    TURNED_FACE_GUIDANCE,
    EditOptions,
)
from s3edit.progress import ProgressHook, no_progress
from s3edit.video import VideoInfo, VideoWriter, probe, read_frames

# Stage name -> a context manager around that stage's work: bench/pipeline_stages.py times the
# stages through it; by default it does nothing.
StageTimer = Callable[[str], AbstractContextManager]


def untimed(stage: str) -> AbstractContextManager:
    return nullcontext()


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
    # What "auto" chose for this clip: the edit guidance, and whether the hair was redrawn
    guidance: float = 1.0
    hair_noise: str = "inverted"
    # How far the face is mostly turned aside (`clip_head_turn`: 0 facing the camera, 1 at
    # the oval's edge; None when never tracked), and whether that is a profile, where the
    # decoder, trained on faces seen from the front, draws little of any edit.
    head_turn: float | None = None
    in_profile: bool = False
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
            values = self.attributes(to_model_range(np.stack(self.crops))).mean(0)
        return clip_code(mean, values)


@dataclass
class Batch:
    """Frames of pass 2 on their way to the writer; `todo` are those with a tracked face, and
    `keys` marks those of them the model runs on (the others take an interpolated change)."""

    frames: list[tuple[int, np.ndarray]]
    todo: list[tuple[int, np.ndarray]]
    keys: np.ndarray  # (len(todo),) bool
    inputs: ModelInput | None = None
    # (len(todo), R, R, 3) float32: what the edit changes in each aligned crop
    delta: np.ndarray | None = None
    # the hair found on each frame (fresh hair noise)
    hair: list[FoundHair] | None = None


@dataclass
class FoundHair:
    """A face's hair on one frame. `crop`: (HAIR_CROP, HAIR_CROP) float32 in the aligned crop,
    feathered and faded out over the crop's outer HAIR_EDGE_FADE, where the noise is redrawn
    and the decoded change pasted through; `frame`: (h, w) uint8 0/1 on the whole frame, for
    the hair past the crop."""

    crop: np.ndarray
    frame: np.ndarray


# Side of the aligned crops the hair mask is kept at between finding it and pasting: finer
# than the model's crops, whose edge would show as steps on a large face.
HAIR_CROP = 256
# Share of the crop's side over which the decoded hair change fades out at its edge, into the
# mean change the hair past the crop gets (a bob's ends below the chin): 8% softened the edge
# more but took d0's blond from +0.40 to +0.31 (bench/README.md, stop 26).
HAIR_EDGE_FADE = 0.04
# The band along the crop's edge whose hair gives the mean change of the hair past the crop.
HAIR_EDGE_BAND = 0.15
# A hair edit pastes through the hair (found where redrawn, the mesh's guess elsewhere) and the
# face oval's outer ring, where locks fall over the temples and cheeks, but not the face within,
# the oval shrunk by this share of the face's size: what the decode changes there is shading,
# a dark cheek on retalking-1 (blond +0.6 on the frontal dev clips: identity 0.982-0.984 ->
# 0.985-0.992, bench/README.md, stop 27), a lighter face on megaportrait (0.980 -> 0.986,
# stop 30).
HAIR_EDIT_INNER_FACE = 0.2
# The hair edit's scale from which all the noise under the hair is redrawn; a weaker edit
# redraws it in part. Redrawn whole at any scale, the hair jumped to the decoder's own: blond
# +0.1 already scored +0.22 / +0.70 / +0.70 on retalking-1, d0 and retalking-4 against
# +0.30 / +0.78 / +0.93 at +0.6; in part, +0.02 / +0.02 / +0.10 (bench/README.md, stop 28).
HAIR_FULL_REDRAW_SCALE = 0.6
# How far (Lab a*/b* units) the colour of a redrawn hair's change may stray from its median over
# the hair: the decoder's blond came with an orange patch on d0's crown. Held within 6, the patch
# is gone (by eye) and blond +0.6 (s3) scores +0.71 / +0.31 / +0.93 on d0, retalking-1 and
# retalking-4 against +0.76 / +0.29 / +0.93 (bench/README.md, stop 30).
HAIR_TINT_SPREAD = 6.0


class Pipeline:
    """A loaded model, editor and expression directions, which edit any number of videos."""

    def __init__(self, model: FaceModel, editor: Editor,
                 expressions: ExpressionDirections | None = None,
                 progress: ProgressHook = no_progress, timer: StageTimer = untimed,
                 device: str | torch.device = "cpu"):
        self.model = model
        self.editor = editor
        self.expressions = expressions
        self.progress = progress
        self.timer = timer
        self.device = torch.device(device)  # where the optional face backends run
        self._identity_encoder: IdentityEncoder | None = None
        self._landmarker: FanLandmarker | None = None
        self._parser: FaceParser | None = None
        self._hair_segmenter: HairSegmenter | None = None

    @classmethod
    def from_weights(cls, folder: str | os.PathLike[str] | None = None, *,
                     editor: str = DEFAULT_EDITOR, steps: int = DEFAULT_STEPS,
                     refine: int = DEFAULT_REFINE, eta: float = DEFAULT_ETA, seed: int = 0,
                     device: str = "auto", precision: str = DEFAULT_PRECISION,
                     no_model: bool = False,
                     progress: ProgressHook = no_progress) -> Pipeline:
        """Load a weights folder (default: the bundled weights/, or $S3EDIT_WEIGHTS).

        `editor` moves the clip code (linear, lt or s3); `steps` and `refine` set DDIM
        inversion and decoding, `eta` and `seed` the fresh
        noise of stochastic decoding, `precision` the UNet's arithmetic (auto, bf16, fp32);
        `no_model` skips the autoencoder (tracking, alignment and paste-back only).
        """
        from s3edit.weights import default_weights_dir, resolve_device

        if editor not in EDITORS:
            raise UsageError(f"unknown editor {editor!r}: choose from {', '.join(EDITORS)}")
        path = Path(folder) if folder is not None else default_weights_dir()
        if not path.is_dir():
            raise S3EditError(f"weights folder {path} does not exist")
        model = load_face_model(path, steps=steps, refine=refine, device=device,
                                no_model=no_model, precision=precision, eta=eta, seed=seed)
        return cls(model, load_editor(path, editor), load_expressions(path), progress,
                   device=resolve_device(device))

    @property
    def identity_encoder(self) -> IdentityEncoder:
        if self._identity_encoder is None:
            self._identity_encoder = IdentityEncoder()
        return self._identity_encoder

    def landmarker(self, name: str) -> FanLandmarker | None:
        """The landmark backend `name` (EditOptions.landmarks), loaded once; None for
        mediapipe's own points."""
        if name == "fan" and self._landmarker is None:
            self._landmarker = FanLandmarker(self.device)
        return self._landmarker if name == "fan" else None

    def parser(self, name: str) -> FaceParser | None:
        """The face parser for mask `name` (EditOptions.mask), loaded once; None for the
        mesh's mask."""
        if name == "bisenet" and self._parser is None:
            self._parser = FaceParser(self.device)
        return self._parser if name == "bisenet" else None

    @property
    def hair_segmenter(self) -> HairSegmenter:
        if self._hair_segmenter is None:
            self._hair_segmenter = HairSegmenter()
        return self._hair_segmenter

    @staticmethod
    def redraws_hair(options: EditOptions, meshes: np.ndarray) -> bool:
        """Whether the edit decodes with fresh hair noise, for a face seen as `meshes`
        (T, 478, 2): as asked, or with "auto" where the face faces the camera."""
        return options.hair_noise == "fresh" or (options.hair_noise == "auto"
                                                 and faces_camera(meshes))

    @staticmethod
    def edit_guidance(options: EditOptions, meshes: np.ndarray) -> float:
        """The edit guidance a face seen as `meshes` (T, 478, 2) decodes with: as asked, or
        with "auto" TURNED_FACE_GUIDANCE where the face is turned aside short of a profile, 1
        (none) where it faces the camera or is seen in profile. Where eyeglasses are put on,
        "auto" is settled by the edit's first keyframes instead (`calibrates_guidance`)."""
        if options.guidance != "auto":
            return float(options.guidance)
        turned = FACING_TURN <= clip_head_turn(meshes) < PROFILE_TURN
        return TURNED_FACE_GUIDANCE if turned else 1.0

    @staticmethod
    def calibrates_guidance(options: EditOptions, meshes: np.ndarray) -> bool:
        """Whether "auto" takes the edit guidance of a face seen as `meshes` (T, 478, 2)
        from how its first keyframes draw the edit (`calibrated_guidance`): where eyeglasses
        are put on a face not seen in profile."""
        return (options.guidance == "auto" and options.attr == "Eyeglasses"
                and options.scale > 0 and clip_head_turn(meshes) < PROFILE_TURN)

    def check_edit(self, options: EditOptions) -> None:
        """Fail before any video is read, saying why, when the edit needs an identity editor
        whose weights are absent (an expression moves the landmarks instead; scale 0 needs
        no editor), or a face backend whose package or weights are (loading it here)."""
        self.landmarker(options.landmarks)
        self.parser(options.mask)
        is_expression = self.expressions is not None and self.expressions.holds(options.attr)
        if options.scale and not is_expression and isinstance(self.editor, UntrainedEditor):
            self.editor.edit(torch.zeros(0), options.attr, options.scale)  # raises, saying why

    def invert_face(self, frame: np.ndarray, lm68: np.ndarray
                    ) -> tuple[torch.Tensor, ModelInput, torch.Tensor]:
        """One frame's face on its own (preview, figures): the clip code of this frame alone,
        the model input and the latents."""
        sampler = ClipCodeSampler(self.identity_encoder, self.model.attributes)
        sampler.add(frame, lm68)
        code = sampler.clip_code()
        inputs = model_input([frame], [square_from_landmarks(lm68)], [lm68],
                             self.model.resolution)
        return code, inputs, self.model.encode(inputs.images, code, inputs.landmarks)

    def decode_face(self, code: torch.Tensor, inputs: ModelInput, latents: torch.Tensor,
                    attr: str, scale: float, hair: FoundHair | None = None,
                    clear_lenses: bool = False, guidance: float = 1.0) -> np.ndarray:
        """`invert_face`'s face as the edit leaves it, (R, R, 3) uint8: the crop plus what
        the edit changes (scale 0: the reconstruction); with `hair` (`find_hair`), decoded
        with fresh hair noise, with `clear_lenses` without the change's tint, and with the
        edit `guidance`, as apply does."""
        if hair is not None:
            latents = with_fresh_hair_noise(latents, hair.crop[None], hair_redraw_share(scale))
        edit = edit_codes(self.editor, self.expressions, code, attr, scale)
        edited, base = self.decode_change(latents, code, inputs.landmarks, edit,
                                          inputs.crops, decoded_base=False, guidance=guidance)
        change = edited.astype(np.float32) - base
        if clear_lenses:
            change = without_tint(change)
        if hair is not None:
            change = with_even_hair_tint(change, inputs.crops, hair.crop[None])
        return np.clip(inputs.crops[0] + change[0], 0, 255).round().astype(np.uint8)

    def find_hair(self, frame: np.ndarray, mesh: np.ndarray, square: np.ndarray) -> FoundHair:
        """The face's hair on the frame and in its aligned crop (see FoundHair)."""
        with self.timer("hair mask"):
            hair = self.hair_segmenter(frame, mesh)
            crop = align_crop(hair, square, HAIR_CROP, border=cv2.BORDER_CONSTANT)
            crop = (cv2.GaussianBlur(crop, (0, 0), HAIR_CROP / 100)
                    * crop_edge_fade(HAIR_CROP, HAIR_EDGE_FADE))
            return FoundHair(crop, hair.astype(np.uint8))

    def decode_change(self, latents: torch.Tensor, clip_code: torch.Tensor,
                      landmarks: torch.Tensor, edit: CodeEdit, crops: np.ndarray,
                      decoded_base: bool, guidance: float = 1.0
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The edited decode (under edit `guidance`) and what it is measured against, both
        uint8 (N, R, R, 3): the edit's change is their difference. The base is the input
        crops, since inversion and decoding are exact reverses (about 40 dB) and that saves the
        network passes of a decoded reconstruction, unless `decoded_base` asks for one or the
        model decodes with fresh noise (which the reconstruction then shares)."""
        with self.timer("model decode (edit)"):
            edited = to_uint8(self.model.decode(latents, edit.identity, edit.landmarks(landmarks),
                                                reference=(clip_code, landmarks),
                                                guidance=guidance))
        if self.model.exact_inverse and not decoded_base:
            return edited, crops
        with self.timer("model decode (recon)"):
            return edited, to_uint8(self.model.decode(latents, clip_code, landmarks))

    def run(self, video: VideoInfo | str | os.PathLike[str], output: str | os.PathLike[str],
            options: EditOptions) -> EditResult:
        """Edit one video into `output`; `video` is a path, or its VideoInfo when the caller
        has probed it already (probing a VFR or mkv/webm file decodes all of it)."""
        start = time.perf_counter()
        self.check_edit(options)
        info = video if isinstance(video, VideoInfo) else probe(video)
        # Built first: its checks (output exists, same file as the input...) fail fast.
        writer = VideoWriter(output, info, audio_from=info.path if options.audio else None,
                             crf=options.crf, encoder=options.encoder,
                             overwrite=options.overwrite)
        clip = self.analyse(info, options)
        tracked = time.perf_counter()
        guidance = self.render(info, clip, options, writer)
        done = time.perf_counter()
        track = clip.track
        turn = clip_head_turn(track.mesh)
        return EditResult(
            input=str(info.path), output=str(output), frames=track.frames,
            frames_with_face=track.frames_with_face, frames_filled=track.frames_filled,
            frames_passed_through=track.frames_passed_through, fps=str(info.fps),
            seconds=round(done - start, 3), attr=options.attr, scale=options.scale,
            guidance=guidance,
            hair_noise="fresh" if self.redraws_hair(options, track.mesh) else "inverted",
            head_turn=None if np.isnan(turn) else round(turn, 2),
            in_profile=bool(turn >= PROFILE_TURN),
            stage_seconds={"analyse": round(tracked - start, 3),
                           "render": round(done - tracked, 3)},
        )

    def _frames(self, info: VideoInfo, stage: str) -> Iterator[np.ndarray]:
        """The clip's frames, the wait for each timed under `stage` (ffmpeg decodes in its own
        process, in parallel: the wait is what the pipeline pays)."""
        frames = read_frames(info)
        try:
            while True:
                with self.timer(stage):
                    frame = next(frames, None)
                if frame is None:
                    return
                yield frame
        finally:
            frames.close()

    def analyse(self, info: VideoInfo, options: EditOptions) -> ClipAnalysis:
        """Pass 1: track one face through the clip and sample its clip code on a few evenly
        spread frames (see `ClipCodeSampler`)."""
        stride = max(1, info.frame_count // options.identity_frames)
        tracker = FaceTracker(face_index=options.face_index)
        sampler = ClipCodeSampler(self.identity_encoder, self.model.attributes)
        landmarker = self.landmarker(options.landmarks)
        track_stage = "track" if landmarker is None else "track + fan landmarks"
        advance = self.progress("tracking face", info.frame_count)
        with self.timer("load face detector"):
            detector = FaceDetector(video=True)
        with detector as detect:
            for t, frame in enumerate(self._frames(info, "decode (pass 1)")):
                with self.timer("detect + landmarks"):
                    faces = detect(frame)
                with self.timer(track_stage):
                    face = tracker.update(
                        faces, None if landmarker is None else partial(landmarker, frame))
                if face is not None and t % stride == 0:
                    with self.timer("identity embed"):
                        sampler.add(frame, face.lm68)
                advance(1)
        with self.timer("track"):
            track = tracker.finish(options.track)
        if not sampler.embeddings:  # the face showed only between the sampled frames: use its first
            first = int(np.flatnonzero(track.valid)[0])
            frame = next(f for t, f in enumerate(read_frames(info)) if t == first)
            sampler.add(frame, track.lm68[first])
        with self.timer("clip code"):
            code = sampler.clip_code()
        return ClipAnalysis(track=track, clip_code=code)

    def render(self, info: VideoInfo, clip: ClipAnalysis, options: EditOptions,
               writer: VideoWriter) -> float:
        """Pass 2: edit every tracked frame and write the video; returns the edit guidance
        the clip was decoded with."""
        edit = edit_codes(self.editor, self.expressions, clip.clip_code, options.attr,
                          options.scale)
        keys = self.keyframes(clip.track, options)
        fresh_hair = self.redraws_hair(options, clip.track.mesh)
        calibrating = self.calibrates_guidance(options, clip.track.mesh)
        guidance = 1.0 if calibrating else self.edit_guidance(options, clip.track.mesh)
        advance = self.progress("editing frames", info.frame_count)
        pending: list[tuple[int, np.ndarray]] = []
        last_key: tuple[int, np.ndarray] | None = None  # the latest keyframe and its delta

        def flush() -> None:
            nonlocal last_key, guidance, calibrating
            batch = self.prepare(pending, clip.track, keys, fresh_hair)
            latents = self.invert_keys(batch, clip, edit, options)
            if latents is not None:
                self.edit_keys(batch, latents, clip, edit, options, guidance)
                if calibrating:  # the first keyframes set the guidance of the whole clip
                    calibrating = False
                    keyframes = batch.keys
                    guidance = calibrated_guidance(
                        eye_change(batch.delta[keyframes], batch.inputs.landmarks[keyframes]),
                        options.scale)
                    if guidance != 1.0:
                        self.edit_keys(batch, latents, clip, edit, options, guidance)
            last_key = self.interpolate(batch, last_key)
            frames = self.paste(batch, clip.track, options)
            with self.timer("video encode"):
                for frame in frames:
                    writer.write(frame)
            advance(len(pending))

        with self.timer("video encode"):
            writer.__enter__()
        try:
            for t, frame in enumerate(self._frames(info, "decode (pass 2)")):
                pending.append((t, frame))
                # Flushed at a keyframe, so the frames before it have theirs on both sides.
                if keys[t] and sum(keys[i] for i, _ in pending) >= options.batch_size:
                    flush()
                    pending = []
            flush()
        except BaseException as error:
            writer.__exit__(type(error), error, error.__traceback__)  # removes the partial file
            raise
        with self.timer("video encode"):
            writer.__exit__(None, None, None)  # flush, mux the audio, rename into place
        return guidance

    def keyframes(self, track: FaceTrack, options: EditOptions) -> np.ndarray:
        """(T,) bool: the frames the model runs on (see `s3edit.keyframes`)."""
        landmarks = np.zeros((track.frames, 68, 2))
        for t in np.flatnonzero(track.valid):
            landmarks[t] = to_crop_coords(track.lm68[t], track.squares[t], 1)
        return select_keyframes(track.valid, landmarks, options.keyframe_every)

    def prepare(self, frames: list[tuple[int, np.ndarray]], track: FaceTrack,
                keys: np.ndarray, fresh_hair: bool = False) -> Batch:
        """The aligned crops and landmark codes of the frames with a tracked face, and with
        `fresh_hair` their hair masks."""
        todo = [(t, frame) for t, frame in frames if track.valid[t]]
        batch = Batch(frames, todo, np.array([keys[t] for t, _ in todo], bool))
        if batch.todo:
            with self.timer("align crop"):
                batch.inputs = model_input(
                    [frame for _, frame in batch.todo], [track.squares[t] for t, _ in batch.todo],
                    [track.lm68[t] for t, _ in batch.todo], self.model.resolution)
            batch.delta = np.zeros(batch.inputs.crops.shape, np.float32)
        if batch.todo and fresh_hair:
            batch.hair = [self.find_hair(frame, track.mesh[t], track.squares[t])
                          for t, frame in batch.todo]
        return batch

    def invert_keys(self, batch: Batch, clip: ClipAnalysis, edit: CodeEdit,
                    options: EditOptions) -> torch.Tensor | None:
        """The noise maps of the keyframes' crops under the clip's codes, with fresh noise
        under the hair where it is redrawn; None where there is nothing to edit."""
        if batch.inputs is None or not batch.keys.any():
            return None
        if options.blend != "plain" and not edit.changes(clip.clip_code):
            return None  # nothing to add: the frames stay as they were
        keys = batch.keys
        with self.timer("model encode (invert)"):
            latents = self.model.encode(batch.inputs.images[keys], clip.clip_code,
                                        batch.inputs.landmarks[keys])
        if batch.hair is not None:
            latents = with_fresh_hair_noise(latents, self.hair_masks(batch),
                                            hair_redraw_share(options.scale))
        return latents

    def edit_keys(self, batch: Batch, latents: torch.Tensor, clip: ClipAnalysis,
                  edit: CodeEdit, options: EditOptions, guidance: float = 1.0) -> None:
        """Decode the keyframes' noise maps under the edited codes (with edit `guidance`),
        and keep what the edit changed in each."""
        keys = batch.keys
        edited, base = self.decode_change(latents, clip.clip_code, batch.inputs.landmarks[keys],
                                          edit, batch.inputs.crops[keys],
                                          options.blend == "residual-decoded", guidance)
        delta = edited.astype(np.float32) - base
        if options.lenses == "clear":
            delta = without_tint(delta)
        if batch.hair is not None:
            delta = with_even_hair_tint(delta, batch.inputs.crops[keys], self.hair_masks(batch))
        batch.delta[keys] = delta

    @staticmethod
    def hair_masks(batch: Batch) -> np.ndarray:
        """(K, HAIR_CROP, HAIR_CROP) the hair found in each keyframe's aligned crop."""
        return np.stack([batch.hair[i].crop for i in np.flatnonzero(batch.keys)])

    def interpolate(self, batch: Batch, last_key: tuple[int, np.ndarray] | None
                    ) -> tuple[int, np.ndarray] | None:
        """Give the frames between keyframes the change interpolated from the keyframes on
        either side; returns the batch's last keyframe, the one before the next batch."""
        if batch.delta is None:
            return last_key
        with self.timer("interpolate"):
            frames = [t for t, _ in batch.todo]
            keys = ([last_key] if last_key is not None else []) + [
                (frames[i], batch.delta[i]) for i in np.flatnonzero(batch.keys)]
            right = 0
            for i in np.flatnonzero(~batch.keys):
                while keys[right][0] < frames[i]:
                    right += 1
                batch.delta[i] = interpolated_delta(frames[i], keys[right - 1], keys[right])
        return keys[-1]

    def paste(self, batch: Batch, track: FaceTrack, options: EditOptions
              ) -> list[np.ndarray]:
        """The batch's frames in order, each edited face pasted back through its mask."""
        edited: dict[int, np.ndarray] = {}
        parser = self.parser(options.mask)
        labels = None
        if parser is not None and batch.todo:
            with self.timer("face parsing"):
                labels = parser(np.stack([align_crop(frame, track.squares[t], parser.size)
                                          for t, frame in batch.todo]))
        for i, (t, frame) in enumerate(batch.todo):
            edited[t] = self.paste_face(frame, batch.inputs.crops[i], batch.delta[i],
                                        track.squares[t], track.mesh[t], options,
                                        None if labels is None else labels[i],
                                        None if batch.hair is None else batch.hair[i])
        return [edited.get(t, frame) for t, frame in batch.frames]

    def paste_face(self, frame: np.ndarray, crop: np.ndarray, delta: np.ndarray,
                   square: np.ndarray, mesh: np.ndarray, options: EditOptions,
                   labels: np.ndarray | None = None, hair: FoundHair | None = None
                   ) -> np.ndarray:
        """One frame with the edit's change `delta` to its aligned `crop` pasted back through
        the face mask (`labels`: the face parsing of the crop, for the parsed mask). A hair
        edit leaves the face within the oval's outer ring as it was, and where the hair was
        redrawn pastes through the found `hair` instead of the mesh's guess; the hair past the
        crop then takes the mean change of the hair along the crop's edge."""
        with self.timer("mask"):
            if labels is not None:
                mask = parsed_face_mask(labels, square, mesh, frame.shape[:2], attr=options.attr)
            elif hair is not None:  # the hair found, not the mesh's guess with background in it
                oval = face_mask(mesh, frame.shape[:2])
                ring = oval * (1 - face_mask(mesh, frame.shape[:2], dilate=-HAIR_EDIT_INNER_FACE))
                mask = np.maximum(ring, uncrop(hair.crop, square, frame.shape))
            else:
                mask = face_mask(mesh, frame.shape[:2], attr=options.attr)
                if hair_attribute(options.attr):  # the face within stays as it was here too
                    mask *= 1 - face_mask(mesh, frame.shape[:2], dilate=-HAIR_EDIT_INNER_FACE)
        with self.timer("paste back"):
            if options.blend == "plain":
                pasted = paste_back(frame, np.clip(crop + delta, 0, 255), square, mask)
            else:
                knee = ADAPTIVE_DETAIL_KNEE if options.blend == "adaptive" else None
                pasted = paste_back(frame, crop + delta, square, mask, reconstructed_crop=crop,
                                    replace_detail=knee, thin_lines=options.lenses == "clear")
        if hair is None:
            return pasted
        with self.timer("hair past the crop"):
            size = delta.shape[0]
            edge_hair = (cv2.resize(hair.crop, (size, size), interpolation=cv2.INTER_AREA)
                         * (1 - crop_edge_fade(size, HAIR_EDGE_BAND)))
            return extend_past_crop(pasted, delta, square, edge_hair, hair.frame,
                                    crop_edge_fade(HAIR_CROP, HAIR_EDGE_FADE))


def crop_edge_fade(size: int, share: float) -> np.ndarray:
    """(size, size) float32: 1 inside, falling to 0 over the outer `share` of each side."""
    edge = np.minimum(np.arange(size), np.arange(size)[::-1]) + 0.5
    ramp = np.clip(edge / (share * size), 0, 1).astype(np.float32)
    return np.outer(ramp, ramp)


def hair_redraw_share(scale: float) -> float:
    """How much of the hair's noise a hair edit of `scale` redraws (see with_fresh_hair_noise):
    in proportion to the edit's strength up to HAIR_FULL_REDRAW_SCALE, all of it from there."""
    return min(abs(scale) / HAIR_FULL_REDRAW_SCALE, 1.0)


def with_fresh_hair_noise(latents: torch.Tensor, hair: np.ndarray, share: float = 1.0
                          ) -> torch.Tensor:
    """The inverted noise maps (N, 3, R, R) with their hair, (N, S, S) masks of the aligned
    crops, redrawn: the inverted noise there holds the frame's hair colour, which the edited
    code then cannot change. One draw in crop coordinates serves every frame of every clip,
    so the hair is drawn alike from keyframe to keyframe. `share` < 1 redraws it in part, the
    two draws mixed at the angle share x 90 degrees so that the mix is still unit noise."""
    size = latents.shape[-1]
    fresh = torch.randn((1, *latents.shape[1:]), generator=torch.Generator().manual_seed(0))
    masks = np.stack([cv2.GaussianBlur(cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA),
                                       (0, 0), size / 40) for m in hair])
    m = torch.from_numpy(masks)[:, None].to(latents)
    angle = np.pi / 2 * share
    return (latents * (1 - m + m * np.cos(angle)) + fresh.to(latents) * m * np.sin(angle))


def without_tint(delta: np.ndarray) -> np.ndarray:
    """The changes (N, R, R, 3) of aligned crops less their broad part, a Gaussian blur of
    CLEAR_LENS_SIGMA pixels at 64 px: what is left of an eyeglasses edit is the rims, without
    the lens tint and the shading round the eyes."""
    sigma = CLEAR_LENS_SIGMA * delta.shape[1] / 64
    return np.stack([d - cv2.GaussianBlur(d, (0, 0), sigma) for d in delta])


def with_even_hair_tint(delta: np.ndarray, crops: np.ndarray, hair: np.ndarray,
                        spread: float = HAIR_TINT_SPREAD) -> np.ndarray:
    """The changes (N, R, R, 3) of the aligned `crops` with the colour (Lab a*, b*) they give
    the hair, (N, S, S) masks, held within `spread` of its median over that hair; lightness and
    everything outside the hair are left as they were."""
    evened = delta.copy()
    for i, (change, crop, mask) in enumerate(zip(delta, crops, hair, strict=True)):
        mask = cv2.resize(mask, change.shape[:2][::-1], interpolation=cv2.INTER_AREA)
        if (mask > 0.5).sum() < 20:  # too little hair for a median
            continue
        before = cv2.cvtColor(crop.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
        after = cv2.cvtColor(np.clip(crop + change, 0, 255).astype(np.float32) / 255,
                             cv2.COLOR_RGB2LAB)
        tint = after[..., 1:] - before[..., 1:]
        median = np.median(tint[mask > 0.5], axis=0)
        held = after.copy()
        held[..., 1:] += mask[..., None] * (median + np.clip(tint - median, -spread, spread)
                                            - tint)
        evened[i] += (cv2.cvtColor(held, cv2.COLOR_LAB2RGB)
                      - cv2.cvtColor(after, cv2.COLOR_LAB2RGB)) * 255
    return evened
