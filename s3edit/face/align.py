"""FFHQ-style alignment: a rotated square around the eyes and mouth, smoothed over time.

The square is kept as its centre `c` and half-axes `x`, `y` (as in the FFHQ script and STIT),
so that smoothing can treat the position (jittery, small sigma) apart from the scale and
rotation (steady, larger sigma).
"""

from __future__ import annotations

import cv2
import numpy as np


def square_from_landmarks(lm68: np.ndarray) -> np.ndarray:
    """(3, 2) array [centre, x half-axis, y half-axis] of the FFHQ crop for one face."""
    eye_left = lm68[36:42].mean(0)
    eye_right = lm68[42:48].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm68[48] + lm68[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    centre = eye_avg + eye_to_mouth * 0.1
    return np.stack([centre, x, y]).astype(np.float64)


def gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along axis 0 with reflected ends; sigma in frames, 0 leaves it as is."""
    if sigma <= 0 or len(values) < 2:
        return values.copy()
    radius = max(1, int(round(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    flat = values.reshape(len(values), -1)
    # Odd reflection continues a steady motion past the ends instead of folding it back.
    padded = np.pad(flat, ((radius, radius), (0, 0)), mode="reflect", reflect_type="odd") \
        if len(values) > radius else np.pad(flat, ((radius, radius), (0, 0)), mode="edge")
    out = np.stack([np.convolve(col, taps, mode="valid") for col in padded.T], axis=1)
    return out.reshape(values.shape)


def smooth_squares(squares: np.ndarray, sigma_centre: float, sigma_xy: float) -> np.ndarray:
    """Smooth a (T, 3, 2) sequence of squares over time."""
    out = squares.copy()
    out[:, 0] = gaussian_smooth(squares[:, 0], sigma_centre)
    out[:, 1:] = gaussian_smooth(squares[:, 1:], sigma_xy)
    return out


def crop_matrix(square: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine matrix from frame pixels to crop pixels (crop is size x size)."""
    centre, x, y = square
    src = np.float32([centre - x - y, centre - x + y, centre + x + y])
    dst = np.float32([[0, 0], [0, size], [size, size]])
    return cv2.getAffineTransform(src, dst)


def align_crop(frame: np.ndarray, square: np.ndarray, size: int,
               border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """Cut the square out of the frame as a size x size image. Beyond the frame's edge the
    crop is filled by `border`: mirrored, as the model was trained, by default.

    Warps first at the square's own pixel size (capped at 1024) and then shrinks with area
    averaging, so a large face is low-passed rather than aliased when it becomes a small crop.
    """
    side = float(np.hypot(*square[1]) * 2)
    work = int(np.clip(round(side), size, 1024))
    matrix = crop_matrix(square, work)
    # cv2.resize maps pixel centres, not corners: shift so the shrunk crop lines up with
    # crop_matrix(square, size), which uncrop and to_crop_coords assume.
    matrix[:, 2] += 0.5 * (work / size - 1)
    crop = cv2.warpAffine(frame, matrix, (work, work),
                          flags=cv2.INTER_LINEAR, borderMode=border)
    if work != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop


def uncrop(crop: np.ndarray, square: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """The exact inverse of `align_crop`: put a crop back into frame coordinates."""
    h, w = frame_shape[:2]
    to_frame = cv2.invertAffineTransform(crop_matrix(square, crop.shape[0]))
    return cv2.warpAffine(crop, to_frame, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def to_crop_coords(points: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """Map frame points (..., 2) into crop pixel coordinates."""
    m = crop_matrix(square, size)
    return points @ m[:, :2].T + m[:, 2]
