"""Measured quality of a trained autoencoder: reconstruction PSNR, use of the codes, identity
swap, samples.

These are the figures the weights manifest records: DDIM inversion then decoding of held-out
aligned crops and of the aligned frames of a real clip, at several step counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from s3edit.face.align import align_crop, to_crop_coords
from s3edit.face.landmarks import landmarks68
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import landmark_code
from s3edit.train.autoencoder import FaceBatchSource, psnr, save_grid


@dataclass
class ClipCrops:
    """Aligned crops of a clip at the model's resolution with their codes."""

    images: torch.Tensor  # (T, 3, R, R) in [-1, 1]
    landmarks: torch.Tensor  # (T, 102)
    identity: torch.Tensor  # (128,)


def clip_crops(video: Path, resolution: int, max_frames: int | None = None) -> ClipCrops:
    """Track and align a clip exactly as `s3edit apply` does."""
    from s3edit.face.identity import IdentityEncoder
    from s3edit.pipeline import EditOptions, analyse_clip
    from s3edit.video import probe, read_frames

    info = probe(video)
    clip = analyse_clip(info, EditOptions("Eyeglasses", 0), IdentityEncoder())
    crops, lms = [], []
    for t, frame in enumerate(read_frames(info)):
        if max_frames is not None and len(crops) >= max_frames:
            break
        if clip.track.valid[t]:
            square = clip.track.squares[t]
            crops.append(align_crop(frame, square, resolution))
            lms.append(to_crop_coords(landmarks68(clip.track.mesh[t]), square, resolution)
                       / resolution)
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return ClipCrops(images, landmark_code(torch.from_numpy(np.stack(lms))), clip.identity)


@torch.no_grad()
def reconstruction_psnr(model: DiffusionFaceAutoencoder, images: torch.Tensor,
                        identity: torch.Tensor, landmarks: torch.Tensor, steps: int,
                        refine: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Per-image PSNR of decode(invert(x)) at the model's resolution."""
    scores = []
    for i in range(0, len(images), batch_size):
        x0 = images[i:i + batch_size]
        ident = identity[i:i + batch_size] if identity.dim() == 2 else identity.expand(len(x0), -1)
        z = model.z_face(ident, landmarks[i:i + batch_size])
        scores.append(psnr(model.decode(model.invert(x0, z, steps, refine), z, steps), x0))
    return torch.cat(scores)


@torch.no_grad()
def code_use(model: DiffusionFaceAutoencoder, held: FaceBatchSource,
             timesteps: tuple[int, ...] = (400, 600, 800), count: int = 32,
             seed: int = 0) -> dict[int, dict[str, float]]:
    """Whether the decoder reads its codes, per noise level: the error of the predicted x0 with
    each face's own codes and with another face's identity code (same landmarks), and how far
    the two predictions differ. A decoder that ignores the identity code has `response` near 0
    and equal errors; one that uses it has `own_error` below `swapped_error`.
    """
    generator = torch.Generator().manual_seed(seed)
    x0 = held.images[:count]
    own = model.z_face(held.identity[:count], held.landmarks[:count])
    swapped = model.z_face(held.identity[:count].roll(1, 0), held.landmarks[:count])
    alphas = model.schedulers()[0].alphas_cumprod
    result = {}
    for t in timesteps:
        a = alphas[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=generator)
        tt = torch.full((len(x0),), t)
        p_own, p_swapped = (model.predicted_x0(model(x_t, tt, z), x_t, a).clamp(-1, 1)
                            for z in (own, swapped))
        result[t] = {"own_error": (p_own - x0).abs().mean().item(),
                     "swapped_error": (p_swapped - x0).abs().mean().item(),
                     "response": (p_own - p_swapped).abs().mean().item()}
    return result


@torch.no_grad()
def identity_swap_strip(model: DiffusionFaceAutoencoder, clip: ClipCrops,
                        others: torch.Tensor, steps: int, refine: int, out: Path,
                        frames: int = 6) -> None:
    """Rows: the clip's crops, their reconstruction, then one row per other identity decoded
    from the same noise maps and landmarks."""
    pick = torch.linspace(0, len(clip.images) - 1, frames).long()
    x0, lms = clip.images[pick], clip.landmarks[pick]
    z = model.z_face(clip.identity.expand(frames, -1), lms)
    noise = model.invert(x0, z, steps, refine)
    rows = [x0, model.decode(noise, z, steps)]
    for other in others:
        rows.append(model.decode(noise, model.z_face(other.expand(frames, -1), lms), steps))
    save_grid(torch.cat(rows), out, columns=frames)


@torch.no_grad()
def sample_grid(model: DiffusionFaceAutoencoder, held: FaceBatchSource, steps: int, out: Path,
                count: int = 16, seed: int = 0) -> None:
    """Faces decoded from pure noise under held-out identity and landmark codes."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randperm(len(held), generator=generator)[:count]
    res = model.config.resolution
    noise = torch.randn(count, 3, res, res, generator=generator)
    z = model.z_face(held.identity[ids], held.landmarks[ids])
    save_grid(model.decode(noise, z, steps, clip_sample=True), out, columns=8)
