"""The diffusion video autoencoder: conditioning, UNet, DDIM inversion and decoding."""

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import identity_code, landmark_code

__all__ = ["DiffusionFaceAutoencoder", "identity_code", "landmark_code"]
