"""Put an edited face crop back into its full-resolution frame.

Two ways. Plain: warp the edited crop back and blend it in under the mask; the face then
carries the crop's resolution and the autoencoder's reconstruction error. Residual: warp back
only the change the edit made (edited minus the autoencoder's reconstruction of the same crop)
and add it to the frame, so the frame keeps its own detail and every pixel the edit did not
touch stays as it was. Residual keeps the frame's detail also where the edit takes something
away: sharp spectacle frames the model removed at its resolution still show through. With
`replace_detail` the frame's detail (the frame minus the warped crop) is dropped where the edit
changes the crop strongly. Either way pixels where the mask is 0 are copied bit for bit, and all
the work happens inside the mask's bounding box.
"""

from __future__ import annotations

import cv2
import numpy as np

from s3edit.face.align import uncrop

# The unsharp mask of `paste_back(thin_lines=True)`: on the dev clips a width of 0.7 crop
# pixels and a gain of 2 turned the eyeglasses' soft rims into lines (bench/README.md, stop 26).
THIN_LINE_SIGMA = 0.7
THIN_LINE_GAIN = 2.0
# Then each rim is narrowed to its middle: the darkening is weighted by (its darkness / the
# largest across the line within THIN_LINE_REACH crop pixels) ** (THIN_LINE_POWER - 1), so a rim
# two or three crop pixels wide, ten or more frame pixels on a large face, becomes a line (half
# its width or less), and darkened to keep its ink (its darkening summed over that reach), by at
# most THIN_LINE_MAX_GAIN: narrowed alone, the rims faded, for the eye on small faces and for
# the evaluation classifier (megaportrait -1eKufUP5XQ_4, Eyeglasses 0.98 -> 0.6 on frames 8 and
# 16; with the ink kept 0.97-0.98; bench/README.md, stop 31).
THIN_LINE_REACH = 2.0
THIN_LINE_POWER = 8.0
THIN_LINE_MAX_GAIN = 3.0


def paste_back(frame: np.ndarray, crop: np.ndarray, square: np.ndarray, mask: np.ndarray, *,
               reconstructed_crop: np.ndarray | None = None,
               replace_detail: tuple[float, float] | None = None,
               thin_lines: bool = False) -> np.ndarray:
    """The frame (uint8, h x w [x c]) with the edited `crop` of `square` blended in.

    `mask` is (h, w) in [0, 1] at the frame's resolution. Giving `reconstructed_crop` (the
    autoencoder's reconstruction of the crop without an edit) switches to residual mode.
    `replace_detail` (residual mode only) = (low, high): where the change of a crop pixel
    (largest over channels, in 0-255 units, smoothed over a pixel) is above `low`, the frame's
    own detail is faded out, entirely above `high`, so the face there is the edited crop.
    `thin_lines` (residual mode only) takes the change for dark lines drawn at the crop's
    resolution, such as spectacle rims: warped to the frame, it is sharpened by an unsharp mask
    (THIN_LINE_SIGMA crop pixels, weight THIN_LINE_GAIN), only its darkening is kept and each
    line is narrowed to its middle (`_thinned`), so a rim a few crop pixels wide is drawn as a
    line, not a soft band.
    """
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"mask is {mask.shape}, frame is {frame.shape[:2]}")
    if reconstructed_crop is not None and reconstructed_crop.shape != crop.shape:
        raise ValueError(f"crops differ in shape: {reconstructed_crop.shape} vs {crop.shape}")

    out = frame.copy()
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1

    # Warp into the box only: shifting the square's centre moves the crop by the box offset.
    local = np.array(square, np.float64)
    local[0] -= (x0, y0)
    box_shape = (y1 - y0, x1 - x0)
    m = mask[y0:y1, x0:x1].astype(np.float32)
    if frame.ndim == 3:
        m = m[..., None]
    base = frame[y0:y1, x0:x1].astype(np.float32)

    if reconstructed_crop is None:
        warped = _warp(crop.astype(np.float32), local, box_shape, frame.ndim)
        # Where the crop's footprint ends the warp fades to 0; fade the blend weight with it.
        cover = _warp(np.ones(crop.shape[:2], np.float32), local, box_shape, frame.ndim)
        blended = base * (1 - m * cover) + warped * m
    else:
        change = crop.astype(np.float32) - reconstructed_crop.astype(np.float32)
        warped_change = _warp(change, local, box_shape, frame.ndim)
        if thin_lines:
            crop_pixel = 2 * np.linalg.norm(square[1]) / crop.shape[0]  # in frame pixels
            soft = cv2.GaussianBlur(warped_change, (0, 0), THIN_LINE_SIGMA * crop_pixel
                                    ).reshape(warped_change.shape)  # cv2 drops a 1-channel axis
            warped_change = np.minimum(warped_change + THIN_LINE_GAIN * (warped_change - soft), 0)
            warped_change = _thinned(warped_change, THIN_LINE_REACH * crop_pixel)
        blended = base + warped_change * m
        if replace_detail is not None:
            low, high = replace_detail
            strength = cv2.GaussianBlur(np.abs(change).max(axis=-1) if change.ndim == 3
                                        else np.abs(change), (0, 0), 1.0)
            fade = np.clip((strength - low) / (high - low), 0, 1)
            detail = base - _warp(reconstructed_crop.astype(np.float32), local, box_shape,
                                  frame.ndim)
            blended -= _warp(fade, local, box_shape, frame.ndim) * m * detail

    pasted = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(m > 0, pasted, frame[y0:y1, x0:x1])
    return out


