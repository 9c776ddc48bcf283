"""The two codes a face is described by besides its noise map.

identity: dlib's 128-d embedding, L2-normalised (the same person's frames then sit on a small
cap of the sphere, which is what the attribute editors move along).
landmarks: the 51 non-jaw iBUG points in the aligned crop, in [-1, 1] (as in the reference, the
jaw is left out: it follows the identity more than the pose).
"""

from __future__ import annotations

import torch

IDENTITY_DIM = 128
LANDMARK_DIM = 102


def identity_code(embedding: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(embedding.float(), dim=-1)


def landmark_code(lm68_unit: torch.Tensor) -> torch.Tensor:
    """(..., 68, 2) points in [0, 1] crop coordinates -> (..., 102)."""
    return (lm68_unit[..., 17:, :].float() * 2 - 1).flatten(-2)
