"""`s3edit preview`: one frame's original, its reconstruction and edit at the model's
resolution, and the edited frame as `s3edit apply` writes it, side by side."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from s3edit.errors import NoFaceError, S3EditError
from s3edit.face.align import align_crop, square_from_landmarks, to_crop_coords
from s3edit.face.landmarks import Face, FaceDetector
from s3edit.model.guidance import calibrated_guidance, eye_change
from s3edit.model.inputs import ModelInput
from s3edit.options import EditOptions
from s3edit.pipeline import Pipeline
from s3edit.video import probe, read_frames

PANEL = 256
# The picture formats a preview is written in (OpenCV's writers).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def edit_frame(pipeline: Pipeline, frame: np.ndarray, face: Face, code: torch.Tensor,
               inputs: ModelInput, latents: torch.Tensor, options: EditOptions
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """One frame edited as `s3edit apply` edits it with these `options` (`code`, `inputs` and
    `latents` from `Pipeline.invert_face`): the edited crop at the model's resolution, the
    frame with what the edit changed pasted back through apply's mask for the attribute, and
    the edit guidance it was decoded with. At the model's resolution a spectacle rim is a
    pixel or two wide; in the frame it is seen at the frame's."""
    square = square_from_landmarks(face.lm68)
    meshes = face.mesh[None]
    hair = (pipeline.find_hair(frame, face.mesh, square)
            if pipeline.redraws_hair(options, meshes) else None)

    def decoded(guidance: float) -> np.ndarray:
        return pipeline.decode_face(code, inputs, latents, options.attr, options.scale, hair,
                                    clear_lenses=options.lenses == "clear", guidance=guidance)

    crop = inputs.crops[0].astype(np.float32)
    if pipeline.calibrates_guidance(options, meshes):  # as apply's first keyframes do
        edited = decoded(1.0)
        guidance = calibrated_guidance(eye_change((edited - crop)[None], inputs.landmarks),
                                       options.scale)
        if guidance != 1.0:
            edited = decoded(guidance)
    else:
        guidance = pipeline.edit_guidance(options, meshes)
        edited = decoded(guidance)
    parser = pipeline.parser(options.mask)
    labels = None if parser is None else parser(align_crop(frame, square, parser.size)[None])[0]
    in_frame = pipeline.paste_face(frame, crop, edited.astype(np.float32) - crop, square,
                                   face.mesh, options, labels, hair)
    return edited, in_frame, guidance


def render_preview(video: Path, frame_number: int, options: EditOptions, pipeline: Pipeline,
                   output: Path) -> None:
    """Write a PNG of one frame: the original with its face box and landmarks, the face as
    the model reconstructs it and as the edit of `options` decodes it, then the edited frame
    (the same cut as the original)."""
    info = probe(video)
    if frame_number >= info.frame_count:
        raise S3EditError(f"{video}: frame {frame_number} is past the end "
                          f"({info.frame_count} frames)")
    frame = next(f for t, f in enumerate(read_frames(info)) if t == frame_number)
    with FaceDetector(video=False) as detect:
        faces = detect(frame)
    if not faces:
        raise NoFaceError(f"{video}: no face in frame {frame_number}")
    face = max(faces, key=lambda f: f.area)
    square = square_from_landmarks(face.lm68)
    code, inputs, latents = pipeline.invert_face(frame, face.lm68)
    recon = pipeline.decode_face(code, inputs, latents, options.attr, 0)
    edited, edited_in_frame, guidance = edit_frame(pipeline, frame, face, code, inputs, latents,
                                                   options)

    annotated = align_crop(frame, square, PANEL)
    for x, y in to_crop_coords(face.lm68, square, PANEL):
        cv2.circle(annotated, (int(x), int(y)), 2, (0, 255, 0), -1)
    box = to_crop_coords(face.box.reshape(2, 2), square, PANEL).astype(int)
    cv2.rectangle(annotated, tuple(box[0]), tuple(box[1]), (255, 0, 0), 1)
    panels = [annotated] + [cv2.resize(img, (PANEL, PANEL), interpolation=cv2.INTER_CUBIC)
                            for img in (recon, edited)]
    panels.append(align_crop(edited_in_frame, square, PANEL))
    strip = np.hstack(panels)
    res = pipeline.model.resolution
    edit = f"{options.attr} {options.scale:+g}" + (f" w {guidance:g}" if guidance != 1 else "")
    labels = ["original", f"reconstruction ({res} px)", f"{edit} ({res} px)", "in the frame"]
    for i, label in enumerate(labels):
        cv2.putText(strip, label, (i * PANEL + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(output), strip[:, :, ::-1]):
        raise S3EditError(f"could not write {output}")
