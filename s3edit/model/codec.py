"""The model boundary: aligned crops in, edited crops out.

The pipeline only sees `FaceCodec`: encode a batch of aligned crops of one clip into per-frame
latents under the clip's identity code and each frame's landmark code, then decode latents under
a (possibly edited) identity code. Video and face code never touch the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:  # diffusers takes seconds to import; runs without the model skip it
    from s3edit.model.autoencoder import DiffusionFaceAutoencoder


class FaceCodec(Protocol):
    resolution: int

    def encode(self, crops: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        """crops (N, 3, R, R) in [-1, 1], identity (128,), landmarks (N, 102) -> latents."""
        ...

    def decode(self, latents: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        """latents -> crops (N, 3, R, R) in [-1, 1]."""
        ...


class PassThroughCodec:
    """Latents are the crops themselves: runs the whole video and face path with no model."""

    def __init__(self, resolution: int = 256):
        self.resolution = resolution

    def encode(self, crops: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        return crops

    def decode(self, latents: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        return latents


class DiffusionCodec:
    """Latents are DDIM noise maps of the diffusion autoencoder."""

    def __init__(self, model: DiffusionFaceAutoencoder, steps: int = 10, refine: int = 3,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.steps = steps
        self.refine = refine  # fixed-point iterations per inversion step (see `invert`)
        self.device = torch.device(device)
        self.resolution = model.config.resolution

    def _z_face(self, identity: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        identity = identity.to(self.device).expand(len(landmarks), -1)
        return self.model.z_face(identity, landmarks.to(self.device))

    @torch.no_grad()
    def encode(self, crops: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        return self.model.invert(crops.to(self.device), self._z_face(identity, landmarks),
                                 self.steps, self.refine)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        return self.model.decode(latents.to(self.device), self._z_face(identity, landmarks),
                                 self.steps).cpu()
