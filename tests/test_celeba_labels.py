"""CelebA's Eyeglasses label made to mean clear spectacles (tinted lenses become undecided)."""

import cv2
import numpy as np
import torch
from helpers import real_mesh

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.face.mask import EYE_LEFT, EYE_RIGHT
from s3edit.train.celeba import clear_eyeglasses, tinted_lenses

SIZE = 700  # real_mesh's frame


def face(eye_grey: int) -> np.ndarray:
    """A skin-coloured frame with both eyes (the mesh's eye hulls) painted `eye_grey`."""
    image = np.full((SIZE, SIZE, 3), (200, 160, 140), np.uint8)
    mesh = real_mesh()
    for eye in (EYE_LEFT, EYE_RIGHT):
        cv2.fillConvexPoly(image, cv2.convexHull(mesh[eye].astype(np.int32)),
                           (eye_grey,) * 3)
    return image


def test_dark_eyes_are_tinted_lenses_and_lose_their_eyeglasses_label():
    crops = torch.from_numpy(np.stack([face(20), face(150), face(20)]))
    mesh = torch.from_numpy(real_mesh() / SIZE).expand(3, -1, -1)
    assert tinted_lenses(crops, mesh).tolist() == [True, False, True]

    column = ATTRIBUTES.index("Eyeglasses")
    labels = torch.zeros(3, len(ATTRIBUTES))
    labels[:2, column] = 1  # sunglasses, clear glasses, and dark eyes without glasses
    labels[:, 0] = 1
    cleared = clear_eyeglasses(labels, crops, mesh)
    assert cleared[:, column].tolist() == [0.5, 1.0, 0.0]
    assert torch.equal(cleared[:, :column], labels[:, :column])  # nothing else moves
    assert labels[0, column] == 1  # the caller's labels are left as they were
