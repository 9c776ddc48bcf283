"""Training losses of the Latent Transformer and S3Editor editors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_correlation(labels: torch.Tensor) -> torch.Tensor:
    """Pearson correlation (A, A) of labels (N, A), binary or probabilities; constant columns
    correlate 0."""
    x = labels.float() - labels.float().mean(0)
    std = x.pow(2).sum(0).sqrt()
    corr = (x.T @ x) / (std[:, None] * std[None, :])
    return torch.nan_to_num(corr, nan=0.0)


def lt_losses(logits0: torch.Tensor, logits1: torch.Tensor, target: torch.Tensor,
              step: torch.Tensor, correlation: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Latent Transformer's three losses, every attribute's head at once.

    logits0 (N, A): the classifier on the codes; logits1 (A, N, A): on head k's edits;
    target (N, A) in {0, 1}: the class head k edits towards; step (A, N, d): w' - w;
    correlation (A, A): of the labels.
    cls: class-balanced BCE of attribute k after head k's edit (balanced per batch, as in the
    reference code, since most targets of a rare attribute are 1).
    attr: squared change of the other logits, attribute j weighted by 1 - |corr(k, j)|: an
    attribute that comes with k in the data may change with it.
    rec: mean square of w' - w, the size of the change.
    """
    heads = torch.arange(len(correlation))
    own = logits1[heads, :, heads]  # (A, N): head k's logit of attribute k
    t = target.T
    positives = t.sum(1, keepdim=True).clamp(min=1)
    negatives = (len(target) - t.sum(1, keepdim=True)).clamp(min=1)
    balance = t * len(target) / positives + (1 - t) * len(target) / negatives
    cls = (F.binary_cross_entropy_with_logits(own, t, reduction="none") * balance).mean()
    keep = 1 - correlation.abs()
    keep.fill_diagonal_(0)
    attr = ((logits1 - logits0[None]) ** 2 * keep[:, None, :]).mean()
    return {"cls": cls, "attr": attr, "rec": step.pow(2).mean()}


def identity_loss(edited: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """1 - cosine of identity codes (N, d): distance in the frozen dlib identity space."""
    return (1 - F.cosine_similarity(edited, original, dim=-1)).mean()


def faithfulness_loss(p0: torch.Tensor, p1: torch.Tensor, attr: torch.Tensor,
                      gamma: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """sum_{a' != a} |p1_a' - p0_a'| - gamma * (p1_a - p0_a), mean over the batch.

    p0, p1 (N, A): attribute probabilities before and after the edit of attribute attr (N,)
    with strength gamma (N,). The paper writes the target term -gamma * |p1_a - p0_a|; we use
    the signed change, which is the same when the edit moves the way gamma asks and, unlike
    the absolute value, does not reward a move the wrong way (nor punish the right one when
    gamma < 0). With `weight` (A, A), attribute a' counts weight[a, a'] in the sum (the
    target's own weight must be 0): 1 - |correlation| lets an edit move what comes with the
    attribute in real faces, as the Latent Transformer's L_attr does.
    """
    change = p1 - p0
    rows = torch.arange(len(attr))
    target = change[rows, attr]
    if weight is None:
        others = change.abs().sum(1) - target.abs()
    else:
        others = (change.abs() * weight[attr]).sum(1)
    return (others - gamma * target).mean()


def fit_gaussian(x: torch.Tensor, ridge: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and precision (d, d) of codes (N, d); the ridge keeps the nearly flat
    directions (the codes lie on a sphere) from getting a huge precision."""
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    cov = cov + ridge * cov.diagonal().mean() * torch.eye(len(mean))
    return mean, torch.linalg.inv(cov)


def mahalanobis_sq(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor
                   ) -> torch.Tensor:
    """Squared Mahalanobis distance (N,) of codes (N, d)."""
    c = x - mean
    return ((c @ precision) * c).sum(-1)


def manifold_loss(edited: torch.Tensor, original: torch.Tensor, mean: torch.Tensor,
                  precision: torch.Tensor) -> torch.Tensor:
    """How much less likely than the original the edited code is under the codes' Gaussian:
    relu(m^2(edited) - m^2(original)) / d, mean over the batch (standardised codes (N, d)).

    S3Editor's generation loss keeps edits realistic; here the edited code is all the
    diffusion decoder gets, and it was only trained on codes of real faces, so a code far out
    of their distribution renders unpredictably. The Mahalanobis distance charges a step by
    how rare it is in the data: cheap along directions the codes vary in, dear along the flat
    ones (a plain L2 penalty would charge both alike). The hinge leaves codes that stay as
    typical as they were alone, so the loss does not pull every code towards the mean face.
    """
    grow = mahalanobis_sq(edited, mean, precision) - mahalanobis_sq(original, mean, precision)
    return F.relu(grow).mean() / edited.shape[-1]
