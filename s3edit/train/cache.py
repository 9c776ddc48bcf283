"""Preprocessing cache: aligned crops, landmarks and identity codes, computed once per data set.

Faces go through the same detector and alignment as `s3edit apply`, so training sees the crops
that inference will. Results are written in shards of safetensors beside a JSON index; a run
that stops halfway resumes at the first missing shard.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from s3edit.face.align import align_crop, square_from_landmarks, to_crop_coords
from s3edit.face.identity import IdentityEncoder
from s3edit.face.landmarks import FaceDetector
from s3edit.progress import training_bar
from s3edit.storage import cache_root

CACHE_VERSION = 1
CROP_SIZE = 128  # side of the aligned crops the trainers cache


@dataclass
class FaceShard:
    """Aligned faces of one shard; coordinates are in the crop, scaled to [0, 1]."""

    crops: torch.Tensor  # (N, S, S, 3) uint8
    lm68: torch.Tensor  # (N, 68, 2) float32
    mesh: torch.Tensor  # (N, 478, 2) float16
    identity: torch.Tensor  # (N, 128) float32
    names: list[str]


def image_cache_dir(image_paths: Sequence[Path], size: int) -> Path:
    """A cache folder keyed by the exact list of inputs and the crop size."""
    key = hashlib.sha256(
        json.dumps([CACHE_VERSION, size, [str(Path(p).resolve()) for p in image_paths]]).encode()
    ).hexdigest()[:16]
    return cache_root() / "faces" / f"{Path(image_paths[0]).parent.name}-{size}px-{key}"


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.safetensors"


def _process_images(paths: Sequence[Path], size: int, detector: FaceDetector,
                    encoder: IdentityEncoder) -> FaceShard:
    crops, lm68s, meshes, images, frame_lms, names = [], [], [], [], [], []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        image = np.ascontiguousarray(image[:, :, ::-1])
        faces = detector(image)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.area)
        square = square_from_landmarks(face.lm68)
        crops.append(align_crop(image, square, size))
        lm68s.append(to_crop_coords(face.lm68, square, size) / size)
        meshes.append(to_crop_coords(face.mesh, square, size) / size)
        images.append(image)
        frame_lms.append(face.lm68)
        names.append(path.name)
    identity = encoder(images, frame_lms)
    return FaceShard(
        crops=torch.from_numpy(np.stack(crops)) if crops else torch.zeros(0, size, size, 3,
                                                                         dtype=torch.uint8),
        lm68=torch.from_numpy(np.asarray(lm68s, np.float32).reshape(-1, 68, 2)),
        mesh=torch.from_numpy(np.asarray(meshes, np.float16).reshape(-1, 478, 2)),
        identity=torch.from_numpy(identity),
        names=names,
    )


SHARD_SIZE = 500


def build_image_cache(image_paths: Sequence[Path], size: int, shards: Sequence[int] | None = None,
                      progress: bool = True) -> Path:
    """Preprocess images into the cache, shard by shard, skipping shards already there.

    Shard k holds images k*SHARD_SIZE onwards, so a training set and its held-out part are
    plain ranges of shards and can be built in any order, by several processes at once.
    """
    folder = image_cache_dir(image_paths, size)
    folder.mkdir(parents=True, exist_ok=True)
    if shards is None:
        shards = range((len(image_paths) + SHARD_SIZE - 1) // SHARD_SIZE)
    todo = [k for k in shards if not shard_path(folder, k).exists()]
    if todo:
        detector, encoder = FaceDetector(video=False), IdentityEncoder()
        with training_bar(enabled=progress) as bar:
            task = bar.add_task("preprocessing faces", total=len(todo) * SHARD_SIZE)
            for k in todo:
                chunk = image_paths[k * SHARD_SIZE:(k + 1) * SHARD_SIZE]
                _save_shard(_process_images(chunk, size, detector, encoder), shard_path(folder, k))
                bar.advance(task, SHARD_SIZE)
        detector.close()
    return folder


def split_shards(count: int, holdout: int) -> tuple[range, range]:
    """Training and held-out shard ranges: the last `holdout` images are never trained on."""
    assert holdout % SHARD_SIZE == 0 or count <= SHARD_SIZE, "holdout must be whole shards"
    total = math.ceil(count / SHARD_SIZE)
    held = math.ceil(holdout / SHARD_SIZE) if count > SHARD_SIZE else 0
    return range(0, total - held), range(total - held, total)


@dataclass
class CachedSplit:
    folder: Path  # the cache of aligned 128 px faces, built for both parts
    train: range  # shards trained on: the first, or enough for `limit` images
    held: range  # the held-out shards: the folder's last `holdout` images


def cached_split(image_paths: Sequence[Path], holdout: int, limit: int | None = None,
                 progress: bool = True) -> CachedSplit:
    """Split a folder's images into training and held-out shards and build the cache of
    both: what every trainer starts from."""
    train, held = split_shards(len(image_paths), holdout)
    if limit is not None:
        train = range(0, min(len(train), math.ceil(limit / SHARD_SIZE)))
    folder = build_image_cache(image_paths, CROP_SIZE, shards=[*train, *held], progress=progress)
    return CachedSplit(folder, train, held)


def _save_shard(shard: FaceShard, path: Path) -> None:
    tmp = path.with_suffix(".partial")
    save_file({"crops": shard.crops, "lm68": shard.lm68, "mesh": shard.mesh,
               "identity": shard.identity}, str(tmp), metadata={"names": json.dumps(shard.names)})
    os.replace(tmp, path)


def load_shards(folder: Path, shards: Sequence[int]) -> Iterator[FaceShard]:
    """The shards that exist among those asked for."""
    from safetensors import safe_open

    for path in (shard_path(folder, k) for k in shards):
        if not path.exists():
            continue
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            names = json.loads(f.metadata()["names"])
        yield FaceShard(tensors["crops"], tensors["lm68"], tensors["mesh"], tensors["identity"],
                        names)


def first_faces(shards: Iterable[FaceShard], count: int) -> list[FaceShard]:
    """The first `count` faces of cache shards, as shards."""
    out, left = [], count
    for shard in shards:
        if left <= 0:
            break
        out.append(FaceShard(shard.crops[:left], shard.lm68[:left], shard.mesh[:left],
                             shard.identity[:left], shard.names[:left]))
        left -= len(out[-1].crops)
    return out


def load_cache(folder: Path, shards: Sequence[int]) -> FaceShard:
    """The given shards of a cache folder, concatenated."""
    shards = list(load_shards(folder, shards))
    return FaceShard(
        crops=torch.cat([s.crops for s in shards]),
        lm68=torch.cat([s.lm68 for s in shards]),
        mesh=torch.cat([s.mesh for s in shards]),
        identity=torch.cat([s.identity for s in shards]),
        names=[n for s in shards for n in s.names],
    )

