"""Latent Transformer editor (Yao et al., ICCV 2021) on the clip code, as published.

One affine map T_k per attribute acts on the standardised code w: w' = w + alpha * T_k(w)
(`F_mapping` with a linear activation in the official code), then back to a clip code with
denorm and the l2norm of its identity part. Training grades edits with the Latent
Transformer's own MLP attribute classifier (d -> 2048 -> 512 -> 40, leaky ReLU, as the
official `LCNet`), not with the linear classifiers whose weights are the linear editor's
directions. In training alpha = target - p_k(w) (p_k that classifier's probability, target the
other class), so alpha in [-1, -0.5] removes the attribute and alpha in [0.5, 1] adds it;
|alpha| = 1 is the whole move from one class to the other. `edit(z, attr, scale)` uses
alpha = scale: scale 1 is that whole move, 0.5 half of it, negative scales remove the
attribute, and scale 0 returns the code untouched.
"""

from __future__ import annotations

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
    """All attributes' T_k(w) = A_k w + b_k, stacked (trained together, each by its own loss).

    Zero at the start, so that training starts from the unedited code, as the official
    code's equalised-learning-rate layers nearly do."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, dim: int = IDENTITY_DIM, attributes: tuple[str, ...] = ATTRIBUTES):
        super().__init__()
        heads = len(attributes)
        self.weight = nn.Parameter(torch.zeros(heads, dim, dim))
        self.bias = nn.Parameter(torch.zeros(heads, dim))

    def all_heads(self, w: torch.Tensor) -> torch.Tensor:
        """T_k(w) of every head k: (N, d) -> (heads, N, d)."""
        return torch.einsum("nd,kde->kne", w, self.weight) + self.bias[:, None]

    def forward(self, w: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """T_{head[n]}(w[n]) for codes (N, d) and head indices (N,)."""
        return torch.einsum("nd,nde->ne", w, self.weight[head]) + self.bias[head]


class LatentMLPClassifier(ModelMixin, ConfigMixin):
    """The Latent Transformer's own attribute classifier: logits (N, A) of standardised codes
    (N, d) through d -> 2048 -> 512 -> A with leaky ReLU (the official `LCNet`)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, dim: int = IDENTITY_DIM, hidden: tuple[int, ...] = (2048, 512),
                 attributes: tuple[str, ...] = ATTRIBUTES):
        super().__init__()
        sizes = [dim, *hidden, len(attributes)]
        self.layers = nn.ModuleList(nn.Linear(a, b)
                                    for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            w = F.leaky_relu(layer(w), 0.2)
        return self.layers[-1](w)


class LatentTransformerEditor(BatchEditor):
    """`--editor lt`; the scale is alpha (see the module docstring). The linear classifier
    only standardises codes here (its statistics are those of the training codes)."""

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
