"""The model boundary: aligned crops in, edited crops out.

The pipeline only sees `FaceModel`: encode a batch of aligned crops of one clip into per-frame
latents under the clip code and each frame's landmark code, then decode latents under a
(possibly edited) clip code. Video and face code never touch the network. A model that
reads attributes offers `attributes`, which pass 1 calls on a few crops to build the clip code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from s3edit.errors import S3EditError, UsageError
from s3edit.options import PRECISIONS

if TYPE_CHECKING:  # diffusers takes seconds to import; runs without the model skip it
    from s3edit.face.attributes import AttributeEncoder
    from s3edit.model.autoencoder import DiffusionFaceAutoencoder


class FaceModel(Protocol):
    resolution: int
    # Whether decoding the latents under the unedited codes gives the crops back; False when
    # decoding draws fresh noise, and then an edit's change is measured against a decoded
    # reconstruction made with the same draws.
    exact_inverse: bool
    # Aligned crops (N, 3, S, S) in [-1, 1] -> (N, 40) attribute values, or None when the
    # model's clip code is the identity alone.
    attributes: Callable[[torch.Tensor], torch.Tensor] | None

    def encode(self, crops: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        """crops (N, 3, R, R) in [-1, 1], clip code (D,), landmarks (N, 102) -> latents."""
        ...

    def decode(self, latents: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor,
               reference: tuple[torch.Tensor, torch.Tensor] | None = None,
               guidance: float = 1.0) -> torch.Tensor:
        """latents -> crops (N, 3, R, R) in [-1, 1]; with `reference`, the unedited (clip code,
        landmarks), a model with edit guidance scales the edit by `guidance`."""
        ...


class PassThroughModel:
    """Latents are the crops themselves: runs the whole video and face path with no model."""

    exact_inverse = True

    def __init__(self, resolution: int = 256, attribute_dim: int = 0):
        self.resolution = resolution
        # The editors expect the clip code of the weights' model; with no model to read them,
        # the attributes are left undecided (0) rather than measured.
        self.attributes = (lambda crops: torch.zeros(len(crops), attribute_dim)) \
            if attribute_dim else None

    def encode(self, crops: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        return crops

    def decode(self, latents: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor,
               reference: tuple[torch.Tensor, torch.Tensor] | None = None,
               guidance: float = 1.0) -> torch.Tensor:
        return latents


class DiffusionFaceModel:
    """Latents are DDIM noise maps of the diffusion autoencoder."""

    def __init__(self, model: DiffusionFaceAutoencoder, steps: int = 10, refine: int = 3,
                 device: torch.device | str = "cpu",
                 attribute_encoder: AttributeEncoder | None = None,
                 precision: str = "auto", eta: float = 0.0, seed: int = 0):
        self.model = model.to(device).eval()
        self.steps = steps
        # Stochastic decoding (see DiffusionFaceAutoencoder.sample): one draw of noise per
        # step, shared by every frame, so that what it adds sits at the same place in each
        # aligned crop and stays put over the clip.
        self.eta = eta
        self.exact_inverse = eta == 0
        r = model.config.resolution
        self.noise = torch.randn((steps, 1, 3, r, r), generator=torch.Generator().manual_seed(
            seed)).to(device) if eta else None
        self.refine = refine  # fixed-point iterations per inversion step (see `invert`)
        self.device = torch.device(device)
        self.bf16 = uses_bf16(precision, self.device)
        self.resolution = model.config.resolution
        self.attributes = None
        if model.config.attribute_dim:
            if attribute_encoder is None:
                raise S3EditError("this autoencoder reads attributes: it needs the attribute "
                                  "encoder (weights/attribute_encoder/)")
            self.attribute_encoder = attribute_encoder.to(self.device).eval()
            self.attributes = self._attributes

    @torch.no_grad()
    def _attributes(self, crops: torch.Tensor) -> torch.Tensor:
        return self.attribute_encoder.codes(crops.to(self.device)).cpu()

    def _z_face(self, identity: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        identity = identity.to(self.device).expand(len(landmarks), -1)
        return self.model.z_face(identity, landmarks.to(self.device))

    @torch.no_grad()
    def encode(self, crops: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor
               ) -> torch.Tensor:
        return self.model.invert(crops.to(self.device), self._z_face(identity, landmarks),
                                 self.steps, self.refine, bf16=self.bf16)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor,
               reference: tuple[torch.Tensor, torch.Tensor] | None = None,
               guidance: float = 1.0) -> torch.Tensor:
        z_reference = None if reference is None else self._z_face(*reference)
        return self.model.decode(latents.to(self.device), self._z_face(identity, landmarks),
                                 self.steps, reference=z_reference, guidance=guidance,
                                 bf16=self.bf16, eta=self.eta, noise=self.noise).cpu()


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether the UNet runs under bf16 autocast: "bf16", "fp32", or "auto", which is bf16
    where the hardware computes it natively (a CUDA GPU that supports it; a CPU with
    AVX512-BF16 or AMX, where it is 1.5x faster) and float32 elsewhere, where it would be
    emulated and slower."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return device.type == "cpu" and any(
        getattr(cpu, probe, lambda: False)()
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def load_face_model(folder: Path, *, steps: int, refine: int, device: str | torch.device,
                    no_model: bool = False, precision: str = "auto", eta: float = 0.0,
                    seed: int = 0) -> FaceModel:
    """The weights folder's autoencoder (and the attribute encoder it reads, if any); with
    `no_model`, a pass-through of the same clip code layout, so its editors still apply."""
    from s3edit.weights import (
        attribute_encoder_dir,
        autoencoder_attribute_dim,
        autoencoder_dir,
        resolve_device,
    )

    if no_model:
        return PassThroughModel(attribute_dim=autoencoder_attribute_dim(folder))
    from s3edit.model.autoencoder import DiffusionFaceAutoencoder

    model_dir = autoencoder_dir(folder)
    if model_dir is None:
        raise S3EditError(f"no autoencoder in {folder} (expected {folder}/autoencoder/"
                          "config.json); train one with `s3edit train autoencoder` or use "
                          "--no-model")
    model = DiffusionFaceAutoencoder.from_pretrained(model_dir)
    encoder = None
    if model.config.attribute_dim:
        from s3edit.face.attributes import AttributeEncoder

        encoder_dir = attribute_encoder_dir(folder)
        if encoder_dir is None:
            raise S3EditError(f"the autoencoder in {model_dir} reads attributes, but there is "
                              f"no {folder}/attribute_encoder/config.json; train one with "
                              "`s3edit train attribute-encoder`")
        encoder = AttributeEncoder.from_pretrained(encoder_dir)
    return DiffusionFaceModel(model, steps, refine, resolve_device(str(device)), encoder,
                              precision, eta, seed)
