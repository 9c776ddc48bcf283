"""Face stack: tracking, alignment round trip, masks and paste-back.

Unit tests use one real mediapipe mesh stored below, so they run without the shared data; the
tests on real clips skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import psnr, real_mesh, smooth_image

from s3edit.errors import NoFaceError, S3EditError
from s3edit.face.align import align_crop, square_from_landmarks, to_crop_coords, uncrop
from s3edit.face.landmarks import Face, FaceDetector, landmarks68
from s3edit.face.mask import (
    FACE_OVAL,
    eye_attribute,
    face_mask,
    face_size,
    hair_attribute,
    region_mask,
)
from s3edit.face.paste import extend_past_crop, paste_back
from s3edit.face.track import FaceTracker
from s3edit.options import TrackOptions

# The 478-point mesh mediapipe found on frame 0 of videoretalking/examples/face/1.mp4, moved to
# the origin, scaled to 250 px at most and rounded to whole pixels (uint8, zlib, base64).
CLIP = "videos/videoretalking/examples/face/1.mp4"



def face(scale: float = 1.0, offset: tuple[float, float] = (0.0, 0.0)) -> Face:
    return Face(mesh=real_mesh(scale, offset))





def centre_x(f: Face) -> float:
    return float((f.box[0] + f.box[2]) / 2)


# --- tracking ---------------------------------------------------------------------------------

def test_default_picks_largest_face_and_keeps_following_it():
    tracker = FaceTracker()
    small, big = face(0.4, (0, 0)), face(0.8, (300, 40))
    assert tracker.update([small, big]) is big
    # Later the other face grows larger, but the tracked one is followed by overlap.
    for t in range(1, 6):
        moved = face(0.8, (300 + 3 * t, 40))
        assert tracker.update([face(1.0, (0, 0)), moved]) is moved
    assert tracker.finish().frames_with_face == 6


def test_face_index_counts_from_the_left_on_the_first_frame_with_faces():
    left, middle, right = face(0.5, (0, 0)), face(0.6, (200, 0)), face(0.4, (400, 0))
    for index, expected in enumerate([left, middle, right]):
        tracker = FaceTracker(face_index=index)
        assert tracker.update([]) is None
        assert tracker.update([right, left, middle]) is expected


def test_face_index_out_of_range_says_how_many_faces():
    tracker = FaceTracker(face_index=2)
    tracker.update([])
    with pytest.raises(S3EditError, match="2 face") as info:
        tracker.update([face(0.5, (0, 0)), face(0.5, (300, 0))])
    assert "\n" not in str(info.value)
    with pytest.raises(S3EditError):
        FaceTracker(face_index=-1)


def test_gaps_are_filled_or_passed_through():
    # none x2 | face 2-9 | short gap 10-13 | face 14-19 | long gap 20-29 | face 30-34 | none x2
    present = np.zeros(37, bool)
    present[2:10] = present[14:20] = present[30:35] = True
    tracker = FaceTracker()
    for t in range(37):
        here = face(0.8, (2.0 * t, 10))  # moves 2 px a frame, so interpolation is exact
        # Once the face is picked, another face that never overlaps it must not be taken.
        others = [face(0.3, (600, 400))] if t > 2 else []
        tracker.update([here, *others] if present[t] else others)
    track = tracker.finish(TrackOptions(max_gap=8, sigma_centre=0, sigma_xy=0))

    expected_valid = present.copy()
    expected_valid[10:14] = True
    np.testing.assert_array_equal(track.valid, expected_valid)
    assert (track.frames, track.frames_with_face, track.frames_filled,
            track.frames_passed_through) == (37, 19, 4, 14)
    np.testing.assert_allclose(track.mesh[12], real_mesh(0.8, (24, 10)), atol=1e-3)
    truth = square_from_landmarks(landmarks68(real_mesh(0.8, (24, 10))))
    np.testing.assert_allclose(track.squares[12], truth, atol=1e-3)
    assert np.isnan(track.squares[~track.valid]).all()
    assert np.isnan(track.mesh[~track.valid]).all()


def test_no_face_at_all_raises():
    tracker = FaceTracker()
    for _ in range(5):
        tracker.update([])
    with pytest.raises(NoFaceError, match="any of the 5 frames"):
        tracker.finish()


def test_smoothing_reduces_jitter_and_keeps_a_still_face():
    rng = np.random.default_rng(0)
    jittery, still = FaceTracker(), FaceTracker()
    for _ in range(40):
        jittery.update([face(0.8, tuple(100 + rng.normal(0, 2, 2)))])
        still.update([face(0.8, (100, 100))])
    raw_mesh = jittery.finish(TrackOptions(0, 0, 0)).mesh
    raw = [square_from_landmarks(lm) for lm in landmarks68(raw_mesh)]
    raw_steps = np.diff(np.array(raw)[:, 0], axis=0)
    smooth_steps = np.diff(jittery.finish().squares[:, 0], axis=0)
    assert smooth_steps.var() < 0.3 * raw_steps.var()

    truth = square_from_landmarks(landmarks68(real_mesh(0.8, (100, 100))))
    np.testing.assert_allclose(still.finish().squares, np.broadcast_to(truth, (40, 3, 2)),
                               atol=1e-3)


def test_smoothing_does_not_cross_a_passed_through_gap():
    tracker = FaceTracker(iou_threshold=0.0)  # let the face jump across the frame
    for t in range(30):
        if t < 10:
            tracker.update([face(0.8, (0, 0))])
        elif t < 20:
            tracker.update([])
        else:
            tracker.update([face(0.8, (50, 0))])
    track = tracker.finish(TrackOptions(max_gap=5))
    before = square_from_landmarks(landmarks68(real_mesh(0.8, (0, 0))))
    after = square_from_landmarks(landmarks68(real_mesh(0.8, (50, 0))))
    np.testing.assert_allclose(track.squares[9], before, atol=1e-3)
    np.testing.assert_allclose(track.squares[20], after, atol=1e-3)


# --- alignment --------------------------------------------------------------------------------

def test_align_crop_round_trip():
    frame = smooth_image(300, 400)
    square = np.array([[200.0, 150.0], [70.0, 15.0], [-15.0, 70.0]])  # rotated, 143 px side
    back = uncrop(align_crop(frame, square, 256), square, frame.shape)
    y, x = np.mgrid[0:300, 0:400]
    inside = to_crop_coords(np.stack([x, y], -1).astype(np.float64), square, 256)
    inside = ((inside > 4) & (inside < 252)).all(-1)
    assert psnr(back[inside], frame[inside]) > 30


# --- masks ------------------------------------------------------------------------------------

def test_hair_attributes():
    assert all(map(hair_attribute, ["Blond_Hair", "bangs", "WEARING_HAT", "Receding_Hairline"]))
    assert not hair_attribute("Smiling") and not hair_attribute(None)


def _up(mesh: np.ndarray) -> np.ndarray:
    """Unit vector from the chin to the top of the forehead."""
    v = mesh[10] - mesh[152]
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("turn", [0, 90])
def test_face_and_hair_masks(turn: int):
    # Nose at the middle of the frame; turned about it, the hair region must turn with it.
    cos, sin = np.cos(np.radians(turn)), np.sin(np.radians(turn))
    mesh = real_mesh(0.8)
    mesh = (mesh - mesh[1]) @ np.array([[cos, sin], [-sin, cos]]) + (260, 260)
    shape = (520, 520)
    face_m = face_mask(mesh, shape)
    hair_m = face_mask(mesh, shape, attr="Black_Hair")
    for m in (face_m, hair_m):
        assert m.shape == shape and m.dtype == np.float32
        assert m.min() == 0 and m.max() == 1

    def at(m: np.ndarray, p: np.ndarray) -> float:
        return float(m[int(round(p[1])), int(round(p[0]))])

    height = np.linalg.norm(mesh[10] - mesh[152])
    above = mesh[10] + _up(mesh) * 0.25 * height  # between the forehead top and the crown
    assert at(face_m, mesh[1]) == 1 and at(hair_m, mesh[1]) == 1
    y, x = np.mgrid[0:520, 0:520]
    assert (face_m[np.hypot(x - mesh[1, 0], y - mesh[1, 1]) > height] == 0).all()
    assert at(hair_m, above) == 1 and at(face_m, above) < 0.5
    assert (hair_m >= face_m).all() and hair_m.sum() > 1.3 * face_m.sum()


@pytest.mark.parametrize("turn", [0, 90])
def test_eye_attributes_paste_through_a_band_across_the_eyes(turn: int):
    """An eyeglasses edit leaves the mouth, chin and forehead top as they were, and reaches
    the rims: brows, the bridge, and a tenth of the face below the eyes."""
    cos, sin = np.cos(np.radians(turn)), np.sin(np.radians(turn))
    mesh = real_mesh(0.8)
    mesh = (mesh - mesh[1]) @ np.array([[cos, sin], [-sin, cos]]) + (260, 260)
    shape = (520, 520)
    band, face_m = face_mask(mesh, shape, attr="eyeglasses"), face_mask(mesh, shape)
    assert eye_attribute("EYEGLASSES") and eye_attribute("Bushy_Eyebrows")
    assert not eye_attribute("Smiling") and not eye_attribute(None)
    assert (band <= face_m).all()

    def at(m: np.ndarray, p: np.ndarray) -> float:
        return float(m[int(round(p[1])), int(round(p[0]))])

    height = np.linalg.norm(mesh[10] - mesh[152])
    below_eye = mesh[468] - _up(mesh) * 0.1 * height
    # irises, bridge, brows (where the oval's own fade already dims the mask), lower rims
    for inside in (mesh[468], mesh[473], mesh[168], mesh[105], mesh[334], below_eye):
        assert at(band, inside) > 0.9 * at(face_m, inside)
    assert at(band, mesh[13]) == at(band, mesh[152]) == 0  # lips, chin
    assert at(band, mesh[10]) < 0.2 * at(face_m, mesh[10])  # the forehead's top


def test_face_mask_fades_inside_the_oval():
    """The paste mask's fade lies on the face, so a colour shift of the decoded crop does not
    spill onto the background; a grown mask (positive dilate) still reaches past it."""
    mesh = real_mesh(0.8, (260, 260))
    shape = (520, 520)
    oval = np.zeros(shape, np.uint8)
    cv2.fillPoly(oval, [np.round(mesh[FACE_OVAL]).astype(np.int32)], 1)
    reach = 2 * round(0.06 * face_size(mesh)) + 1  # one feather past the oval
    grown = cv2.dilate(oval, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach)))
    default = face_mask(mesh, shape)
    assert default[oval == 0].sum() < 0.03 * default.sum()
    assert default[grown == 0].max() < 0.02
    wide = face_mask(mesh, shape, dilate=0.06, feather=0.08)
    assert wide[oval == 0].sum() > 0.1 * wide.sum()
    assert (wide >= default).all()


def test_region_masks():
    mesh = real_mesh(0.8, (200, 150))
    shape = (420, 520)
    eyes, mouth, hair, whole = (region_mask(mesh, shape, r) for r in ("eyes", "mouth", "hair",
                                                                      "face"))
    for m in (eyes, mouth, hair, whole):
        assert set(np.unique(m)) <= {0.0, 1.0}

    def at(m: np.ndarray, i: int) -> float:
        return float(m[int(round(mesh[i, 1])), int(round(mesh[i, 0]))])

    assert at(eyes, 468) == at(eyes, 473) == 1 and at(eyes, 1) == 0  # irises in, nose out
    assert at(mouth, 13) == 1 and at(mouth, 1) == 0
    assert at(whole, 1) == 1 and at(hair, 1) == 0
    assert not (hair * whole).any()
    with pytest.raises(ValueError, match="unknown region"):
        region_mask(mesh, shape, "ears")


# --- paste-back -------------------------------------------------------------------------------

def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mesh = real_mesh(0.8, (200, 150))
    frame = smooth_image(420, 520)
    square = square_from_landmarks(landmarks68(mesh))
    return frame, square, face_mask(mesh, frame.shape[:2]), mesh


def test_plain_paste_of_the_unedited_crop_keeps_the_frame():
    frame, square, mask, _ = _scene()
    out = paste_back(frame, align_crop(frame, square, 256), square, mask)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert psnr(out, frame) > 35
    np.testing.assert_array_equal(out[mask == 0], frame[mask == 0])


def test_plain_paste_puts_the_edit_inside_the_mask_only():
    frame, square, mask, mesh = _scene()
    edited = np.full((256, 256, 3), 255, np.uint8)
    out = paste_back(frame, edited, square, mask)
    nose = tuple(np.round(mesh[1, ::-1]).astype(int))
    assert (out[nose] == 255).all()
    np.testing.assert_array_equal(out[mask == 0], frame[mask == 0])


def test_residual_paste():
    frame, square, mask, mesh = _scene()
    rng = np.random.default_rng(1)
    reconstructed = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    same = paste_back(frame, reconstructed.copy(), square, mask,
                      reconstructed_crop=reconstructed)
    np.testing.assert_array_equal(same, frame)

    reconstructed = np.minimum(reconstructed, 235)  # so that adding 20 never wraps around
    brighter = reconstructed + np.uint8(20)
    out = paste_back(frame, brighter, square, mask,
                     reconstructed_crop=reconstructed)
    nose = tuple(np.round(mesh[1, ::-1]).astype(int))
    expected = np.minimum(frame[nose].astype(int) + 20, 255)
    np.testing.assert_array_equal(out[nose], expected)
    np.testing.assert_array_equal(out[mask == 0], frame[mask == 0])
    with pytest.raises(ValueError, match="differ in shape"):
        paste_back(frame, brighter, square, mask, reconstructed_crop=reconstructed[:128])


def test_thin_lines_draws_a_soft_rim_as_a_line():
    """A rim a crop pixel wide, darkening by 60 at the model's 64 px, in a face about 3.5
    times that size in the frame: warped, it is a soft band; with `thin_lines` it is narrower
    and darker at its middle, and nothing is brightened (the unsharp mask's halo is cut)."""
    frame, square, mask, mesh = _scene()
    frame = np.full_like(frame, 128)
    crop = np.full((64, 64, 3), 128, np.uint8)
    rim = crop.copy()
    rim[:, 31:33] -= 60  # a vertical line through the crop's middle
    soft = paste_back(frame, rim, square, mask, reconstructed_crop=crop).astype(float)
    thin = paste_back(frame, rim, square, mask, reconstructed_crop=crop,
                      thin_lines=True).astype(float)
    assert (thin <= 128).all() and (soft <= 128).all()
    nose_row = int(round(mesh[1, 1]))
    soft_dark, thin_dark = 128 - soft[nose_row, :, 0], 128 - thin[nose_row, :, 0]
    assert thin_dark.max() > soft_dark.max() + 10
    assert (thin_dark > 10).sum() < (soft_dark > 10).sum()
    assert (thin_dark > 10).sum() > 0


@pytest.mark.parametrize("slant", [0, 1])
def test_thin_lines_narrows_a_wide_rim_to_an_unbroken_line(slant: int):
    """The decoder's rims are soft, two or three crop pixels wide, ten or more frame pixels:
    with `thin_lines` such a rim, level or slanting, comes out well under the width warped, as
    dark in all, and unbroken along its length (no dashes where the crop's pixels fall)."""
    frame, square, mask, _ = _scene()
    frame = np.full_like(frame, 128)
    crop = np.full((64, 64, 3), 128, np.uint8)
    rows, cols = np.indices((64, 64))
    across = (rows - 32 - slant * (cols - 32) / 2) / np.hypot(1, slant / 2)
    rim = (crop - 60 * np.exp(-across**2 / 2)[..., None]).round().astype(np.uint8)
    soft = 128 - paste_back(frame, rim, square, mask, reconstructed_crop=crop)[..., 0].astype(float)
    thin = 128 - paste_back(frame, rim, square, mask, reconstructed_crop=crop,
                            thin_lines=True)[..., 0].astype(float)
    inner = cv2.erode((mask > 0.99).astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    # Each frame column well inside the mask that the soft rim crosses.
    crossed = [x for x in range(frame.shape[1]) if (soft[inner[:, x], x] > 30).any()]
    assert len(crossed) > 30

    def width(darkening: np.ndarray) -> float:  # at half the line's darkness, across it
        return np.mean([(column > 0.5 * column.max()).sum()
                        for column in (darkening[inner[:, x], x] for x in crossed)])

    assert width(thin) < 0.5 * width(soft)  # the unsharp mask alone: 0.8
    # Narrowed, it keeps its ink (what a look at a smaller size, or the classifier, sees).
    assert thin[inner].sum() > 0.8 * soft[inner].sum()
    # Unbroken: as dark at its middle all along, the columns where it leaves the region aside.
    trim = len(crossed) // 8
    middle = np.array([thin[inner[:, x], x].max() for x in crossed[trim:-trim]])
    assert middle.min() > 0.8 * middle.max()


def test_hair_past_the_crop_takes_the_mean_change_of_the_hair_along_its_edge():
    """Long hair running out of the bottom of the crop: past the crop it takes the mean change
    of the hair in the crop's edge band (not the centre's), faded in over the crop's own fade;
    inside the crop and off the hair nothing is added."""
    frame, square, _, _ = _scene()
    frame = np.full_like(frame, 100)
    change = np.zeros((64, 64, 3), np.float32)
    change[:, :] = (40, 30, 10)
    change[16:48, 16:48] = (-50, -50, -50)  # the centre: left out by the weights
    weights = np.zeros((64, 64), np.float32)
    weights[:4] = weights[-4:] = 1
    fade = np.ones((256, 256), np.float32)
    fade[-10:] = np.linspace(1, 0, 10)[:, None]
    centre, x_axis, y_axis = square
    bottom = centre + y_axis  # the middle of the crop's bottom edge
    hair = np.zeros(frame.shape[:2], np.uint8)
    x = int(round(bottom[0]))
    hair[int(centre[1]):, x - 15:x + 15] = 1  # a strand from the crop's middle down
    out = extend_past_crop(frame, change, square, weights, hair, fade).astype(int)
    below = out[int(bottom[1]) + 40, x]
    np.testing.assert_array_equal(below, np.array([140, 130, 110]))
    np.testing.assert_array_equal(out[int(bottom[1]) - 30, x], [100, 100, 100])  # inside
    np.testing.assert_array_equal(out[int(bottom[1]) + 40, x - 60], [100, 100, 100])  # off
    # Without hair along the edge there is nothing to carry past it.
    unchanged = extend_past_crop(frame, change, square, np.zeros_like(weights), hair, fade)
    np.testing.assert_array_equal(unchanged, frame)


def test_replace_detail_drops_what_the_edit_removed_and_keeps_the_rest():
    """A thin dark rim (a spectacle frame) that the edit removes at the model's 64 px: the
    residual paste lets the sharp rim show through, replace_detail takes it out, and away from
    the edit both pastes are the same."""
    clean, square, mask, mesh = _scene()
    nose = np.round(mesh[1]).astype(int)
    framed = clean.copy()
    rim_rows = slice(nose[1] - 40, nose[1] - 38)
    framed[rim_rows, nose[0] - 60:nose[0] + 60] = 20
    reconstructed = align_crop(framed, square, 64).astype(np.float32)
    edited = align_crop(clean, square, 64).astype(np.float32)  # the rim gone, nothing else
    residual = paste_back(framed, edited, square, mask, reconstructed_crop=reconstructed)
    adaptive = paste_back(framed, edited, square, mask, reconstructed_crop=reconstructed,
                          replace_detail=(6.0, 20.0))
    rim = (rim_rows, slice(nose[0] - 50, nose[0] + 50))
    left_over = np.abs(residual[rim].astype(int) - clean[rim]).mean()
    assert left_over > 30  # the residual paste leaves the rim's sharp core
    assert np.abs(adaptive[rim].astype(int) - clean[rim]).mean() < left_over / 4
    far = mask > 0
    far[nose[1] - 80:nose[1], :] = False  # well away from the rim and its blur
    np.testing.assert_array_equal(adaptive[far], residual[far])
    np.testing.assert_array_equal(adaptive[mask == 0], framed[mask == 0])


# --- real clips -------------------------------------------------------------------------------

def _frames(path: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def test_tracks_a_real_clip(shared_data):
    frames = _frames(shared_data / CLIP, 30)
    assert len(frames) == 30
    tracker = FaceTracker()
    with FaceDetector(video=True) as detect:
        for frame in frames:
            assert tracker.update(detect(frame)) is not None
    track, raw = tracker.finish(), tracker.finish(TrackOptions(sigma_centre=0, sigma_xy=0))
    assert track.valid.all() and track.frames_with_face == 30 and track.frames_filled == 0

    def jitter(squares: np.ndarray) -> tuple[float, float]:
        """Mean frame-to-frame change of the side and mean centre acceleration, per side."""
        side = 2 * np.linalg.norm(squares[:, 1], axis=1)
        accel = np.linalg.norm(np.diff(squares[:, 0], 2, axis=0), axis=1)
        return np.abs(np.diff(side)).mean() / side.mean(), accel.mean() / side.mean()

    (scale, accel), (raw_scale, raw_accel) = jitter(track.squares), jitter(raw.squares)
    assert scale < 0.5 * raw_scale and accel < 0.7 * raw_accel
    assert scale < 0.003 and accel < 0.005  # the crop neither breathes nor shakes


def test_picks_left_and_right_of_two_real_faces(shared_data):
    frame = _frames(shared_data / CLIP, 1)[0]
    half = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2),
                      interpolation=cv2.INTER_AREA)
    pair = np.hstack([half, half])
    with FaceDetector(video=False) as detect:
        faces = detect(pair)
    assert len(faces) == 2
    middle = half.shape[1]
    left = FaceTracker(face_index=0).update(faces)
    right = FaceTracker(face_index=1).update(faces)
    assert centre_x(left) < middle < centre_x(right)
    with pytest.raises(S3EditError, match="2 face"):
        FaceTracker(face_index=2).update(faces)


def test_hair_mask_finds_the_hair_of_a_real_face(shared_data):
    """videoretalking 1: a man with short dark hair against a pale wall. The mask holds the
    hair above the forehead and at the temples, and neither the cheeks, the eyes, the wall
    beside the head nor the suit."""
    from s3edit.face.hair import CHEEK_POINTS, HairSegmenter

    frame = _frames(shared_data / CLIP, 13)[12]
    with FaceDetector(video=False) as detect:
        mesh = max(detect(frame), key=lambda f: f.area).mesh
    with HairSegmenter() as segment:
        hair = segment(frame, mesh)
    assert hair.shape == frame.shape[:2] and set(np.unique(hair)) <= {0.0, 1.0}

    oval = mesh[FACE_OVAL]
    size = face_size(mesh)
    top = oval[np.argmin(oval[:, 1])]  # the oval's top, at the hairline
    above = np.round(top - [0, 0.15 * size]).astype(int)
    assert hair[above[1] - 3:above[1] + 4, above[0] - 3:above[0] + 4].mean() > 0.9
    for x, y in np.round(mesh[CHEEK_POINTS + [33, 263, 1]]).astype(int):  # cheeks, eyes, nose
        assert hair[y, x] == 0
    h, w = hair.shape
    assert hair[:, : int(oval[:, 0].min() - 0.5 * size)].sum() == 0  # the wall left of the head
    assert hair[int(oval[:, 1].max()) :].sum() == 0  # below the chin: collar and suit
    # About as much hair as face: short hair, seen from the front.
    area = cv2.contourArea(oval.astype(np.float32))
    assert 0.3 * area < hair.sum() < 1.5 * area


def test_hair_mask_of_a_turned_face_leaves_out_the_background_it_faces(shared_data):
    """megaportrait -1eKufUP5XQ_4: a woman with long dark hair, her head turned to the left of
    the frame against a dark background, which the person mask bleeds into. Beyond her profile
    and below her brows there is no hair; behind her head and above it there is."""
    from s3edit.face.hair import HairSegmenter, head_turn

    frame = _frames(shared_data / "videos/megaportrait_vox/junk/-1eKufUP5XQ_4.mp4", 31)[30]
    with FaceDetector(video=False) as detect:
        mesh = max(detect(frame), key=lambda f: f.area).mesh
    with HairSegmenter() as segment:
        hair = segment(frame, mesh) > 0
    assert head_turn(mesh) < -0.9, "turned to the left of the frame"
    oval = mesh[FACE_OVAL]
    size = face_size(mesh)
    brow_y = int(round(mesh[[70, 300], 1].mean()))  # a brow point on each side
    chin_y = int(oval[:, 1].max())
    in_front = hair[brow_y:chin_y, : int(oval[:, 0].min())]
    behind = hair[brow_y:chin_y, int(oval[:, 0].max()): int(oval[:, 0].max() + 0.3 * size)]
    assert in_front.mean() < 0.01 and behind.mean() > 0.5
    above = hair[: int(oval[:, 1].min()), int(oval[:, 0].min()): int(oval[:, 0].max())]
    assert above.mean() > 0.3


def test_hair_mask_leaves_out_a_red_jacket_that_touches_the_hair(shared_data):
    """videoretalking 5: a woman with a blond bob down to a red jacket. The jacket is not
    skin-coloured and touches the hair, but it is too vivid to be hair."""
    from s3edit.face.hair import HairSegmenter

    frame = _frames(shared_data / "videos/videoretalking/examples/face/5.mp4", 13)[12]
    with FaceDetector(video=False) as detect:
        mesh = max(detect(frame), key=lambda f: f.area).mesh
    with HairSegmenter() as segment:
        hair = segment(frame, mesh) > 0
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    jacket = (r > 180) & (g < 70) & (b < 80)  # clearly red, not its shaded edge
    assert jacket.sum() > 1000, "the jacket is in the frame"
    assert not (hair & jacket).any()
    # Her blond hair is close to her skin's colour, but most of the bob is found.
    assert hair.sum() > 0.8 * cv2.contourArea(mesh[FACE_OVAL].astype(np.float32))
