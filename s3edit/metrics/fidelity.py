"""Editing fidelity (did the attribute change, and only it?) and locality (where did pixels
change?).

Fidelity reads the image classifier's probabilities on aligned crops of original and edited
frames: the target attribute should move, the 39 others should stay. Locality is the share of
the pixel change that falls inside the region the attribute lives in (eyes, mouth, hair or the
whole face), measured on full frames with the region drawn from the original frame's mesh.
"""

from __future__ import annotations

import numpy as np

from s3edit.face.mask import region_mask

# Per-pixel change (mean over RGB, 0-255 levels) at or below this counts as none: re-encoding
# a clip at CRF 18 changes pixels by 0.3 on average, which summed over a whole frame would
# otherwise outweigh an edit that covers the eyes; a floor of 4 removes 99% of that noise.
NOISE_FLOOR = 4.0


def pixel_change(original: np.ndarray, edited: np.ndarray, noise_floor: float = NOISE_FLOOR
                 ) -> np.ndarray:
    """(h, w) float32 change per pixel: mean absolute RGB difference above the noise floor."""
    diff = np.abs(original.astype(np.int16) - edited.astype(np.int16)).mean(-1, dtype=np.float32)
    return np.maximum(diff - noise_floor, 0)


def change_inside(original: np.ndarray, edited: np.ndarray, mesh: np.ndarray, region: str,
                  noise_floor: float = NOISE_FLOOR) -> tuple[float, float]:
    """(change inside the region, total change) of one frame, summed over pixels."""
    change = pixel_change(original, edited, noise_floor)
    mask = region_mask(mesh, original.shape[:2], region)
    return float((change * mask).sum()), float(change.sum())


def locality(inside: np.ndarray, total: np.ndarray) -> float:
    """Share of all the change that is inside the region, pooled over frames; NaN if none."""
    inside, total = np.asarray(inside, np.float64), np.asarray(total, np.float64)
    keep = np.isfinite(inside) & np.isfinite(total)
    pooled = total[keep].sum()
    return float(inside[keep].sum() / pooled) if pooled > 0 else float("nan")


def attribute_changes(original: np.ndarray, edited: np.ndarray, index: int
                      ) -> tuple[float, float, np.ndarray]:
    """(target change, off-target change, per-attribute change) from probabilities (K, A) of
    the same frames.

    The target change is the mean over frames of edited minus original probability of attribute
    `index`; the off-target change the mean absolute change of all the other attributes; the
    per-attribute change (A,) each attribute's mean signed change, which says which attributes
    an edit drags along. Frames with NaN rows (no face in either clip) are left out.
    """
    keep = np.isfinite(original).all(1) & np.isfinite(edited).all(1)
    if not keep.any():
        return float("nan"), float("nan"), np.full(original.shape[1], np.nan)
    delta = edited[keep].astype(np.float64) - original[keep]
    others = np.delete(delta, index, axis=1)
    return float(delta[:, index].mean()), float(np.abs(others).mean()), delta.mean(0)
