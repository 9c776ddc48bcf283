"""A training set packed into one small file: what `s3edit train autoencoder` reads from a
CelebAMask-HQ folder's preprocessing cache, for a machine that has neither the folder nor the
face stack (mediapipe, dlib) that builds the cache, such as a lent GPU.

The pack holds the tensors `FaceBatchSource` is made of, at the training resolution: faces as
WebP bytes (lossy; about 38 dB PSNR at quality 90, at half JPEG's size), the normalised
identity and the landmark code as float16, face masks bit-packed, and the labels after the
clear-eyeglasses relabelling (0, 0.5 or 1). The attribute code is derived on loading, as from
the folder. Only the first `GRID_FACES` held-out faces travel: they draw the sample grids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from s3edit.errors import UsageError
from s3edit.model.codes import IDENTITY_DIM

if TYPE_CHECKING:  # the trainer imports this module
    from s3edit.train.autoencoder import AutoencoderTrainConfig, FaceBatchSource

PACK_VERSION = 1
PACK_SUFFIX = ".npz"
GRID_FACES = 16


def is_pack(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix == PACK_SUFFIX


def _encode(images: torch.Tensor, quality: int) -> dict[str, np.ndarray]:
    """(N, 3, R, R) in [-1, 1] -> concatenated WebP bytes and their offsets."""
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    blobs = [cv2.imencode(".webp", rgb[:, :, ::-1], [cv2.IMWRITE_WEBP_QUALITY, quality])[1]
             for rgb in pixels]
    offsets = np.cumsum([0, *map(len, blobs)])
    return {"webp": np.concatenate(blobs) if blobs else np.zeros(0, np.uint8),
            "offsets": offsets}


def _decode(webp: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
    faces = [cv2.imdecode(webp[a:b], cv2.IMREAD_COLOR)[:, :, ::-1]
             for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _part(source: FaceBatchSource, quality: int) -> dict[str, np.ndarray]:
    return {**_encode(source.images, quality),
            "identity": source.clip_code[:, :IDENTITY_DIM].half().numpy(),
            "landmarks": source.landmarks.half().numpy(),
            "masks": np.packbits(source.masks.numpy() > 0.5, axis=-1),
            "labels": (source.labels * 2).round().byte().numpy()}


def write_pack(cfg: AutoencoderTrainConfig, path: Path, quality: int = 90) -> Path:
    """Pack the training set that `cfg` (an AutoencoderTrainConfig on a folder) trains on."""
    from s3edit.train.autoencoder import load_face_sources

    path = Path(path)
    if path.suffix != PACK_SUFFIX:
        raise UsageError(f"{path}: a pack's name ends in {PACK_SUFFIX}")
    train, held = load_face_sources(cfg)
    held = held.subset(slice(0, GRID_FACES))
    meta = {"version": PACK_VERSION, "resolution": cfg.resolution, "data": str(cfg.data),
            "limit": cfg.limit, "holdout": cfg.holdout, "quality": quality,
            "clear_eyeglasses": cfg.clear_eyeglasses}
    arrays = {f"train_{k}": v for k, v in _part(train, quality).items()}
    arrays |= {f"held_{k}": v for k, v in _part(held, quality).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compressed: the bit-packed masks shrink 15x; the WebP bytes and float16 codes hardly.
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def read_pack(path: Path, resolution: int, clear_eyeglasses: bool, attribute_dim: int
              ) -> tuple[FaceBatchSource, FaceBatchSource]:
    """The training and held-out FaceBatchSources of a pack."""
    from s3edit.train.autoencoder import FaceBatchSource

    with np.load(path, allow_pickle=False) as pack:
        meta = json.loads(str(pack["meta"]))
        if meta["version"] != PACK_VERSION:
            raise UsageError(f"{path}: pack version {meta['version']}, expected {PACK_VERSION}")
        for name, wanted in (("resolution", resolution), ("clear_eyeglasses", clear_eyeglasses)):
            if meta[name] != wanted:
                raise UsageError(f"{path} was packed with {name}={meta[name]}, the run asks "
                                 f"for {wanted}: pack again with `s3edit train pack`")

        def part(prefix: str) -> FaceBatchSource:
            p = {k: pack[f"{prefix}_{k}"] for k in ("webp", "offsets", "identity",
                                                    "landmarks", "masks", "labels")}
            masks = np.unpackbits(p["masks"], axis=-1, count=resolution)
            return FaceBatchSource.build(
                _decode(p["webp"], p["offsets"]), torch.from_numpy(p["identity"]).float(),
                torch.from_numpy(p["landmarks"]).float(), torch.from_numpy(masks).float(),
                torch.from_numpy(p["labels"]).float() / 2, attribute_dim)

        return part("train"), part("held")


def save_bf16(folder: Path, out: Path, max_shard_size: str = "16MB") -> Path:
    """A model folder's weights in bfloat16, in safetensors files of at most `max_shard_size`
    (what a GPU lease can bring back); from_pretrained loads it back in float32."""
    from s3edit.model.autoencoder import DiffusionFaceAutoencoder

    model = DiffusionFaceAutoencoder.from_pretrained(folder)
    # Parameters only: the code statistics (buffers) are small and bf16 would round them.
    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    return Path(out)
