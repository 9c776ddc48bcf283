"""Latent Transformer editor (Yao et al., ICCV 2021) on the clip code.

One small MLP T_k per attribute acts on the standardised code w: w' = w + alpha * T_k(w), then
back to a clip code with denorm and the l2norm of its identity part. In training
alpha = target - p_k(w) (p_k the classifier's probability, target the other class), so alpha in
[-1, -0.5] removes the attribute and alpha in [0.5, 1] adds it; |alpha| = 1 is the whole move
from one class to the other. `edit(z, attr, scale)` uses alpha = scale: scale 1 is that whole
move, 0.5 half of it, negative scales remove the attribute, and scale 0 returns the code
untouched.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.base import BatchEditor
from s3edit.edit.classifier import LatentAttributeClassifier
from s3edit.model.codes import IDENTITY_DIM, renormalise_clip_code


class LatentTransformer(ModelMixin, ConfigMixin):
    """All attributes' T_k as one stack of MLPs d -> hidden -> d (trained together)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, dim: int = IDENTITY_DIM, hidden: int = 64,
                 attributes: tuple[str, ...] = ATTRIBUTES):
        super().__init__()
        heads = len(attributes)
        self.w1 = nn.Parameter(torch.randn(heads, dim, hidden) / math.sqrt(dim))
        self.b1 = nn.Parameter(torch.zeros(heads, hidden))
        self.w2 = nn.Parameter(torch.randn(heads, hidden, dim) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(heads, dim))

    def all_heads(self, w: torch.Tensor) -> torch.Tensor:
        """T_k(w) of every head k: (N, d) -> (heads, N, d)."""
        h = F.leaky_relu(torch.einsum("nd,kdh->knh", w, self.w1) + self.b1[:, None], 0.2)
        return torch.einsum("knh,khd->knd", h, self.w2) + self.b2[:, None]

    def forward(self, w: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """T_{head[n]}(w[n]) for codes (N, d) and head indices (N,)."""
        h = F.leaky_relu(torch.einsum("nd,ndh->nh", w, self.w1[head]) + self.b1[head], 0.2)
        return torch.einsum("nh,nhd->nd", h, self.w2[head]) + self.b2[head]


class LatentTransformerEditor(BatchEditor):
    """`--editor lt`; the scale is alpha (see the module docstring)."""

    name = "lt"

    def __init__(self, transformer: LatentTransformer, classifier: LatentAttributeClassifier):
        self.transformer = transformer
        self.classifier = classifier

    def edit_batch(self, z: torch.Tensor, head: torch.Tensor, alpha: torch.Tensor
                   ) -> torch.Tensor:
        """Edited clip codes of codes z (N, D), attribute indices (N,) and alphas (N,)."""
        c = self.classifier
        w = c.normalize(z)
        return renormalise_clip_code(c.denormalize(w + alpha[:, None] * self.transformer(w, head)))
