"""Soft masks built from the 478-point face mesh: where an edit may change the frame.

By default (`--mask mesh`) every region is geometry on the landmarks, as no face-parsing model
ships with the default install; `--mask bisenet` takes the paste mask from facexlib's face
parsing instead (`parsed_face_mask`), hair included for hair attributes. On the mesh, the face
is the mesh's outer oval (forehead to chin, cheek to cheek). The hair region is a guess laid out
in the face's own frame (it turns with the head): a half ellipse above the brow line reaching
0.7 face heights up and 0.25 face widths past the oval on each side, with straight sides that
come down to the nose tip. Limits: it does not know the real hairline, so long hair below the
nose, a tall hairdo or a hat brim beyond that shape stays out of the mask, and background beside
the head falls in it, where a hair edit's change to the decoded crop is pasted too.

Sizes scale with the face size, taken as the square root of the oval's area: unlike a bounding
box it does not change with roll, and it shrinks less than the eye distance when the head turns.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from s3edit.face.align import uncrop

# mediapipe's FACEMESH_FACE_OVAL as one closed loop, clockwise in the image from the forehead.
FACE_OVAL = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
]
# Vertices of FACEMESH_{LEFT,RIGHT}_EYE + _EYEBROW (mediapipe's left is the subject's left) and
# of the outer ring of FACEMESH_LIPS; only their hulls are used, so the order does not matter.
EYE_LEFT = [249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466]
BROW_LEFT = [276, 282, 283, 285, 293, 295, 296, 300, 334, 336]
EYE_RIGHT = [7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246]
BROW_RIGHT = [46, 52, 53, 55, 63, 65, 66, 70, 105, 107]
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
              40, 185]
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)
EYE_CORNERS = (33, 133, 362, 263)

HAIR_ATTRIBUTES = frozenset({
    "bald", "bangs", "black_hair", "blond_hair", "brown_hair", "gray_hair", "receding_hairline",
    "straight_hair", "wavy_hair", "wearing_hat",
})
REGIONS = ("eyes", "mouth", "hair", "face")
EYE_ATTRIBUTES = frozenset({"Eyeglasses", "Narrow_Eyes", "Bags_Under_Eyes", "Arched_Eyebrows",
                            "Bushy_Eyebrows"})
_EYE_ATTRIBUTES_LOWER = frozenset(a.lower() for a in EYE_ATTRIBUTES)
MOUTH_ATTRIBUTES = frozenset({"Smiling", "Mouth_Slightly_Open", "Big_Lips", "Wearing_Lipstick",
                              "Mustache", "Goatee"})
_MOUTH_ATTRIBUTES_LOWER = frozenset(a.lower() for a in MOUTH_ATTRIBUTES)

# The eye band's reach past the eyes and the brows, as shares of the oval's height: the lower
# rims of spectacles sit about a tenth below the eyes, their top bars at the brows.
EYE_BAND_BELOW, EYE_BAND_ABOVE = 0.17, 0.12

# Classes of facexlib's BiSeNet (CelebAMask-HQ's 19): 0 background, 1 skin, 2-3 brows, 4-5 eyes,
# 6 eyeglasses, 7-8 ears, 9 earring, 10 nose, 11 mouth, 12-13 lips, 14 neck, 15 necklace,
# 16 cloth, 17 hair, 18 hat. The face leaves out the ears, as the mesh's oval does.
PARSED_FACE = (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)
PARSED_HAIR = (17, 18)


def hair_attribute(attr: str | None) -> bool:
    """True for CelebA attributes that change the hair (or hat), which lies outside the face."""
    return attr is not None and attr.lower() in HAIR_ATTRIBUTES


def attribute_region(attr: str) -> str:
    """The `region_mask` region where an edit of `attr` (any case) should happen."""
    if eye_attribute(attr):
        return "eyes"
    if attr.lower() in _MOUTH_ATTRIBUTES_LOWER:
        return "mouth"
    if hair_attribute(attr):
        return "hair"
    return "face"


def face_size(mesh: np.ndarray) -> float:
    """Square root of the face oval's area, in pixels (about the face width)."""
    return float(np.sqrt(cv2.contourArea(mesh[FACE_OVAL].astype(np.float32))))


