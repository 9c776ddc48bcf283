"""S3Editor (Wang et al., arXiv 2404.08111) on the clip code.

The edit starts as the linear editor's step in standardised code space, u = x + s*sqrt(d)*a
(a the attribute's unit classifier direction), and a learned transform refines it:
T(u) = u + g(u, a, s), a residual MLP conditioned on the direction and the strength, and
y = renorm(denorm(T(u))) (renorm: the clip code's identity part back on the unit sphere).
There is one transform per cluster of attributes (`routing.py`), and
each transform's hidden neurons come in groups some of which training switches off for good
(`sparsity.py`).

Last, y slides along its meridian towards the target's axis (the great circle through y and
the unit normal v of the target logit's level sets on the sphere) to where its target logit is
f times as far from the original's as the linear edit's, f an extra output of T. With
`target_move="boost"` (what `fit_s3` trains) f = 1 + softplus(raw) >= 1: T can lengthen the
requested change but never take it back. With a plain l2norm it could, by rescaling the
standardised code, and with latent classifiers whose sigmoid reward for moving the target
saturates, taking back part of the edit is the cheapest way to keep the other attributes.
T spends its freedom on those, on the identity and on staying where codes lie. Measured: the
raw output ends so negative that f stays within 0.001 of 1 and softplus passes no gradient.
With `target_move="factor"`, f = exp(raw), starting at 1, may lengthen or shorten the move
where losses on decoded faces ask for it (`train/decoded_faces.py`).

On a clip code (identity, then attribute values) the slide is split between the two parts by
the share of the unit normal v in each: the attribute part moves along v's attribute part
(it is free), the identity part along its meridian, and the target logit lands exactly where
it would on the identity code alone. Without attribute values it is the slide above.

Region groups (`groups="regions"`, clip codes with attribute values only): the sparsity groups
are what each transform writes into each region of the code, instead of its hidden neurons.
The regions are the identity (dlib) part and the attribute values of the eyes, the mouth, the
hair and the rest of the face (`CODE_REGIONS`; `bench/code_regions.py` measures that the
decoder draws each attribute value mostly where this says, and the identity values mostly in
the hair and background). Each group has a gate: the edit is x + keep * (T(u) - x), keep the
gate of each dimension's region (the target's own value is always written), so a switched-off
group leaves its region of the code as it was, the linear step's share included. Training
switches off the groups that change most where the cluster's attributes should not (see
`S3Editor.over_editing`). The target logit is then completed within the written attribute values
(along v's part there), not along v: the slide would write the switched-off regions back.
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
from s3edit.edit.sparsity import Member, neuron_block_index
from s3edit.face.mask import attribute_region
from s3edit.model.codes import IDENTITY_DIM, renormalise_clip_code

# The code's regions for region groups: the identity part, then the attribute values by the
# face region each attribute lives in.
CODE_REGIONS = ("identity", "eyes", "mouth", "face", "hair")


def code_regions(attributes: tuple[str, ...] = ATTRIBUTES) -> torch.Tensor:
    """(d,) the `CODE_REGIONS` index of each value of a clip code with these attribute
    values: the identity part, then each attribute's face region."""
    own = [CODE_REGIONS.index(attribute_region(a)) for a in attributes]
    return torch.tensor([0] * IDENTITY_DIM + own)


