"""How much edit guidance a clip is decoded with when eyeglasses are put on it.

The decoder draws the same edit of the clip code more strongly on some faces than on
others. At eyeglasses +0.6 without guidance, 10 of 23 clips facing the camera got glasses on
fewer than 90% of their frames, some on none. Edit guidance
(`DiffusionFaceAutoencoder.sample`) scales the edit at decoding. Guidance 2 on every clip
drew glasses on most of the 10, but over-drew them on the others: liveportrait d10's
identity fell from 0.980 to 0.936 (bench/README.md, stop 39). So the first keyframes are
decoded without guidance, and the clip gets the guidance that brings their change over the
eyes up to what clips that draw spectacle frames show.
"""

from __future__ import annotations

import numpy as np
import torch

from s3edit.model.codes import FIRST_CODED_POINT

# The mean change over the eyes (0-255, in the model's crop, lenses clear) to reach, per unit
# of scale: 20 at +0.6. That is about what guidance 1.5 draws on a typical clip. Without
# guidance, the clips that got glasses showed 10-23 and those that did not 7-18, so no
# threshold separates them (bench/README.md, stop 39).
EYE_CHANGE_PER_SCALE = 33.0
MAX_CALIBRATED_GUIDANCE = 2.0
# The eyes (iBUG points 36-47) in a landmark code.
_EYES = slice(36 - FIRST_CODED_POINT, 48 - FIRST_CODED_POINT)


def eye_change(delta: np.ndarray, landmarks: torch.Tensor | np.ndarray) -> float:
    """The mean absolute change over the eyes of crops changed by `delta` (N, R, R, 3), in
    0-255 units. Each crop's eye box comes from its landmark code (N, 102). The box spans the
    eye corners plus 15% of their span on each side. It reaches a quarter of the span above
    the eyes' centre (the brows) and 30% below it (the lower rims)."""
    points = (np.asarray(landmarks, np.float32).reshape(len(delta), -1, 2)[:, _EYES] + 1) / 2
    size = delta.shape[1]
    changes = []
    for change, eyes in zip(np.abs(delta), points * size, strict=True):
        left, right = eyes[:, 0].min(), eyes[:, 0].max()
        span, middle = right - left, eyes[:, 1].mean()
        rows = slice(max(0, int(middle - 0.25 * span)), min(size, int(middle + 0.3 * span) + 1))
        cols = slice(max(0, int(left - 0.15 * span)), min(size, int(right + 0.15 * span) + 1))
        changes.append(change[rows, cols].mean())
    return float(np.mean(changes))


def calibrated_guidance(change: float, scale: float) -> float:
    """The guidance that brings an eyeglasses edit of `scale` (> 0), whose decode without
    guidance changes the eyes by `change` (`eye_change`), to EYE_CHANGE_PER_SCALE * scale.
    The guidance is never under 1 (the edit as the code asks) or over
    MAX_CALIBRATED_GUIDANCE, and is rounded to hundredths."""
    wanted = EYE_CHANGE_PER_SCALE * scale
    return round(float(np.clip(wanted / max(change, 1e-6), 1.0, MAX_CALIBRATED_GUIDANCE)), 2)
