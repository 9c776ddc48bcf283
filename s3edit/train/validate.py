"""Measured quality of a trained autoencoder: reconstruction PSNR, use of the codes, identity
swap, samples.

These are the figures the weights manifest records: DDIM inversion then decoding of held-out
aligned crops and of the aligned frames of a real clip, at several step counts.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import torch

from s3edit.face.landmarks import landmarks68
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.inputs import model_input, to_uint8
from s3edit.train.autoencoder import FaceBatchSource, psnr, save_grid


@dataclass
class ClipCrops:
    """Aligned crops of a clip at the model's resolution with their codes."""

    images: torch.Tensor  # (T, 3, R, R) in [-1, 1]
    landmarks: torch.Tensor  # (T, 102)
    clip_code: torch.Tensor  # (D,)


def clip_crops(video: Path, resolution: int, max_frames: int | None = None,
               attributes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ClipCrops:
    """Track and align a clip exactly as `s3edit apply` does (`attributes`: the face model's,
    for a clip code that holds them)."""
    from s3edit.model.face_model import PassThroughModel
    from s3edit.options import EditOptions
    from s3edit.pipeline import Pipeline
    from s3edit.video import probe, read_frames

    info = probe(video)
    tracker = PassThroughModel(resolution)
    tracker.attributes = attributes
    clip = Pipeline(tracker, editor=None).analyse(info, EditOptions("Eyeglasses"))
    track, inputs = clip.track, []
    with closing(read_frames(info)) as frames:
        for t, frame in enumerate(frames):
            if max_frames is not None and len(inputs) >= max_frames:
                break
            if track.valid[t]:
                inputs.append(model_input([frame], [track.squares[t]],
                                          [landmarks68(track.mesh[t])], resolution))
    return ClipCrops(torch.cat([i.images for i in inputs]),
                     torch.cat([i.landmarks for i in inputs]), clip.clip_code)


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
    own = model.z_face(held.clip_code[:count], held.landmarks[:count])
    swapped = model.z_face(held.clip_code[:count].roll(1, 0), held.landmarks[:count])
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
    z = model.z_face(clip.clip_code.expand(frames, -1), lms)
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
    z = model.z_face(held.clip_code[ids], held.landmarks[ids])
    save_grid(model.decode(noise, z, steps, clip_sample=True), out, columns=8)


@torch.no_grad()
def attribute_edit(model: DiffusionFaceAutoencoder, held: FaceBatchSource, attr: str,
                   value: float, classifier, steps: int, refine: int, count: int = 32,
                   out: Path | None = None, guidance: float = 1.0) -> dict[str, float]:
    """Edit held-out faces without `attr` by setting its entry of the clip code to `value`
    (labels are -1/+1), from their own inverted noise maps, and grade the result with the
    image classifier (`classifier`, never the attribute encoder the codes come from).

    Returns the mean probability before and after, and the share of faces that go from under
    0.1 to over 0.7: the rate of edits that succeed.
    """
    from s3edit.edit.attributes import ATTRIBUTES
    from s3edit.model.codes import IDENTITY_DIM

    column = ATTRIBUTES.index(attr)
    ids = torch.nonzero(held.labels[:, column] < 0.5).flatten()[:count]
    x0, code, lms = held.images[ids], held.clip_code[ids], held.landmarks[ids]
    edited_code = code.clone()
    edited_code[:, IDENTITY_DIM + column] = value
    z = model.z_face(code, lms)
    noise = model.invert(x0, z, steps, refine)
    edited = model.decode(noise, model.z_face(edited_code, lms), steps, reference=z,
                          guidance=guidance)
    index = classifier.index(attr)
    before = classifier.probabilities(to_uint8(x0))[:, index]
    after = classifier.probabilities(to_uint8(edited))[:, index]
    if out is not None:
        save_grid(torch.cat([x0[:8], edited[:8]]), out, columns=8)
    was_without = before < 0.1
    return {"faces": len(ids), "before": float(before.mean()), "after": float(after.mean()),
            "success_rate": float((after[was_without] > 0.7).mean()) if was_without.any()
            else float("nan")}