class S3Transform(ModelMixin, ConfigMixin):
    """`clusters` MLPs [u, a, s] -> hidden -> hidden -> (g, b), stacked along dim 0.

    Buffers saved with the weights: `cluster_of` (attributes,) each attribute's transform,
    `centroids` (clusters, d) the routing centroids, `active` (groups,) the sparsity mask
    (groups of `group_size` neurons of either hidden layer of each transform, or with
    `groups="regions"` each transform's region of the code: `gate` (clusters, regions) and
    `code_region` (d,) say which).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, dim: int = IDENTITY_DIM, hidden: int = 128, clusters: int = 5,
                 group_size: int = 8, attributes: tuple[str, ...] = ATTRIBUTES,
                 target_move: str = "boost", groups: str = "neurons"):
        super().__init__()
        if target_move not in ("boost", "factor"):
            raise ValueError(f"target_move {target_move!r} is not 'boost' or 'factor'")
        if groups not in ("neurons", "regions"):
            raise ValueError(f"groups {groups!r} is not 'neurons' or 'regions'")
        if groups == "regions" and dim != IDENTITY_DIM + len(attributes):
            raise ValueError("region groups need clip codes with the attribute values")
        k, cond = clusters, 2 * dim + 1
        self.w1 = nn.Parameter(torch.randn(k, cond, hidden) / math.sqrt(cond))
        self.b1 = nn.Parameter(torch.zeros(k, hidden))
        self.w2 = nn.Parameter(torch.randn(k, hidden, hidden) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(k, hidden))
        # Zero output layer: an untrained transform is nearly the linear edit (g = 0, and
        # f = 1 + softplus(-4) = 1.02, the boost small but not where its gradient vanishes;
        # or f = exp(0) = 1).
        raw = -4.0 if target_move == "boost" else 0.0
        self.w3 = nn.Parameter(torch.zeros(k, hidden, dim + 1))
        self.b3 = nn.Parameter(torch.cat([torch.zeros(k, dim), torch.full((k, 1), raw)], 1))
        self.register_buffer("cluster_of", torch.zeros(len(attributes), dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(k, dim))
        if groups == "neurons":
            self.register_buffer("active", torch.ones(2 * k * (hidden // group_size),
                                                      dtype=torch.bool))
            return
        self.gate = nn.Parameter(torch.ones(k, len(CODE_REGIONS)))
        self.register_buffer("active", torch.ones(k * len(CODE_REGIONS), dtype=torch.bool))
        self.register_buffer("code_region", code_regions(attributes))

    def sparsity_members(self) -> list[Member]:
        """Each parameter in a group, with its elements' group ids (-1: none)."""
        if self.config.groups == "regions":
            k, regions = self.gate.shape
            # (k, d + 1): the region each output writes; the target move's factor, none.
            out = torch.cat([torch.arange(k)[:, None] * regions + self.code_region,
                             torch.full((k, 1), -1)], 1)
            return [(self.gate, torch.arange(k * regions).view(k, regions)),
                    (self.w3, out[:, None].expand_as(self.w3)), (self.b3, out)]
        gs, per_layer = self.config.group_size, self.active.numel() // 2

        def ids(p: nn.Parameter, dim: int, offset: int) -> torch.Tensor:
            return neuron_block_index(tuple(p.shape), dim, gs, offset)

        return [(self.w1, ids(self.w1, 2, 0)), (self.b1, ids(self.b1, 1, 0)),
                (self.w2, ids(self.w2, 1, 0)),  # first layer's neurons: outgoing weights
                (self.w2, ids(self.w2, 2, per_layer)), (self.b2, ids(self.b2, 1, per_layer)),
                (self.w3, ids(self.w3, 1, per_layer))]

    def forward(self, u: torch.Tensor, direction: torch.Tensor, gamma: torch.Tensor,
                cluster: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual g (N, d) and the target move's factor f > 0 (N,) for linearly edited codes
        u (N, d), unit directions (N, d), strengths (N,) and the transform of each row (N,)."""
        x = torch.cat([u, direction, gamma[:, None]], dim=1)
        out = u.new_empty(len(u), u.shape[1] + 1)
        for k in cluster.unique().tolist():
            rows = (cluster == k).nonzero().flatten()
            h = F.silu(x[rows] @ self.w1[k] + self.b1[k])
            h = F.silu(h @ self.w2[k] + self.b2[k])
            out = out.index_put((rows,), h @ self.w3[k] + self.b3[k])
        raw = out[:, -1]
        factor = 1 + F.softplus(raw) if self.config.target_move == "boost" else raw.exp()
        return out[:, :-1], factor

    def region_keep(self, attr: torch.Tensor) -> torch.Tensor:
        """(N, d) region groups' gates over the code for edits of attributes `attr` (N,), 1 on
        each target's own value."""
        keep = self.gate[self.cluster_of[attr]][:, self.code_region]
        return keep.scatter(1, IDENTITY_DIM + attr[:, None], 1.0)

    def kept_regions(self) -> list[list[str]]:
        """For region groups: the code regions each cluster's transform still writes."""
        active = self.active.view(self.gate.shape[0], len(CODE_REGIONS))
        return [[r for r, on in zip(CODE_REGIONS, row, strict=True) if on] for row in active]

    def with_free_factor(self) -> S3Transform:
        """A copy whose target move is f = exp(raw), set to f = 1 (a boost transform's f is
        within 0.001 of it), for fine-tuning that may lengthen or shorten edits."""
        settings = {k: v for k, v in self.config.items() if not k.startswith("_")}
        copy = S3Transform(**{**settings, "target_move": "factor"})
        copy.load_state_dict(self.state_dict())
        with torch.no_grad():
            copy.w3[..., -1] = 0
            copy.b3[:, -1] = 0
        return copy.eval()


class S3Editor(BatchEditor):
    """`--editor s3`; the scale is the linear editor's (a fraction of a code's length)."""

    name = "s3"

    def __init__(self, transform: S3Transform, classifier: LatentAttributeClassifier):
        self.transform = transform
        self.classifier = classifier

    def edit_batch(self, z: torch.Tensor, attr: torch.Tensor, gamma: torch.Tensor
                   ) -> torch.Tensor:
        """Edited clip codes of codes z (N, D), attribute indices (N,), strengths (N,)."""
        c = self.classifier
        x, change, v, k = self.edit_plan(z, attr, gamma)
        y = renormalise_clip_code(c.denormalize(x + change))
        if self.transform.config.groups == "neurons":
            return slide(y, v, k)
        written = v * self.transform.region_keep(attr)
        written[:, :IDENTITY_DIM] = 0
        # v . written >= v_target^2 > 0: the target's own value is always written.
        shortfall = (k - (v * y).sum(-1)) / (v * written).sum(-1)
        return y + shortfall[:, None] * written

    def over_editing(self, z: torch.Tensor, attr: torch.Tensor, gamma: torch.Tensor
                     ) -> torch.Tensor:
        """(clusters * regions,) for region groups: each group's squared change (standardised
        code units, before the target's completion) in the code regions where the edited
        attribute does not live, the identity part included, per edit of its cluster."""
        t = self.transform
        _, change, _, _ = self.edit_plan(z, attr, gamma)
        regions = len(CODE_REGIONS)
        foreign = t.code_region[None, :] != t.code_region[IDENTITY_DIM + attr][:, None]
        group = t.cluster_of[attr][:, None] * regions + t.code_region[None, :]
        scores = torch.zeros(t.active.numel()).index_add_(
            0, group.flatten(), (change.detach() ** 2 * foreign).flatten())
        edits = torch.bincount(t.cluster_of[attr], minlength=t.gate.shape[0]).clamp(min=1)
        return scores / edits.repeat_interleave(regions)

    def edit_plan(self, z: torch.Tensor, attr: torch.Tensor, gamma: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Standardised codes x, the change the transform makes to them, the target logit's
        unit normal v (raw code space) and the value k of v . y the edit must reach."""
        c = self.classifier
        weight = c.linear.weight[attr]
        direction = F.normalize(weight, dim=-1)
        x = c.normalize(z)
        u = x + gamma[:, None] * math.sqrt(z.shape[-1]) * direction
        g, factor = self.transform(u, direction, gamma, self.transform.cluster_of[attr])
        change = u + g - x
        if self.transform.config.groups == "regions":
            change = change * self.transform.region_keep(attr)
        # The target logit is an affine function of v . z.
        v = F.normalize(weight / c.std, dim=-1)
        k0 = (v * z).sum(-1)
        k_linear = (v * renormalise_clip_code(c.denormalize(u))).sum(-1)
        return x, change, v, k0 + factor * (k_linear - k0)


def slide(y: torch.Tensor, v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Clip codes y (N, D) moved so that v . y = k, for unit v (N, D) and targets k (N,).

    The shortfall delta = k - v . y is made up by y_a + delta * v_a in the attribute part and,
    in the identity part, by the point of y_i's meridian towards v_i's axis whose
    v_i-component is v_i . y_i + |v_i|^2 delta; the two add up to delta as |v_i|^2 + |v_a|^2
    = 1. For a 128-d code (no attribute part) that is the point with v . y = k on the meridian.
    """
    v_i, v_a = v[..., :IDENTITY_DIM], v[..., IDENTITY_DIM:]
    y_i, y_a = y[..., :IDENTITY_DIM], y[..., IDENTITY_DIM:]
    delta = k - (v * y).sum(-1)
    length = v_i.norm(dim=-1).clamp(min=1e-12)
    axis = v_i / length[:, None]
    along = (axis * y_i).sum(-1)
    cos = (along + length * delta).clamp(-1 + 1e-6, 1 - 1e-6)
    across = F.normalize(y_i - along[:, None] * axis, dim=-1)
    identity = cos[:, None] * axis + (1 - cos**2).sqrt()[:, None] * across
    return torch.cat([identity, y_a + delta[:, None] * v_a], -1)
