"""Expression attributes: edited in every frame's landmark code, not in the identity code.

A smile, an open mouth, raised cheeks or narrowed eyes come and go from frame to frame. On
held-out CelebA-HQ faces, linear scores of dlib's identity code hardly separate them (ROC AUC
0.62-0.75), the landmark code projected on the edit direction does better (0.67-0.95). Of the
other 36 attributes only Oval_Face scores higher in the landmarks, and it is a face shape that
neither code separates well (0.64 / 0.61). So for the four, the edit leaves the identity code
alone and adds to every frame's landmark code scale x (mean landmark code of the faces with the
attribute - of the faces without): scale 1 moves an average face without it to the average face
with it, and the clip's own motion rides on top. Past the typical face with the expression the
added move shrinks, so that a frame that already shows it is not pushed beyond the faces the
decoder learnt (`ExpressionEdit`). Every other attribute goes to the identity
editor, whose edited code `edit_codes` then holds within the values the decoder draws well
(VALUE_LIMITS), with the hair colours other than the edited one lowered to match it
(EXCLUSIVE_ATTRIBUTES).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.base import Editor
from s3edit.model.codes import ATTRIBUTE_DIM, IDENTITY_DIM, LANDMARK_DIM

EXPRESSION_ATTRIBUTES = ("High_Cheekbones", "Mouth_Slightly_Open", "Narrow_Eyes", "Smiling")
# Attribute values an edited clip code may not exceed. The decoder learnt the attributes as labels
# in [-1, 1], and for most edits a value pushed past +1 draws more of the attribute: the
# editors' push of Eyeglasses to about +4 is what draws the rims, and grey or brown hair held at
# +1 comes out fainter. Blond is the exception: s3 at +0.6 writes Blond_Hair +3.9 and the hair
# comes out white-grey (the evaluation classifier calls it Gray_Hair); held at +1 it is golden
# (bench/README.md, stop 27).
VALUE_LIMITS = {"Blond_Hair": 1.0}
# Attributes of which a face has one at most (two are +1 together on 1.2% of CelebA-HQ's faces).
# An edit toward one of them holds the others at or under minus its edited value: blond raised
# to +1 takes black, brown and grey hair to -1, as in a blond face's labels. s3 is trained to
# leave the other attributes alone, and on a black-haired face wrote Blond_Hair +1 beside
# Black_Hair +0.65 (bench/README.md, stop 29).
EXCLUSIVE_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


# Where along an expression's direction the added move starts to shrink (the knee) and what it
# approaches (the bound), as quantiles of the training faces' projections: of the faces with the
# expression when adding it, of the faces without (mirrored: 0.5 and 0.01) when removing it.
# Without the bound the d0 speaker, smiling already (Smiling projection 0.30; the median smiling
# face 0.29, the 99th percentile 0.45), went to 0.59 at +1.5, and the decoder drew his thin
# moustache as a thick dark band over the lip (bench/README.md, stop 38).
KNEE_QUANTILE, BOUND_QUANTILE = 0.5, 0.99


def saturate(x: torch.Tensor, knee: float, bound: float) -> torch.Tensor:
    """x up to `knee`; past it (on the side of `bound`) a smooth approach to `bound`, with
    slope 1 at the knee."""
    width = bound - knee
    past = (x - knee) / width
    return torch.where(past > 0, knee + width * torch.tanh(past), x)


@dataclass
class ExpressionEdit:
    """An expression edit of landmark codes: a move of `step` along the unit `direction`,
    shrunk as the projection nears `bound` past `knee`. The move of each frame is
    saturate(p + step) - saturate(p) for its projection p: the full step for a frame far from
    the bound, less for one that already shows the expression, and never a move back."""

    direction: torch.Tensor
    step: float
    knee: float
    bound: float

    def __call__(self, landmarks: torch.Tensor) -> torch.Tensor:
        """(..., dim) landmark codes -> the same, edited."""
        p = landmarks @ self.direction
        move = (saturate(p + self.step, self.knee, self.bound)
                - saturate(p, self.knee, self.bound))
        return landmarks + move[..., None] * self.direction


class ExpressionDirections(ModelMixin, ConfigMixin):
    """Per expression attribute: the mean difference of the landmark codes of faces with and
    without it (`directions`), and along it the knee and bound of removing and of adding it
    (`limits`: lower bound, lower knee, upper knee, upper bound)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, attributes: tuple[str, ...] = EXPRESSION_ATTRIBUTES,
                 dim: int = LANDMARK_DIM):
        super().__init__()
        self.register_buffer("directions", torch.zeros(len(attributes), dim))
        self.register_buffer("limits", torch.zeros(len(attributes), 4))

    def holds(self, attr: str) -> bool:
        return attr in self.config.attributes

    def edit(self, attr: str, scale: float) -> ExpressionEdit:
        """The edit of `attr` (one it holds) at `scale`: scale 1 moves by the mean difference."""
        i = list(self.config.attributes).index(attr)
        difference = self.directions[i]
        lower_bound, lower_knee, upper_knee, upper_bound = self.limits[i].tolist()
        knee, bound = (upper_knee, upper_bound) if scale >= 0 else (lower_knee, lower_bound)
        return ExpressionEdit(difference / difference.norm(), scale * float(difference.norm()),
                              knee, bound)


