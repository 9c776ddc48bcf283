"""Where a face's hair is in a frame, from mediapipe's person mask (its selfie segmentation,
whose weights ship in the wheel) and the face mesh.

Hair is what belongs to the person, lies within 0.9 face heights of the face's centre line and
between just below the chin and 0.8 face heights above the oval (in the face's own axes, so it
turns with the head), is neither the face below the brows nor the neck, and is not skin:
darker than the cheeks, or of another hue, or far from their colour, but not vivid. The
skin's colour is read from six cheek patches of the mesh on every frame, so the clip's
lighting does not matter. Hair comes in large pieces that reach above the brows; the rest (a
collar, the clothes) is dropped. Limits: hair the colour of the skin (light brown on a tanned
face) is taken for skin, hair below the chin and vividly dyed hair are left out, clothes of a
dull colour other than the skin's that touch the hair are taken in, and on a face turned far
aside the cheeks' colour is read partly off the background (`faces_camera` tells such faces
apart).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from s3edit.face.landmarks import native_stderr_silenced
from s3edit.face.mask import FACE_OVAL, face_axes, face_size

CHEEK_POINTS = [50, 280, 101, 330, 205, 425]  # mesh vertices in the middle of each cheek
CHEEK_SIDES = (234, 454)  # mesh vertices at the oval's left and right edges, by the ears
NOSE_TIP = 1
# `head_turn` beyond which a face no longer faces the camera. On the dev clips the frontal
# faces stay within 0.5 (median 0.32 at most) and the turned ones beyond 0.8 (median 0.96 and
# more): on those the decoder draws no blond hair from fresh noise. With the background they
# face counted as hair it drew a second head of hair there; without it (stop 28), blond +0.6
# with the hair redrawn scored +0.01 on megaportrait -1eKufUP5XQ_4 and pcavs 00086 (+0.37 on
# 517600055): the hair comes out light brown.
FACING_TURN = 0.6
# `head_turn` beyond which a face is seen in profile: the decoder, which saw few profiles, draws
# next to nothing there, with or without edit guidance. pcavs 00002 (median turn 1.65, the one
# profile among the 33 clips) got no eyeglasses at guidance 2 and lost identity (0.990 ->
# 0.957) and TL-ID (0.970), while the three-quarter faces up to 1.02 got them.
PROFILE_TURN = 1.3
# Lab distance from the cheeks' median, in robust standard deviations, under which a pixel is
# skin; a pixel this much darker (L, 0-255) than the cheeks, or this far off in hue, is not.
SKIN_DISTANCE = 3.0
DARKER_THAN_SKIN = 25.0
HUE_OFF_SKIN = 12.0
# Lab chroma (distance from grey, 0-255 units) over which a colour is too vivid for hair:
# a red jacket, a green screen. Natural hair, red included, stays well under it.
VIVID = 40.0


class HairSegmenter:
    """`segmenter(frame, mesh)` gives an (h, w) float32 0/1 mask of the hair of the face whose
    478-point `mesh` is given, on an RGB frame."""

    def __init__(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp

        with native_stderr_silenced():
            self._person = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            self._person.process(np.zeros((64, 64, 3), np.uint8))

    def __call__(self, frame: np.ndarray, mesh: np.ndarray) -> np.ndarray:
        with native_stderr_silenced():
            person = self._person.process(np.ascontiguousarray(frame)).segmentation_mask > 0.5
        return hair_mask(frame, mesh, person)

    def close(self) -> None:
        self._person.close()

    def __enter__(self) -> HairSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def head_turn(mesh: np.ndarray) -> float:
    """How far the head is turned aside: where the nose tip lies between the oval's two side
    points, from -1 at one to 1 at the other (0 facing the camera; beyond 1 in profile)."""
    left, right = mesh[list(CHEEK_SIDES)].astype(np.float64)
    span = right - left
    return float(2 * np.dot(mesh[NOSE_TIP] - left, span) / np.dot(span, span) - 1)


def clip_head_turn(meshes: np.ndarray) -> float:
    """How far a face seen as its (T, 478, 2) meshes (NaN where not tracked) is mostly turned
    aside: the size of its median `head_turn`; NaN when it is never tracked."""
    turns = [head_turn(m) for m in meshes if not np.isnan(m).any()]
    return abs(float(np.median(turns))) if turns else float("nan")


def faces_camera(meshes: np.ndarray) -> bool:
    """Whether a face, seen as its (T, 478, 2) meshes, mostly faces the camera: its
    `clip_head_turn` within FACING_TURN."""
    return clip_head_turn(meshes) < FACING_TURN


def hair_mask(frame: np.ndarray, mesh: np.ndarray, person: np.ndarray) -> np.ndarray:
    """The hair of the face of `mesh` on `frame`, given the (h, w) bool `person` mask."""
    h, w = frame.shape[:2]
    axes = face_axes(mesh)
    across, up, width, height = axes.across, axes.up, axes.width, axes.height
    centre_u, brow_v = axes.centre_u, axes.brow_v
    oval = mesh[FACE_OVAL].astype(np.float64)

    # Work in the box the region can reach, 1.6 face heights round the oval's centre at most
    # (0.9 aside, 1.3 up), which saves most of the time on a large frame.
    centre = oval.mean(0)
    x0, y0 = np.maximum(np.floor(centre - 1.6 * height), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(centre + 1.6 * height), [w, h]).astype(int)
    frame, person = frame[y0:y1, x0:x1], person[y0:y1, x0:x1]
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    pu = xs * across[0] + ys * across[1]
    pv = xs * up[0] + ys * up[1]
    # Sideways by the face's height, which does not shrink as the head turns away.
    region = ((np.abs(pu - centre_u) < 0.9 * height) & (pv > axes.chin_v - 0.1 * height)
              & (pv < axes.top_v + 0.8 * height))
    inside = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(oval - [x0, y0]).astype(np.int32)], 1)
    below_brows = inside.astype(bool) & (pv < brow_v + 0.08 * height)
    neck = (pv < axes.chin_v + 0.1 * height) & (np.abs(pu - centre_u) < 0.35 * width)  # shadowed

    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).astype(np.float32)
    r = max(2, round(0.03 * width))
    patches = [lab[max(int(y) - r, 0):int(y) + r, max(int(x) - r, 0):int(x) + r].reshape(-1, 3)
               for x, y in mesh[CHEEK_POINTS] - [x0, y0]]
    skin_lab = np.concatenate(patches)
    if len(skin_lab) == 0:  # the cheeks are off the frame
        return np.zeros((h, w), np.float32)
    median = np.median(skin_lab, 0)
    spread = np.median(np.abs(skin_lab - median), 0) * 1.4826 + 2
    skin = np.sqrt((((lab - median) / spread) ** 2).mean(-1)) < SKIN_DISTANCE
    darker = lab[..., 0] < median[0] - DARKER_THAN_SKIN
    other_hue = np.abs(lab[..., 1:] - median[1:]).max(-1) > HUE_OFF_SKIN
    vivid = np.hypot(lab[..., 1] - 128, lab[..., 2] - 128) > VIVID

    # On a face turned aside, what lies beyond its profile (the oval's edge on the side the
    # nose points to) below the brows is the background the head faces, not hair: the person
    # mask bleeds into it.
    nose_u = float(mesh[NOSE_TIP] @ across)
    side = 1.0 if nose_u > centre_u else -1.0
    profile_u = float(np.max(side * (oval @ across)))
    in_front = ((abs(head_turn(mesh)) >= FACING_TURN) & (side * pu > profile_u)
                & (pv < brow_v))
    hair = (person & region & (darker | other_hue | ~skin) & ~below_brows & ~neck
            & ~vivid & ~in_front).astype(np.uint8)
    hair = cv2.morphologyEx(hair, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # Hair grows from above the brows and comes in large pieces: specks, and what lies only
    # lower down (a dark collar, the clothes below the chin), are dropped.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hair)
    above_brows = np.bincount(labels[pv > brow_v], minlength=count)
    keep = (stats[:, cv2.CC_STAT_AREA] > 0.02 * face_size(mesh) ** 2) & (above_brows > 0)
    keep[0] = False  # the background label
    out = np.zeros((h, w), np.float32)
    out[y0:y1, x0:x1] = keep[labels]
    return out
