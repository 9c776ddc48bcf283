"""An image-space classifier of the 40 CelebA attributes, to grade edits.

The editors move the identity code along directions found by classifiers in that same latent
space, so a latent classifier would grade an edit by the very rule that made it. This small CNN
looks at pixels of aligned 64x64 crops instead, so it judges what the edit actually drew.

It is trained by `s3edit.train.image_classifier` with class-balanced BCE, so its probabilities
are balanced: 0.5 means as likely as not whatever the attribute's frequency.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from s3edit.edit.attributes import ATTRIBUTES

CROP_SIZE = 128  # size of the aligned crops fed to `preprocess` (that of the cache)


class ImageAttributeClassifier(ModelMixin, ConfigMixin):
    """Blocks of two 3x3 conv + BN + ReLU, each halving the size; global average pool; linear.

    With the default channels: 0.85 M parameters, 63 M multiply-adds per 64x64 crop.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, resolution: int = 64, channels: tuple[int, ...] = (16, 32, 64, 128, 192),
                 dropout: float = 0.2, attributes: tuple[str, ...] = ATTRIBUTES):
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for out in channels:
            for c_in in (width, out):
                layers += [nn.Conv2d(c_in, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                           nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            width = out
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, len(attributes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attribute logits (N, 40) of images (N, 3, R, R) in [-1, 1]."""
        features = self.features(x).mean((2, 3))
        return self.head(self.drop(features))

    def preprocess(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Aligned RGB uint8 crops (N, S, S, 3) -> (N, 3, R, R) in [-1, 1] on the model's device.

        Area averaging is what shrinks training crops too, so crops cut from video frames at the
        cache's size go through exactly the same filter.
        """
        x = torch.as_tensor(crops).to(self.device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=self.config.resolution, mode="area")
        return x / 127.5 - 1

    @torch.no_grad()
    def probabilities(self, crops: np.ndarray | torch.Tensor, batch_size: int = 64
                      ) -> np.ndarray:
        """(N, 40) float32 attribute probabilities of aligned RGB uint8 crops (N, S, S, 3)."""
        out = [torch.sigmoid(self(self.preprocess(crops[i:i + batch_size]))).cpu()
               for i in range(0, len(crops), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.config.attributes)),
                                                           np.float32)

    def index(self, attr: str) -> int:
        return list(self.config.attributes).index(attr)


def load_image_classifier(folder: Path, device: str | torch.device = "cpu"
                          ) -> ImageAttributeClassifier:
    return ImageAttributeClassifier.from_pretrained(folder).to(device).eval()