def fit_expression_directions(landmarks: torch.Tensor, labels: torch.Tensor,
                              attributes: tuple[str, ...] = EXPRESSION_ATTRIBUTES
                              ) -> ExpressionDirections:
    """Mean differences of landmark codes (N, dim) between faces with and without each
    attribute, and the limits along them; labels (N, 40) in {0, 1}, columns in ATTRIBUTES
    order."""
    model = ExpressionDirections(attributes, landmarks.shape[1])
    quantiles = torch.tensor([1 - BOUND_QUANTILE, 1 - KNEE_QUANTILE, KNEE_QUANTILE,
                              BOUND_QUANTILE])
    for i, attr in enumerate(attributes):
        has = labels[:, ATTRIBUTES.index(attr)].bool()
        if has.all() or not has.any():
            raise ValueError(f"{attr}: the labels need faces with and without it")
        difference = landmarks[has].mean(0) - landmarks[~has].mean(0)
        model.directions[i] = difference
        along = landmarks @ (difference / difference.norm())
        without, with_ = along[~has].quantile(quantiles[:2]), along[has].quantile(quantiles[2:])
        model.limits[i] = torch.cat([without, with_])
    return model.eval()


@dataclass
class CodeEdit:
    """What an edit does to a clip's codes: its clip code (D,) (identity, then any attribute
    values), and the expression edit of every frame's landmark code (None: the landmarks stay
    as tracked)."""

    identity: torch.Tensor
    expression: ExpressionEdit | None = None

    def landmarks(self, landmarks: torch.Tensor) -> torch.Tensor:
        return landmarks if self.expression is None else self.expression(landmarks)

    def changes(self, identity: torch.Tensor) -> bool:
        return self.expression is not None or not torch.equal(self.identity, identity)


def edit_codes(editor: Editor, expressions: ExpressionDirections | None,
               identity: torch.Tensor, attr: str, scale: float) -> CodeEdit:
    """Route the edit: expression attributes to the landmarks (when `expressions` holds them),
    the rest to the editor of the clip code `identity` (D,), whatever its length."""
    if expressions is not None and expressions.holds(attr):
        return CodeEdit(identity, expressions.edit(attr, scale) if scale else None)
    return CodeEdit(within_value_limits(editor.edit(identity, attr, scale), attr))


def within_value_limits(code: torch.Tensor, attr: str | None = None) -> torch.Tensor:
    """An edited clip code (..., D) with its attribute values held under VALUE_LIMITS and, for
    an edit of `attr` among EXCLUSIVE_ATTRIBUTES, the others held under minus its value; a code
    without attribute values (identity only) is returned as it is."""
    if code.shape[-1] != IDENTITY_DIM + ATTRIBUTE_DIM:
        return code
    code = code.clone()
    for name, limit in VALUE_LIMITS.items():
        i = IDENTITY_DIM + ATTRIBUTES.index(name)
        code[..., i] = code[..., i].clamp(max=limit)
    if attr in EXCLUSIVE_ATTRIBUTES:
        target = code[..., IDENTITY_DIM + ATTRIBUTES.index(attr)]
        for other in EXCLUSIVE_ATTRIBUTES:
            if other != attr:
                i = IDENTITY_DIM + ATTRIBUTES.index(other)
                code[..., i] = torch.minimum(code[..., i], -target)
    return code
