"""Load an editor by name, and the expression directions, from a weights folder."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors import safe_open

from s3edit.edit.base import Editor
from s3edit.edit.expression import ExpressionDirections
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
    """linear needs editors/classifier; lt and s3 need it and editors/lt or editors/s3."""
    from s3edit.edit.classifier import LatentAttributeClassifier
    from s3edit.edit.linear import LinearEditor
    from s3edit.edit.lt import LatentTransformer, LatentTransformerEditor
    from s3edit.edit.s3 import S3Editor, S3Transform

    editors = weights_dir / "editors"
    classifier = editors / "classifier"
    own = editors / name
    if not (classifier / "config.json").exists():
        return UntrainedEditor(name, own)
    if name == "linear":
        return LinearEditor(LatentAttributeClassifier.from_pretrained(classifier))
    kinds = {"lt": (LatentTransformer, LatentTransformerEditor), "s3": (S3Transform, S3Editor)}
    if name in kinds and (own / "config.json").exists():
        model, editor = kinds[name]
        return editor(model.from_pretrained(own),
                      LatentAttributeClassifier.from_pretrained(classifier))
    return UntrainedEditor(name, own)


def load_expressions(weights_dir: Path) -> ExpressionDirections | None:
    """editors/expression, or None when absent (expressions then go to the identity editor)."""
    folder = weights_dir / "editors" / "expression"
    if not (folder / "config.json").exists():
        return None
    with safe_open(folder / SAFETENSORS_WEIGHTS_NAME, "pt") as weights:
        if "limits" not in weights.keys():  # fitted before the limits were kept
            raise S3EditError(f"{folder} has no expression limits; fit them again with "
                              "`s3edit train expression`")
    return ExpressionDirections.from_pretrained(folder).eval()
