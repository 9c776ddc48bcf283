"""`s3edit preview`: one frame's original, reconstruction and edit, side by side."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from s3edit.edit.base import Editor
from s3edit.edit.expression import ExpressionDirections, edit_codes
from s3edit.errors import NoFaceError, S3EditError
from s3edit.face.align import align_crop, square_from_landmarks, to_crop_coords
from s3edit.face.identity import IdentityEncoder
from s3edit.face.landmarks import FaceDetector
from s3edit.model.codec import FaceCodec
from s3edit.model.codes import landmark_code
from s3edit.pipeline import ClipCodeSampler, to_uint8
from s3edit.video import probe, read_frames

PANEL = 256


def render_preview(video: Path, frame_number: int, attr: str, scale: float, codec: FaceCodec,
                   editor: Editor, output: Path,
                   expressions: ExpressionDirections | None = None) -> None:
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
    size = codec.resolution
    sampler = ClipCodeSampler(IdentityEncoder(), codec.attributes)
    sampler.add(frame, face.lm68)
    identity = sampler.clip_code()
    crop = align_crop(frame, square, size)
    landmarks = landmark_code(torch.from_numpy(to_crop_coords(face.lm68, square, size) / size))
    x0 = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    latents = codec.encode(x0, identity, landmarks[None])
    recon = to_uint8(codec.decode(latents, identity, landmarks[None]))[0]
    edit = edit_codes(editor, expressions, identity, attr, scale)
    edited = to_uint8(codec.decode(latents, edit.identity, edit.landmarks(landmarks[None]),
                                   reference=(identity, landmarks[None])))[0]

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
