"""Load an editor by name from a weights folder."""

from __future__ import annotations

from pathlib import Path

import torch

from s3edit.edit.base import Editor
from s3edit.errors import S3EditError


class UntrainedEditor:
    """Stands in for an editor whose weights are absent: only the no-op edit (scale 0) works."""

    def __init__(self, name: str, folder: Path):
        self.name = name
        self.folder = folder

    def edit(self, identity: torch.Tensor, attr: str, scale: float) -> torch.Tensor:
        if scale == 0:
            return identity
        raise S3EditError(f"no weights for the {self.name!r} editor in {self.folder}; train "
                          f"them with `s3edit train editor --editor {self.name}`")


def load_editor(weights_dir: Path, name: str) -> Editor:
    from s3edit.edit.classifier import LatentAttributeClassifier
    from s3edit.edit.linear import LinearEditor

    classifier = weights_dir / "editors" / "classifier"
    if name == "linear" and (classifier / "config.json").exists():
        return LinearEditor(LatentAttributeClassifier.from_pretrained(classifier))
    return UntrainedEditor(name, weights_dir / "editors" / name)
