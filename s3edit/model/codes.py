"""The codes a face is described by besides its noise map.

identity: dlib's 128-d embedding, L2-normalised (the same person's frames then sit on a small
cap of the sphere).
attributes: the 40 CelebA attributes in [-1, 1] (labels when training the decoder, the attribute
encoder's flip-averaged probabilities at inference). dlib's embedding is trained to ignore
eyeglasses and expression, so a decoder conditioned on it alone has nothing to render an
eyeglasses edit from.
The clip code is identity followed by attributes: one per clip, the code the editors move.
landmarks: the 51 non-jaw iBUG points in the aligned crop, in [-1, 1] (as in the reference, the
jaw is left out: it follows the identity more than the pose).
"""

from __future__ import annotations

import torch

IDENTITY_DIM = 128
ATTRIBUTE_DIM = 40
LANDMARK_DIM = 102
# The landmark code holds iBUG points 17-67: the jaw (0-16) is left out.
FIRST_CODED_POINT = 17


def identity_code(embedding: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(embedding.float(), dim=-1)


def attribute_code(probabilities: torch.Tensor) -> torch.Tensor:
    """(..., 40) probabilities or {0, 1} labels -> values in [-1, 1]."""
    return probabilities.float() * 2 - 1


def clip_code(identity: torch.Tensor, attributes: torch.Tensor | None) -> torch.Tensor:
    """The clip code: the L2-normalised identity, then the attribute code when there is one."""
    identity = identity_code(identity)
    return identity if attributes is None else torch.cat([identity, attributes.float()], -1)


def renormalise_clip_code(code: torch.Tensor) -> torch.Tensor:
    """Put an edited clip code's identity part back on the unit sphere (attributes stay free)."""
    return torch.cat([identity_code(code[..., :IDENTITY_DIM]), code[..., IDENTITY_DIM:]], -1)


def landmark_code(lm68_unit: torch.Tensor) -> torch.Tensor:
    """(..., 68, 2) points in [0, 1] crop coordinates -> (..., 102)."""
    return (lm68_unit[..., FIRST_CODED_POINT:, :].float() * 2 - 1).flatten(-2)
