"""A picture of what the edits do: clips (rows) x original and one edit per attribute (columns).

Each cell is one frame of the clip as `s3edit apply` writes it (the edit decoded, its change
added onto the frame through the soft face mask), cut around the face. Example:

    python scripts/edit_strip.py --clips CLIP1 CLIP2 CLIP3 --out docs/edit-strip.png \
        --edit eyeglasses:0.6 --edit blond_hair:0.6 --edit smiling:1.5 --edit young:-1.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from s3edit.face.align import align_crop, square_from_landmarks
from s3edit.face.landmarks import FaceDetector
from s3edit.options import DEFAULT_GUIDANCE, EditOptions
from s3edit.pipeline import Pipeline
from s3edit.preview import edit_frame
from s3edit.video import probe, read_frames

CELL = 256


def frame_at(video: Path, index: int) -> np.ndarray:
    info = probe(video)
    index = min(index, info.frame_count - 1)
    return next(f for t, f in enumerate(read_frames(info)) if t == index)


def face_cell(frame: np.ndarray, square: np.ndarray) -> np.ndarray:
    """The frame around the face: the alignment square grown by half, at CELL px, black
    beyond the frame's edge (a mirrored fill looks like part of the picture)."""
    grown = np.array(square, np.float64)
    grown[1:] *= 1.5  # rows: centre, x half-axis, y half-axis (vectors)
    return align_crop(frame, grown, CELL, border=cv2.BORDER_CONSTANT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=Path, nargs="+", required=True)
    p.add_argument("--edit", action="append", required=True, help="ATTR:SCALE")
    p.add_argument("--frame", type=int, default=30)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--editor", default="s3")
    p.add_argument("--guidance", default=DEFAULT_GUIDANCE, help="auto or a weight, as in apply")
    p.add_argument("--weights", type=Path, default=None)
    args = p.parse_args()
    edits = [EditOptions(e.split(":")[0], float(e.split(":")[1]), guidance=args.guidance)
             for e in args.edit]
    pipeline = Pipeline.from_weights(args.weights, editor=args.editor, device="cpu")
    rows = []
    with FaceDetector(video=False) as detect:
        for clip in args.clips:
            frame = frame_at(clip, args.frame)
            face = max(detect(frame), key=lambda f: f.area)
            square = square_from_landmarks(face.lm68)
            code, inputs, latents = pipeline.invert_face(frame, face.lm68)
            cells = [face_cell(frame, square)]
            for options in edits:
                _, edited, _ = edit_frame(pipeline, frame, face, code, inputs, latents, options)
                cells.append(face_cell(edited, square))
            rows.append(np.hstack(cells))
    strip = np.vstack(rows)
    labels = ["original"] + [f"{e.attr} {e.scale:+g}" for e in edits]
    for i, label in enumerate(labels):
        cv2.putText(strip, label, (i * CELL + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(str(args.out), strip[:, :, ::-1])
    print(args.out)


if __name__ == "__main__":
    main()
