"""Follow one face through a clip and turn its landmarks into smoothed alignment squares.

The caller runs the detector and feeds `FaceTracker.update` one frame at a time, so a clip is
streamed once and only landmarks are kept (about 4 KB a frame), never images. `finish` then
fills short gaps, smooths each run of frames that will be edited, and says which frames pass
through unedited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from s3edit.errors import NoFaceError, S3EditError
from s3edit.face.align import smooth_squares, square_from_landmarks
from s3edit.face.landmarks import Face
from s3edit.options import TrackOptions


@dataclass
class FaceTrack:
    """Per-frame landmarks and squares of the tracked face.

    Frames that pass through (`valid` False) hold NaN in `squares`, `mesh` and `lm68`, so that
    using them by mistake fails loudly instead of cropping a made-up place.
    """

    squares: np.ndarray  # (T, 3, 2) float64 [centre, x, y], smoothed within each valid run
    mesh: np.ndarray  # (T, 478, 2) float32, detected or interpolated
    lm68: np.ndarray  # (T, 68, 2) float32: each face's `Face.lm68`, the squares' source
    valid: np.ndarray  # (T,) bool: frames that will be edited
    frames: int
    frames_with_face: int  # the face was detected
    frames_filled: int  # short gaps between detections, interpolated
    frames_passed_through: int  # left unedited: long gaps, before the first or after the last


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


class FaceTracker:
    """Picks one face on the first frame that has any, then follows it by box overlap.

    `face_index=None` picks the largest face; `face_index=N` the N-th counted from the left
    (by box centre). Later frames take the detection overlapping the last tracked box best;
    under `iou_threshold` the frame counts as without the face. The last box is the last one
    matched, so after a loss the face is found again only where it was lost.
    """

    def __init__(self, face_index: int | None = None, iou_threshold: float = 0.3):
        if face_index is not None and face_index < 0:
            raise S3EditError(f"face index must be 0 or more, got {face_index}")
        self.face_index = face_index
        self.iou_threshold = iou_threshold
        self._meshes: list[np.ndarray | None] = []
        self._lm68: list[np.ndarray | None] = []
        self._last_box: np.ndarray | None = None

    def update(self, faces: list[Face], refine: Callable[[Face], Face] | None = None
               ) -> Face | None:
        """Record one frame's detections; returns the tracked face, or None if not found.

        `refine` refits the tracked face's 68 landmarks (FAN), run on that face alone.
        """
        face = self._pick(faces)
        if face is not None:
            self._last_box = face.box
            if refine is not None:
                face = refine(face)
        self._meshes.append(None if face is None else np.asarray(face.mesh, np.float32))
        self._lm68.append(None if face is None else np.asarray(face.lm68, np.float32))
        return face

    def _pick(self, faces: list[Face]) -> Face | None:
        if not faces:
            return None
        if self._last_box is None:
            if self.face_index is None:
                return max(faces, key=lambda f: f.area)
            if self.face_index >= len(faces):
                raise S3EditError(
                    f"face index {self.face_index} is out of range: {len(faces)} face(s) found "
                    f"on the first frame with faces (frame {len(self._meshes)}), numbered from "
                    "0 left to right")
            by_x = sorted(faces, key=lambda f: f.box[0] + f.box[2])
            return by_x[self.face_index]
        ious = [box_iou(self._last_box, f.box) for f in faces]
        best = int(np.argmax(ious))
        return faces[best] if ious[best] >= self.iou_threshold else None

    def finish(self, options: TrackOptions | None = None) -> FaceTrack:
        """Build the track: fill short gaps, smooth each valid run (see `TrackOptions`)."""
        options = options or TrackOptions()
        frames = len(self._meshes)
        detected = np.array([m is not None for m in self._meshes], dtype=bool)
        if not detected.any():
            raise NoFaceError(f"no face found in any of the {frames} frames")

        n_points = next(m for m in self._meshes if m is not None).shape[0]
        mesh = np.full((frames, n_points, 2), np.nan, np.float32)
        lm68 = np.full((frames, 68, 2), np.nan, np.float32)
        squares = np.full((frames, 3, 2), np.nan, np.float64)
        hits = np.flatnonzero(detected)
        mesh[hits] = np.stack([self._meshes[i] for i in hits])
        lm68[hits] = np.stack([self._lm68[i] for i in hits])
        squares[hits] = [square_from_landmarks(lm) for lm in lm68[hits]]

        valid = detected.copy()
        for a, b in zip(hits[:-1], hits[1:], strict=True):
            if 1 < b - a <= options.max_gap + 1:
                t = ((np.arange(a + 1, b) - a) / (b - a))[:, None, None]
                mesh[a + 1:b] = (1 - t) * mesh[a] + t * mesh[b]
                lm68[a + 1:b] = (1 - t) * lm68[a] + t * lm68[b]
                squares[a + 1:b] = (1 - t) * squares[a] + t * squares[b]
                valid[a + 1:b] = True

        # Smooth each run on its own: a passed-through gap may hide a cut or a jump.
        for start, stop in _runs(valid):
            squares[start:stop] = smooth_squares(squares[start:stop], options.sigma_centre,
                                                  options.sigma_xy)

        n_valid = int(valid.sum())
        return FaceTrack(
            squares=squares, mesh=mesh, lm68=lm68, valid=valid, frames=frames,
            frames_with_face=int(detected.sum()), frames_filled=n_valid - int(detected.sum()),
            frames_passed_through=frames - n_valid)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))
