"""`s3edit preview`: one frame's original, reconstruction and edit, side by side."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from s3edit.errors import NoFaceError, S3EditError
from s3edit.face.align import align_crop, square_from_landmarks, to_crop_coords
from s3edit.face.landmarks import FaceDetector
from s3edit.pipeline import Pipeline
from s3edit.video import probe, read_frames

PANEL = 256


def render_preview(video: Path, frame_number: int, attr: str, scale: float, pipeline: Pipeline,
                   output: Path) -> None:
    """Write a PNG of one frame: the original with its face box and landmarks, then the face
    as the model reconstructs it and as the edit decodes it."""
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
    recon = pipeline.decode_face(code, inputs, latents, attr, 0)
    edited = pipeline.decode_face(code, inputs, latents, attr, scale)

    annotated = align_crop(frame, square, PANEL)
    for x, y in to_crop_coords(face.lm68, square, PANEL):
        cv2.circle(annotated, (int(x), int(y)), 2, (0, 255, 0), -1)
    box = to_crop_coords(face.box.reshape(2, 2), square, PANEL).astype(int)
    cv2.rectangle(annotated, tuple(box[0]), tuple(box[1]), (255, 0, 0), 1)
    panels = [annotated] + [cv2.resize(img, (PANEL, PANEL), interpolation=cv2.INTER_CUBIC)
                            for img in (recon, edited)]
    strip = np.hstack(panels)
    for i, label in enumerate(["original", "reconstruction", f"{attr} {scale:+g}"]):
        cv2.putText(strip, label, (i * PANEL + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(output), strip[:, :, ::-1]):
        raise S3EditError(f"could not write {output}")
