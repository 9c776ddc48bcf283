"""Face detection and landmarks with mediapipe's face mesh, whose weights ship inside the wheel.

Each face comes back as the 478-point mesh (for masks) and the 68 points of the iBUG layout
derived from it (for FFHQ alignment and the model's landmark code), unless another landmark
model has fitted its own 68 (`--landmarks fan`, s3edit/face/backends.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

# mediapipe mesh vertices that sit where the 68 iBUG points do; pairs are averaged.
_MESH_TO_68: list[tuple[int, ...]] = [
    # jaw 0-16
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,), (379,),
    (365,), (397, 288), (361,), (323,), (454,), (356,),
    # brows 17-26
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    # nose 27-35
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # eyes 36-47
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59, inner lips 60-67
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
]


@dataclass
class Face:
    """One detected face, in pixel coordinates of the image it was found in."""

    mesh: np.ndarray  # (478, 2) float32, x then y
    # (68, 2) float32 iBUG points fitted by another model (FAN); None: derived from the mesh
    points68: np.ndarray | None = None

    @property
    def lm68(self) -> np.ndarray:
        return landmarks68(self.mesh) if self.points68 is None else self.points68

    @property
    def box(self) -> np.ndarray:
        """Axis-aligned box (x0, y0, x1, y1) around the mesh."""
        return np.concatenate([self.mesh.min(0), self.mesh.max(0)])

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return float((x1 - x0) * (y1 - y0))


def landmarks68(mesh: np.ndarray) -> np.ndarray:
    """The 68 iBUG points (68, 2) from a 478-point mesh (or a batch of meshes, (..., 478, 2))."""
    return np.stack([mesh[..., list(ids), :].mean(-2) for ids in _MESH_TO_68], axis=-2)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Mute what C++ code writes straight to file descriptor 2.

    mediapipe's TF Lite and absl print set-up chatter there, bypassing Python's logging; our
    progress and error lines share that stream.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceDetector:
    """Finds up to `max_faces` faces per RGB frame.

    `video=True` lets mediapipe track between consecutive frames instead of detecting anew on
    each one: faster and steadier on clips; use `video=False` for unrelated images.
    """

    def __init__(self, max_faces: int = 4, video: bool = True, min_confidence: float = 0.5):
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp

        with native_stderr_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not video,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
            # The graph starts (and logs) on its first frame: run a blank one while muted.
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))

    def __call__(self, frame: np.ndarray) -> list[Face]:
        h, w = frame.shape[:2]
        # Its worker threads log at unpredictable first events (first frame, first face...).
        with native_stderr_silenced():
            result = self._mesh.process(np.ascontiguousarray(frame))
        if not result.multi_face_landmarks:
            return []
        faces = []
        for landmarks in result.multi_face_landmarks:
            xy = np.array([(p.x * w, p.y * h) for p in landmarks.landmark], dtype=np.float32)
            faces.append(Face(mesh=xy))
        return faces

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
