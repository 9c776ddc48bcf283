"""Which clip-code dimensions move which parts of the decoded face (issue 16, region-structured
sparsity): the decoder's finite-difference Jacobian, pooled by face region.

Held-out CelebA-HQ faces are DDIM-inverted (apply's 10 steps, refinement 3); each of the clip
code's dimensions is moved by one standard deviation of the training codes, alone, and decoded
from the face's own noise map (10 steps). The decoded change (mean |RGB| in 0-255 levels) is
averaged per pixel inside each region of the 64 px crop, drawn from the face's mesh: eyes (with
brows), mouth, the rest of the face, hair, background. Prints, per attribute dimension, its
change per region, where it is largest, and the region the metrics expect the attribute in;
then how the identity (dlib) dimensions spread over the regions.

    python bench/code_regions.py --faces 12 --out runs/code_regions.json
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs
import s3edit  # noqa: E402, F401  (torch's thread wait policy, before torch loads)

# isort: split

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import decoded_face_judge, default_data_dir, inverted_celeba

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.face.mask import attribute_region, region_mask
from s3edit.model.codes import IDENTITY_DIM
from s3edit.train.decoded_faces import DecodedFaceJudge
from s3edit.weights import REPO_WEIGHTS

REGIONS = ("eyes", "mouth", "face", "hair", "background")


def region_masks(mesh: np.ndarray, size: int) -> np.ndarray:
    """(5, size, size) disjoint 0/1 masks: eyes, mouth, the rest of the face, hair (outside
    the face), background (the rest of the crop)."""
    eyes, mouth, oval, hair = (region_mask(mesh, (size, size), r)
                               for r in ("eyes", "mouth", "face", "hair"))
    face = np.clip(oval - eyes - mouth, 0, 1)
    background = np.clip(1 - np.maximum(oval, hair) - eyes - mouth, 0, 1)
    return np.stack([eyes, mouth, face, hair, background])


@torch.no_grad()
def region_changes(judge: DecodedFaceJudge, faces, masks: np.ndarray, steps: int) -> np.ndarray:
    """(D, regions) mean change per pixel of each region when each code dimension alone moves
    by one training standard deviation, for one face (faces: its InvertedFaces row)."""
    model = judge.model
    d = faces.codes.shape[1]
    codes = faces.codes.expand(d + 1, -1).clone()
    codes[1:] += torch.diag(model.code_std[:d])
    z = model.z_face(codes, faces.landmarks.expand(d + 1, -1))
    decoded = model.sample(faces.noise.expand(d + 1, -1, -1, -1), z, steps, bf16=judge.bf16)
    change = (decoded[1:] - decoded[:1]).abs().mean(1) * 127.5  # (D, R, R) levels
    m = torch.from_numpy(masks).float()
    return ((change[:, None] * m).sum((-1, -2)) / m.sum((-1, -2)).clamp(min=1)).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=REPO_WEIGHTS)
    p.add_argument("--data", type=Path, default=default_data_dir() / "CelebAMask-HQ-128")
    p.add_argument("--faces", type=int, default=12, help="held-out faces to average over")
    p.add_argument("--steps", type=int, default=10, help="decoding steps (apply's 10)")
    p.add_argument("--out", type=Path, help="write the (faces, D, regions) changes as JSON")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    judge = decoded_face_judge(args.weights)
    faces = inverted_celeba(judge, args.data, args.faces)
    size = judge.model.config.resolution
    meshes = faces.meshes.numpy()
    start = time.perf_counter()
    per_face = np.stack([region_changes(judge, faces.rows(torch.tensor([i])),
                                        region_masks(meshes[i], size), args.steps)
                         for i in range(len(faces))])
    print(f"{len(faces)} faces x {per_face.shape[1]} dimensions decoded in "
          f"{time.perf_counter() - start:.0f} s\n")
    if args.out:
        args.out.write_text(json.dumps({"regions": REGIONS, "changes": per_face.tolist()}))
    mean = per_face.mean(0)

    print("| attribute | " + " | ".join(REGIONS) + " | largest | metrics' region |")
    print("|---|" + "---|" * (len(REGIONS) + 2))
    for i, attr in enumerate(ATTRIBUTES):
        row = mean[IDENTITY_DIM + i]
        print(f"| {attr} | " + " | ".join(f"{v:.2f}" for v in row)
              + f" | {REGIONS[row.argmax()]} | {attribute_region(attr)} |")
    identity = mean[:IDENTITY_DIM]
    largest = np.bincount(identity.argmax(1), minlength=len(REGIONS))
    print(f"\nidentity dimensions (dlib, {IDENTITY_DIM}): mean change per region "
          + ", ".join(f"{r} {v:.2f}" for r, v in zip(REGIONS, identity.mean(0), strict=True))
          + "; largest in " + ", ".join(f"{r} {n}" for r, n in zip(REGIONS, largest,
                                                                     strict=True)))


if __name__ == "__main__":
    main()
