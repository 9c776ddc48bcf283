"""The CelebAMask-HQ layout: CelebA-HQ-img/{0..29999}.jpg and the 40-attribute file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.errors import UsageError
from s3edit.face.mask import EYE_LEFT, EYE_RIGHT

ANNOTATION_FILE = "CelebAMask-HQ-attribute-anno.txt"


def celeba_images(folder: Path) -> list[Path]:
    """The images of a CelebAMask-HQ layout (or a plain folder) in index order."""
    images = folder / "CelebA-HQ-img" if (folder / "CelebA-HQ-img").is_dir() else folder
    paths = [p for p in images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
    if not paths:
        raise UsageError(f"{folder}: no .jpg/.png images (expected a CelebAMask-HQ layout)")
    return sorted(paths, key=lambda p: (int(p.stem) if p.stem.isdigit() else 1 << 30, p.name))


def celeba_labels(folder: Path) -> dict[str, torch.Tensor]:
    """File name -> (40,) float labels in {0, 1}, columns in ATTRIBUTES order."""
    path = folder / ANNOTATION_FILE
    if not path.exists():
        raise UsageError(f"{folder}: no {ANNOTATION_FILE} (attribute labels)")
    lines = path.read_text().splitlines()
    names = lines[1].split()
    columns = [names.index(a) for a in ATTRIBUTES]
    labels = {}
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == len(names) + 1:
            values = torch.tensor([float(parts[1 + c]) for c in columns])
            labels[parts[0]] = (values > 0).float()
    return labels


# Mesh vertices of the cheeks just below each eye, the skin the lenses are compared with.
CHEEK_LEFT = [425, 280, 411, 427, 436, 432]
CHEEK_RIGHT = [205, 50, 187, 207, 216, 212]
# Eyes this many times as bright as the cheeks or darker: tinted lenses. On CelebA-HQ's
# eyeglasses faces (images 0-15,999) the ratio's median is 0.40; under 0.3 (38% of them) are
# sunglasses, over 0.45 clear spectacles, by eye.
TINTED_RATIO = 0.3


def tinted_lenses(crops: torch.Tensor, mesh: torch.Tensor) -> torch.Tensor:
    """(N,) bool: faces whose eyes are at most TINTED_RATIO as bright as their cheeks.

    crops (N, S, S, 3) uint8 aligned faces, mesh (N, 478, 2) in crop units.
    """
    def mean_luminance(luminance: np.ndarray, points: np.ndarray) -> float:
        region = np.zeros(luminance.shape, np.uint8)
        cv2.fillConvexPoly(region, cv2.convexHull(points.astype(np.int32)), 1)
        return float(luminance[region > 0].mean()) if region.any() else float("nan")

    tinted = []
    for crop, points in zip(crops.numpy(), mesh.float().numpy() * crops.shape[1], strict=True):
        luminance = crop.astype(np.float32).mean(-1)
        eyes = np.mean([mean_luminance(luminance, points[EYE_LEFT]),
                        mean_luminance(luminance, points[EYE_RIGHT])])
        cheeks = np.mean([mean_luminance(luminance, points[CHEEK_LEFT]),
                          mean_luminance(luminance, points[CHEEK_RIGHT])])
        tinted.append(eyes <= TINTED_RATIO * max(cheeks, 1.0))
    return torch.tensor(tinted, dtype=torch.bool)


def clear_eyeglasses(labels: torch.Tensor, crops: torch.Tensor, mesh: torch.Tensor
                     ) -> torch.Tensor:
    """CelebA's Eyeglasses label made to mean clear spectacles: 0.5 (undecided) where the
    lenses are tinted. CelebA counts sunglasses as eyeglasses; a decoder trained on that label
    draws its average, dark lenses over the eyes, where a user asking for eyeglasses expects
    frames around them."""
    column = ATTRIBUTES.index("Eyeglasses")
    wearing = torch.nonzero(labels[:, column] > 0.5).flatten()
    labels = labels.clone()
    labels[wearing[tinted_lenses(crops[wearing], mesh[wearing])], column] = 0.5
    return labels