def _thinned(darkening: np.ndarray, reach: float) -> np.ndarray:
    """A change (h, w [, c]) that only darkens, with each line narrowed to its middle and as
    much ink as before (see THIN_LINE_POWER). Darkness is compared on a smoothed copy, whose
    lines follow curves where the warped crop's pixels make steps, and across each line, not
    all round: along a rim it dips where the crop's pixels fall, and a round neighbourhood cut
    the line into dashes there."""
    depth = -darkening.mean(axis=-1) if darkening.ndim == 3 else -darkening
    smooth = cv2.GaussianBlur(depth, (0, 0), max(reach / 2, 1.0))
    dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0)
    dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2)
    dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1)
    # Across a dark line is where the darkness curves down most: the Hessian's eigenvector of
    # the lower eigenvalue.
    angle = 0.5 * np.arctan2(2 * dxy, dxx - dyy) + np.pi / 2
    step_x, step_y = np.cos(angle), np.sin(angle)
    rows, cols = np.indices(depth.shape, dtype=np.float32)
    across = smooth.copy()
    for offset in range(1, int(np.ceil(reach)) + 1):
        for sign in (-1, 1):
            shifted = cv2.remap(smooth, cols + sign * offset * step_x,
                                rows + sign * offset * step_y, cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
            np.maximum(across, shifted, out=across)
    share = np.divide(smooth, across, out=np.zeros_like(smooth), where=across > 1e-6)
    factor = share ** (THIN_LINE_POWER - 1)
    ink = cv2.GaussianBlur(depth, (0, 0), reach)
    kept = cv2.GaussianBlur(depth * factor, (0, 0), reach)
    factor *= np.minimum(np.divide(ink, kept, out=np.ones_like(ink), where=kept > 1e-3),
                         THIN_LINE_MAX_GAIN)
    return darkening * (factor[..., None] if darkening.ndim == 3 else factor)


def extend_past_crop(pasted: np.ndarray, change: np.ndarray, square: np.ndarray,
                     weights: np.ndarray, hair: np.ndarray, fade: np.ndarray) -> np.ndarray:
    """`pasted` (a frame with the `change` (R, R, 3) of its aligned crop of `square` pasted
    back) with the hair past the crop changed too: the (h, w) 0/1 `hair` takes the mean of
    `change` under `weights` (R, R), the hair along the crop's edge. Hair the model's crop cuts
    off (a bob's ends below the chin) then changes with the rest instead of stopping at the
    crop's straight edge. `fade` (S, S), 1 inside the crop and falling to 0 at its edge as the
    pasted change does, hands over from the one to the other."""
    total = float(weights.sum())
    rows = np.flatnonzero(hair.any(axis=1))
    if total < 1e-3 or rows.size == 0:
        return pasted
    cols = np.flatnonzero(hair.any(axis=0))
    # The hair's box, grown by the blur's reach.
    sigma = 0.02 * float(np.linalg.norm(square[1]))
    pad = int(np.ceil(3 * sigma))
    h, w = hair.shape
    y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, h)
    x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, w)
    local = np.array(square, np.float64)
    local[0] -= (x0, y0)
    inside = uncrop(fade.astype(np.float32), local, (y1 - y0, x1 - x0))
    past = cv2.GaussianBlur(hair[y0:y1, x0:x1].astype(np.float32), (0, 0), sigma) * (1 - inside)
    mean_change = (change * weights[..., None]).sum((0, 1)) / total
    out = pasted.copy()
    box = out[y0:y1, x0:x1].astype(np.float32) + past[..., None] * mean_change
    out[y0:y1, x0:x1] = np.clip(np.rint(box), 0, 255).astype(np.uint8)
    return out


def _warp(image: np.ndarray, square: np.ndarray, shape: tuple[int, int], ndim: int
          ) -> np.ndarray:
    """`uncrop` into `shape`, with a trailing channel axis kept for colour frames."""
    warped = uncrop(image, square, shape)
    return warped[..., None] if ndim == 3 and warped.ndim == 2 else warped
