"""The baseline edit of Diffusion Video Autoencoders: a step along the classifier direction.

z' = renorm(denorm(norm(z) + s * sqrt(d) * w / |w|)), renorm putting the identity part of the
clip code back on the unit sphere (the attribute part stays free). The step is in standardised
code space, where a whole code has norm about sqrt(d), so s is a fraction of a typical code's
length.
"""

from __future__ import annotations

import math

import torch

from s3edit.edit.classifier import LatentAttributeClassifier
from s3edit.model.codes import renormalise_clip_code


class LinearEditor:
    name = "linear"

    def __init__(self, classifier: LatentAttributeClassifier):
        self.classifier = classifier

    def edit(self, identity: torch.Tensor, attr: str, scale: float) -> torch.Tensor:
        if scale == 0:
            return identity
        c = self.classifier
        step = scale * math.sqrt(identity.shape[-1]) * c.direction(attr)
        return renormalise_clip_code(c.denormalize(c.normalize(identity) + step))
