"""Linear classifiers of the 40 CelebA attributes on standardised clip codes.

Their weight vectors are the attribute directions of the linear editor and the 'semantic
embeddings' that S3Editor clusters; their scores grade edits in latent space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.model.codes import IDENTITY_DIM


class LatentAttributeClassifier(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(self, dim: int = IDENTITY_DIM, attributes: tuple[str, ...] = ATTRIBUTES):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, len(attributes))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Attribute logits (N, 40) of clip codes (N, D)."""
        return self.linear(self.normalize(z))

    def index(self, attr: str) -> int:
        return list(self.config.attributes).index(attr)

    def direction(self, attr: str) -> torch.Tensor:
        """Unit direction of the attribute in normalised code space."""
        return F.normalize(self.linear.weight[self.index(attr)], dim=0)


def fit_classifier(codes: torch.Tensor, labels: torch.Tensor, steps: int = 300,
                   weight_decay: float = 1e-3) -> LatentAttributeClassifier:
    """Class-balanced logistic regression per attribute on codes (N, D) of any length D (the
    128-d identity code or the clip code); labels (N, 40) in {0, 1}."""
    model = LatentAttributeClassifier(dim=codes.shape[1])
    model.mean.copy_(codes.mean(0))
    model.std.copy_(codes.std(0).clamp(min=1e-6))
    positives = labels.mean(0).clamp(1e-4, 1 - 1e-4)
    # Weighting each class by the other's frequency makes both halves count equally.
    pos_weight = (1 - positives) / positives
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=steps,
                                  line_search_fn="strong_wolfe")
    x = model.normalize(codes)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = model.linear(x)
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
        loss = loss + weight_decay * model.linear.weight.pow(2).sum() / 2
        loss.backward()
        return loss

    optimizer.step(closure)
    return model.requires_grad_(False).eval()


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve by the rank-sum formula (ties broken by order)."""
    order = scores.argsort()
    ranks = torch.empty_like(order, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    pos = labels.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
