"""Evaluate an edited clip against its original: identity, temporal consistency, fidelity,
locality; one pair, or a folder of pairs; as a dict (JSON-ready), a text table or an HTML report.

Both clips are decoded from their files and the face is tracked in each on its own, so the
numbers describe the output as a viewer gets it (after encoding), not the pipeline's internals.
"""

from __future__ import annotations

import math
import re
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s3edit.edit.attributes import resolve_attribute
from s3edit.errors import S3EditError, UsageError
from s3edit.face.align import align_crop
from s3edit.face.identity import EMBED_DIM, IdentityEncoder
from s3edit.face.mask import attribute_region
from s3edit.metrics.attributes import CROP_SIZE, ImageAttributeClassifier, load_image_classifier
from s3edit.metrics.fidelity import (
    NOISE_FLOOR,
    attribute_changes,
    change_inside,
    locality,
)
from s3edit.metrics.identity import (
    embed_tracked,
    identity_similarity,
    sampled,
    temporal_identity,
    track_face,
)
from s3edit.progress import ProgressHook, no_progress
from s3edit.video import VIDEO_SUFFIXES, probe, read_frames
from s3edit.weights import default_weights_dir

SUMMARY_KEYS = ("identity", "tl_id", "tg_id", "target_change", "off_target_change", "locality")


def default_image_classifier_dir() -> Path | None:
    """WEIGHTS/image_classifier if it holds a trained classifier (see `train_image_classifier`)."""
    folder = default_weights_dir() / "image_classifier"
    return folder if (folder / "config.json").exists() else None


class _Probabilities:
    """Attribute probabilities of crops, computed in batches as frames stream past."""

    def __init__(self, model: ImageAttributeClassifier, rows: int, batch_size: int = 32):
        self.model, self.batch_size = model, batch_size
        self.values = np.full((rows, len(model.config.attributes)), np.nan, np.float32)
        self._crops: list[np.ndarray] = []
        self._rows: list[int] = []

    def add(self, row: int, crop: np.ndarray) -> None:
        self._crops.append(crop)
        self._rows.append(row)
        if len(self._crops) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self._crops:
            self.values[self._rows] = self.model.probabilities(np.stack(self._crops))
        self._crops, self._rows = [], []


def evaluate_pair(original: Path, edited: Path, attr: str, *,
                  image_classifier_dir: Path | None = None, every: int = 1,
                  face_index: int | None = None, device: str = "cpu",
                  noise_floor: float = NOISE_FLOOR,
                  progress: ProgressHook | None = None) -> dict:
    """All metrics of one edited clip against its original, on every `every`-th frame.

    Without `image_classifier_dir` the default folder is tried (`default_image_classifier_dir`);
    if there is none, the fidelity numbers are None. NaN values come back as None. Summary keys
    are SUMMARY_KEYS plus `frames` (compared: the shorter clip's count; `frames_original` and
    `frames_edited` are the two counts) and `pixel_change`;
    `attribute_changes` maps each attribute to its mean signed change; `per_frame` holds the
    curves the report plots. Raises NoFaceError if either clip shows no face at all.
    """
    progress = progress or no_progress
    attr = resolve_attribute(attr)
    if image_classifier_dir is not None:
        image_classifier_dir = Path(image_classifier_dir)
        if not (image_classifier_dir / "config.json").exists():
            raise UsageError(f"{image_classifier_dir}: not an image classifier folder "
                             "(no config.json)")
    classifier_dir = image_classifier_dir or default_image_classifier_dir()
    info_o, info_e = probe(original), probe(edited)
    if info_o.frame_shape != info_e.frame_shape:
        raise S3EditError(f"{edited}: frames are {info_e.display_width}x{info_e.display_height}, "
                          f"the original's {info_o.display_width}x{info_o.display_height}")
    frames = min(info_o.frame_count, info_e.frame_count)
    track_o = track_face(info_o, face_index, progress, "tracking original")
    track_e = track_face(info_e, face_index, progress, "tracking edited")

    indices = sampled(frames, every)
    region = attribute_region(attr)
    encoder = IdentityEncoder()
    emb_o, emb_e = (np.full((len(indices), EMBED_DIM), np.nan, np.float32) for _ in range(2))
    inside, total = (np.full(len(indices), np.nan) for _ in range(2))
    model = None if classifier_dir is None else load_image_classifier(classifier_dir, device)
    probs_o, probs_e = ((None, None) if model is None else
                        (_Probabilities(model, len(indices)), _Probabilities(model, len(indices))))

    advance = progress("measuring", frames)
    with closing(read_frames(info_o)) as frames_o, closing(read_frames(info_e)) as frames_e:
        # zip stops at the shorter clip: frames beyond it have nothing to compare with.
        for t, (fo, fe) in enumerate(zip(frames_o, frames_e, strict=False)):
            if t >= frames:  # more frames than probed: the arrays end at the probed count
                break
            advance(1)
            if t % every:
                continue
            k = t // every
            emb_o[k] = embed_tracked(encoder, fo, track_o, t)
            emb_e[k] = embed_tracked(encoder, fe, track_e, t)
            if track_o.valid[t]:
                inside[k], total[k] = change_inside(fo, fe, track_o.mesh[t], region, noise_floor)
            if probs_o is not None and track_o.valid[t] and track_e.valid[t]:
                probs_o.add(k, align_crop(fo, track_o.squares[t], CROP_SIZE))
                probs_e.add(k, align_crop(fe, track_e.squares[t], CROP_SIZE))

    similarity = identity_similarity(emb_o, emb_e)
    tl_id, tg_id = temporal_identity(emb_o, emb_e)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame_locality = np.where(total > 0, inside / total, np.nan)
    target_o = target_e = np.full(len(indices), np.nan)
    target_change = off_target_change = math.nan
    changes: dict[str, float | None] = {}
    if model is not None:
        probs_o.flush()
        probs_e.flush()
        index = model.index(attr)
        target_o, target_e = probs_o.values[:, index], probs_e.values[:, index]
        target_change, off_target_change, per_attribute = attribute_changes(
            probs_o.values, probs_e.values, index)
        changes = {a: _number(c) for a, c in
                   zip(model.config.attributes, per_attribute, strict=True)}
    with_face = np.isfinite(similarity)
    with_mesh = np.isfinite(total)
    height, width, _ = info_o.frame_shape
    return {
        "original": str(original), "edited": str(edited), "attr": attr, "region": region,
        "frames": frames, "frames_original": info_o.frame_count,
        "frames_edited": info_e.frame_count, "every": every, "frames_sampled": len(indices),
        "frames_with_face": int(with_face.sum()),
        "identity": _number(np.mean(similarity[with_face]) if with_face.any() else math.nan),
        "tl_id": _number(tl_id), "tg_id": _number(tg_id),
        "target_change": _number(target_change),
        "off_target_change": _number(off_target_change),
        "attribute_changes": changes,
        "locality": _number(locality(inside, total)),
        # Locality of a change lost in codec noise means little: this says how big it was.
        "pixel_change": _number(np.nanmean(total) / (height * width) if with_mesh.any()
                                else math.nan),
        "image_classifier": None if classifier_dir is None else str(classifier_dir),
        "per_frame": {
            "frame": indices.tolist(),
            "identity": _numbers(similarity),
            "target_original": _numbers(target_o),
            "target_edited": _numbers(target_e),
            "locality": _numbers(frame_locality),
        },
    }


