"""From tracked frames to what the model reads, and its output back to pixels: the one path
that apply, preview, validation and bench share, so they feed the model alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from s3edit.face.align import align_crop, to_crop_coords
from s3edit.model.codes import landmark_code


@dataclass
class ModelInput:
    crops: np.ndarray  # (N, R, R, 3) uint8 aligned crops
    images: torch.Tensor  # (N, 3, R, R) the same in [-1, 1]
    landmarks: torch.Tensor  # (N, 102) landmark codes


def model_input(frames: Sequence[np.ndarray], squares: Sequence[np.ndarray],
                lm68s: Sequence[np.ndarray], size: int) -> ModelInput:
    """Each frame's face, aligned by its square at `size` px, and its 68 landmarks (frame
    pixels) as a landmark code in the crop's unit square."""
    crops = np.stack([align_crop(f, s, size) for f, s in zip(frames, squares, strict=True)])
    lm = np.stack([to_crop_coords(p, s, size) for p, s in zip(lm68s, squares, strict=True)])
    return ModelInput(crops, to_model_range(crops), landmark_code(torch.from_numpy(lm / size)))


def to_model_range(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, R, R, 3) -> float (N, 3, R, R) in [-1, 1]."""
    return torch.as_tensor(crops).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, R, R) in [-1, 1] -> (N, R, R, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