def face_mask(mesh: np.ndarray, shape: tuple[int, int], *, attr: str | None = None,
              dilate: float = -0.08, feather: float = 0.06) -> np.ndarray:
    """Soft (h, w) float32 mask in [0, 1] of the face, plus the hair for hair attributes,
    less all but a band across the brows and eyes for eye attributes (`eye_band`).

    The polygon is grown by `dilate` (negative shrinks it) and blurred by a Gaussian of sigma
    `feather`, both times the face size; values under 1/255 become 0 and over 1 - 1/255 become
    1, so the mask has a crisp support and a solid inside. By default the fade lies inside the
    face: at the oval the mask is down to 0.09 and one feather beyond it to 0.01. An identity
    edit shifts the colour of the whole decoded crop, background included, and a fade reaching
    outwards carried that shift onto the background as a glow around the head.
    """
    polygons = [mesh[FACE_OVAL]]
    if hair_attribute(attr):
        polygons.append(_hair_polygon(mesh))
    size = face_size(mesh)
    mask = _soft_mask(polygons, shape, grow=dilate * size, sigma=feather * size)
    return mask * eye_band(mesh, shape, feather) if eye_attribute(attr) else mask


def eye_attribute(attr: str | None) -> bool:
    """True for CelebA attributes of the eyes and brows (any case), eyeglasses among them."""
    return attr is not None and attr.lower() in _EYE_ATTRIBUTES_LOWER


def eye_band(mesh: np.ndarray, shape: tuple[int, int], feather: float = 0.06) -> np.ndarray:
    """Soft (h, w) mask of a band across the face from above the brows to below the eyes,
    where spectacle frames sit, feathered as `face_mask`; it turns with the head.

    The decoder answers an eyeglasses edit over the whole face (bench/pass_locality.py: three
    quarters of one network pass's change falls outside the eyes and brows, at every noise
    level), and pasted through the whole oval that change reached the mouth and cheeks.
    """
    axes = face_axes(mesh)
    eye_v = float(mesh[list(EYE_CORNERS)].mean(0) @ axes.up)
    half_w = 0.75 * axes.width  # past the oval on both sides: the oval bounds it there
    u = axes.centre_u + np.array([-half_w, half_w, half_w, -half_w])
    v = np.array([eye_v - EYE_BAND_BELOW * axes.height] * 2
                 + [axes.brow_v + EYE_BAND_ABOVE * axes.height] * 2)
    polygon = np.outer(u, axes.across) + np.outer(v, axes.up)
    return _soft_mask([polygon], shape, grow=0, sigma=feather * face_size(mesh))


def parsed_face_mask(labels: np.ndarray, square: np.ndarray, mesh: np.ndarray,
                     shape: tuple[int, int], *, attr: str | None = None, dilate: float = -0.08,
                     feather: float = 0.06) -> np.ndarray:
    """`face_mask` from face parsing: the parsed face, plus the parsed hair and hat for hair
    attributes, where the mesh has its oval and its hair guess (and the same eye band).

    `labels` (S, S) are the classes of the aligned crop of `square` (`FaceParser` in
    s3edit/face/backends.py). The region is grown and feathered as in `face_mask`, by the
    mesh's face size, so both masks fade alike.
    """
    classes = PARSED_FACE + (PARSED_HAIR if hair_attribute(attr) else ())
    inside = np.isin(labels, classes).astype(np.uint8) * 255
    filled = uncrop(inside, square, shape)  # the linear warp anti-aliases the region's edge
    out = np.zeros(shape, np.float32)
    ys, xs = np.nonzero(filled)
    if ys.size == 0:
        return out
    size = face_size(mesh)
    grow, sigma = dilate * size, feather * size
    x0, y0, x1, y1 = _work_box(np.array([xs.min(), ys.min()]), np.array([xs.max(), ys.max()]),
                               grow, sigma, shape)
    out[y0:y1, x0:x1] = _grow_and_blur(filled[y0:y1, x0:x1], grow, sigma)
    return out * eye_band(mesh, shape, feather) if eye_attribute(attr) else out


def region_mask(mesh: np.ndarray, shape: tuple[int, int], region: str) -> np.ndarray:
    """Hard (h, w) float32 0/1 mask of one region, for measuring where an edit changed things.

    'eyes': both eyes with their brows, grown by 4% of the face size; 'mouth': the outer lips,
    grown by 4%; 'face': the oval; 'hair': the hair guess of `face_mask` minus the oval.
    """
    size = face_size(mesh)
    if region == "eyes":
        sides = [_hull(mesh[EYE_LEFT + BROW_LEFT]), _hull(mesh[EYE_RIGHT + BROW_RIGHT])]
        soft = _soft_mask(sides, shape, grow=0.04 * size, sigma=0)
    elif region == "mouth":
        soft = _soft_mask([_hull(mesh[LIPS_OUTER])], shape, grow=0.04 * size, sigma=0)
    elif region == "face":
        soft = _soft_mask([mesh[FACE_OVAL]], shape, grow=0, sigma=0)
    elif region == "hair":
        hair = _soft_mask([_hair_polygon(mesh)], shape, grow=0, sigma=0)
        soft = np.minimum(hair, 1 - _soft_mask([mesh[FACE_OVAL]], shape, grow=0, sigma=0))
    else:
        raise ValueError(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}")
    return (soft >= 0.5).astype(np.float32)


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32))[:, 0]