def _number(value: float) -> float | None:
    """JSON-ready: rounded, NaN as None."""
    return round(float(value), 4) if math.isfinite(value) else None


def _numbers(values: np.ndarray) -> list[float | None]:
    return [_number(v) for v in values]


# --- A folder of pairs ----------------------------------------------------------------------

# `s3edit apply --out-dir` names outputs `{stem}.{attr.lower()}{scale:+g}.mp4`.
EDITED_NAME = re.compile(r"^(?P<stem>.+)\.(?P<attr>[a-z0-9_]+)(?P<scale>[+-](?:inf|nan|[0-9.e+-]+))"
                         r"\.mp4$")


@dataclass
class SuitePair:
    edited: Path
    original: Path | None  # None when no original with the stem lies beside it
    attr: str
    scale: float


def find_pairs(folder: Path) -> list[SuitePair]:
    """Edited clips `NAME.ATTR+SCALE.mp4` of a folder, each with its original `NAME.<video>`.

    A file whose name has that shape but no attribute of the 40 is taken for an original.
    """
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    pairs = []
    for path in sorted(folder.iterdir()):
        match = EDITED_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        try:
            attr, scale = resolve_attribute(match["attr"]), float(match["scale"])
        except (UsageError, ValueError):
            continue
        originals = [folder / f"{match['stem']}{s}" for s in VIDEO_SUFFIXES]
        original = next((p for p in originals if p.is_file()), None)
        pairs.append(SuitePair(edited=path, original=original, attr=attr, scale=scale))
    return pairs


def evaluate_suite(folder: Path, *, image_classifier_dir: Path | None = None, every: int = 1,
                   face_index: int | None = None, device: str = "cpu",
                   progress: ProgressHook | None = None) -> list[dict]:
    """`evaluate_pair` over every pair of `find_pairs(folder)`, one row each.

    Rows add `name` and `scale`; a pair that cannot be measured (no original, no face,
    unreadable video) gets an `error` message instead of numbers, and the others still run.
    """
    rows = []
    for pair in find_pairs(folder):
        row: dict = {"name": pair.edited.name, "attr": pair.attr, "scale": pair.scale}
        if pair.original is None:
            stem = EDITED_NAME.match(pair.edited.name)["stem"]
            row["error"] = f"no original {stem}.mp4 (or other video) beside it"
        else:
            try:
                row.update(evaluate_pair(pair.original, pair.edited, pair.attr,
                                         image_classifier_dir=image_classifier_dir, every=every,
                                         face_index=face_index, device=device,
                                         progress=progress))
            except S3EditError as error:
                row["error"] = str(error)
        rows.append(row)
    return rows
