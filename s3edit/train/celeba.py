"""The CelebAMask-HQ layout: CelebA-HQ-img/{0..29999}.jpg and the 40-attribute file."""

from __future__ import annotations

from pathlib import Path

import torch

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.errors import UsageError

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