@dataclass(frozen=True)
class FaceAxes:
    """A face's own frame: unit vectors `across` (from the subject's right eye to the left) and
    `up` (from the mouth to the eyes), and the oval's extent along them, in pixels: `width`
    and `height`, the middle `centre_u` across, `chin_v` and `top_v` up; `brow_v` is the
    brows' mean height. A point p lies at u = p @ across, v = p @ up."""

    across: np.ndarray
    up: np.ndarray
    width: float
    height: float
    centre_u: float
    chin_v: float
    top_v: float
    brow_v: float


def face_axes(mesh: np.ndarray) -> FaceAxes:
    """`FaceAxes` of a 478-point mesh; they turn with the head."""
    eye_a = mesh[list(EYE_CORNERS[:2])].mean(0)  # the subject's right eye, then left
    eye_b = mesh[list(EYE_CORNERS[2:])].mean(0)
    across = (eye_b - eye_a) / np.linalg.norm(eye_b - eye_a)
    up = np.array([across[1], -across[0]])
    if np.dot(up, (eye_a + eye_b) / 2 - mesh[list(MOUTH_CORNERS)].mean(0)) < 0:
        up = -up  # point from the mouth to the eyes whatever the mesh's handedness
    oval = mesh[FACE_OVAL].astype(np.float64)
    u, v = oval @ across, oval @ up
    return FaceAxes(across, up, float(np.ptp(u)), float(np.ptp(v)), float(u.min() + u.max()) / 2,
                    float(v.min()), float(v.max()),
                    float(np.mean(mesh[BROW_LEFT + BROW_RIGHT] @ up)))


def _hair_polygon(mesh: np.ndarray) -> np.ndarray:
    """Polygon above and beside the face, laid out along the face's own axes."""
    axes = face_axes(mesh)
    across, up, width, height = axes.across, axes.up, axes.width, axes.height
    centre_u, brow_v = axes.centre_u, axes.brow_v
    nose_v = float(mesh[NOSE_TIP] @ up)

    half_w = width / 2 + 0.25 * width
    angles = np.linspace(0, np.pi, 33)
    arc_u = centre_u + half_w * np.cos(angles)
    arc_v = brow_v + 0.7 * height * np.sin(angles)
    pu = np.concatenate([[centre_u + half_w], arc_u, [centre_u - half_w]])
    pv = np.concatenate([[nose_v], arc_v, [nose_v]])
    return np.outer(pu, across) + np.outer(pv, up)


def _soft_mask(polygons: list[np.ndarray], shape: tuple[int, int], grow: float, sigma: float
               ) -> np.ndarray:
    """Fill, grow by `grow` px and blur by `sigma` px, working only in the polygons' box."""
    pts = np.concatenate(polygons)
    out = np.zeros(shape, np.float32)
    x0, y0, x1, y1 = _work_box(pts.min(0), pts.max(0), grow, sigma, shape)
    if x1 <= x0 or y1 <= y0:
        return out  # entirely outside the image

    # 8 fractional bits keep sub-pixel vertex positions, so a moving face does not step.
    shift = 8
    roi = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for poly in polygons:
        fixed = np.round((poly - [x0, y0]) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(roi, [fixed], 255, lineType=cv2.LINE_AA, shift=shift)
    out[y0:y1, x0:x1] = _grow_and_blur(roi, grow, sigma)
    return out


def _work_box(low: np.ndarray, high: np.ndarray, grow: float, sigma: float,
              shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the pixels `low` to `high` with room to grow and blur, clipped
    to the image (empty when they lie outside it)."""
    margin = grow + 4 * sigma + 2
    x0, y0 = np.maximum(np.floor(low - margin), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(high + margin) + 1, [shape[1], shape[0]]).astype(int)
    return x0, y0, x1, y1


def _grow_and_blur(roi: np.ndarray, grow: float, sigma: float) -> np.ndarray:
    """A filled uint8 region (255 inside) as a float32 mask in [0, 1], grown by `grow` px and
    blurred by `sigma` px."""
    if grow:
        # Everything within `grow` px of the filled area (negative: more than `-grow` px inside
        # its edge), with a one-pixel ramp; one distance transform, from the side that matters.
        filled = (roi >= 128).astype(np.uint8)
        if grow > 0:
            outside = cv2.distanceTransform(1 - filled, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            soft = np.clip(grow + 0.5 - outside, 0, 1)
        else:
            inside = cv2.distanceTransform(filled, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            soft = np.clip(grow + 0.5 + inside, 0, 1)
    else:
        soft = roi.astype(np.float32) / 255
    if sigma > 0:
        soft = cv2.GaussianBlur(soft, (0, 0), sigma)
        soft[soft < 1 / 255] = 0
        soft[soft > 1 - 1 / 255] = 1
    return soft
