"""Resolve `--data` values: a folder, or a data set name looked up under a data root.

Two kinds of data feed the editors: labelled face images (the CelebAMask-HQ layout) and
folders of videos (VoxCeleb-style clips: each clip is one person; unlabelled).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from s3edit.errors import UsageError
from s3edit.train.celeba import ANNOTATION_FILE
from s3edit.video import VIDEO_SUFFIXES

# Folder names each data set goes by under the data root, in the order they are tried.
DATASET_FOLDERS = {
    "celebahq": ("CelebAMask-HQ", "CelebAMask-HQ-128", "celebahq", "CelebA-HQ"),
    "voxceleb": ("voxceleb", "VoxCeleb", "voxceleb2", "VoxCeleb2", "videos"),
}


def data_root() -> Path:
    return Path(os.environ.get("S3EDIT_DATA_ROOT", "data"))


def resolve_data(value: str) -> Path:
    """An existing folder as given, else a data set name under $S3EDIT_DATA_ROOT."""
    path = Path(value)
    if path.is_dir():
        return path
    names = DATASET_FOLDERS.get(value.lower())
    if names is None:
        raise UsageError(f"--data {value}: no such folder, and not a data set name "
                         f"({', '.join(DATASET_FOLDERS)})")
    root = data_root()
    for name in names:
        if (root / name).is_dir():
            return root / name
    looked = ", ".join(str(root / n) for n in names)
    raise UsageError(f"--data {value}: looked for {looked}; set S3EDIT_DATA_ROOT to the folder "
                     "that holds it")


def is_labelled_faces(folder: Path) -> bool:
    return (folder / ANNOTATION_FILE).exists()


def has_videos(folder: Path) -> bool:
    return any(p.suffix.lower() in VIDEO_SUFFIXES for p in folder.rglob("*"))


@dataclass
class EditorData:
    """The labelled face folder (needed for the classifiers and held-out figures) and any
    folders of videos whose frames add unlabelled codes."""

    faces: Path
    videos: list[Path] = field(default_factory=list)


def editor_data(values: list[str]) -> EditorData:
    faces, videos = None, []
    for value in values:
        folder = resolve_data(value)
        if is_labelled_faces(folder):
            faces = folder
        elif has_videos(folder):
            videos.append(folder)
        else:
            raise UsageError(f"--data {value} ({folder}): neither a CelebAMask-HQ layout (no "
                             f"{ANNOTATION_FILE}) nor a folder of videos")
    if faces is None:  # videos alone carry no labels: take the labelled set from the data root
        try:
            faces = resolve_data("celebahq")
        except UsageError as error:
            raise UsageError(f"the editors need labelled faces besides videos: {error}") from None
    return EditorData(faces, videos)
