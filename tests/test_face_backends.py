"""Plumbing tests of the optional face backends: `--landmarks fan` (face-alignment's FAN) and
`--mask bisenet` (facexlib's BiSeNet face parsing).

These are PLUMBING tests, not quality tests. The networks are built with RANDOM weights and
saved where the packages look for their files (a temporary $TORCH_HOME for FAN,
$S3EDIT_FACEXLIB_WEIGHTS for BiSeNet). The tests check that s3edit finds those files, feeds the
networks frames of the shape, layout, dtype and range they expect, and turns their outputs
into landmarks and masks of the right form (shapes, coordinate frames, dtypes, value ranges).
They say nothing of how good the real weights' landmarks or masks are. Tests that need a
package skip, saying so, when it is not installed (README: Optional face backends); the error
paths and the mask geometry run without them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import PCAVS_CLIP, ffmpeg, real_mesh, shared_clip, smooth_image
from test_cli import error_message

import s3edit.pipeline
from s3edit.edit.loading import UntrainedEditor
from s3edit.face.align import crop_matrix, square_from_landmarks
from s3edit.face.backends import (
    BISENET_CLASSES,
    BISENET_FILE,
    FACEXLIB_WEIGHTS_ENV,
    FaceParser,
    FanLandmarker,
    bisenet_class,
    bisenet_weights,
    fan_weights,
)
from s3edit.face.landmarks import Face, landmarks68
from s3edit.face.mask import PARSED_HAIR, parsed_face_mask
from s3edit.face.track import FaceTracker
from s3edit.model.face_model import PassThroughModel
from s3edit.options import EditOptions
from s3edit.pipeline import Pipeline
from s3edit.video import probe, read_frames

NO_FACE_ALIGNMENT = importlib.util.find_spec("face_alignment") is None
NO_FACEXLIB = importlib.util.find_spec("facexlib") is None
needs_face_alignment = pytest.mark.skipif(
    NO_FACE_ALIGNMENT, reason="face-alignment is not installed (optional: README, Optional "
    "face backends)")
needs_facexlib = pytest.mark.skipif(
    NO_FACEXLIB, reason="facexlib is not installed (optional: README, Optional face backends)")


@pytest.fixture(scope="module")
def random_fan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME whose hub checkpoints hold a FAN with random weights, under the file name
    face-alignment downloads to."""
    if NO_FACE_ALIGNMENT:
        pytest.skip("face-alignment is not installed (optional: README, Optional face backends)")
    from face_alignment.api import models_urls
    from face_alignment.models import FAN

    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), checkpoints / Path(models_urls["2DFAN-4"]).name)
    return home


@pytest.fixture(scope="module")
def random_bisenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding facexlib's BiSeNet with random weights, as parsing_bisenet.pth."""
    if NO_FACEXLIB:
        pytest.skip("facexlib is not installed (optional: README, Optional face backends)")
    folder = tmp_path_factory.mktemp("facexlib_weights")
    torch.manual_seed(0)
    torch.save(bisenet_class()(num_class=BISENET_CLASSES).state_dict(), folder / BISENET_FILE)
    return folder


def placed_face() -> Face:
    """The stored real mediapipe mesh, about 200 px wide, inside a 360x400 frame."""
    return Face(mesh=real_mesh(0.8, (60, 90)))


# --- FAN --------------------------------------------------------------------------------------

@needs_face_alignment
def test_fan_weights_are_found_where_face_alignment_looks(random_fan: Path, monkeypatch):
    from face_alignment.api import models_urls
    from face_alignment.utils import load_file_from_url

    monkeypatch.setenv("TORCH_HOME", str(random_fan))
    # face-alignment's own lookup returns the same file (it downloads only when it is absent).
    assert fan_weights() == Path(load_file_from_url(models_urls["2DFAN-4"]))


@needs_face_alignment
def test_fan_is_fed_the_tracked_face_and_gives_frame_points(random_fan: Path, monkeypatch):
    """FAN sees an RGB float crop in [0, 1] around mediapipe's face; its heatmap peaks come
    back as (68, 2) float32 frame pixels, x then y, around that face."""
    monkeypatch.setenv("TORCH_HOME", str(random_fan))
    landmarker = FanLandmarker("cpu")
    face = placed_face()
    points = landmarks68(face.mesh)
    x0, y0 = np.floor(points.min(0)).astype(int)
    x1, y1 = np.ceil(points.max(0)).astype(int)
    frame = np.zeros((400, 360, 3), np.uint8)
    frame[y0:y1, x0:x1, 0] = 255  # the face's box, red only

    # Landmark k peaks at heatmap pixel (8 + 6 (k % 8), 8 + 6 (k // 8)): a grid with distinct
    # x and y steps, so a swap or a flip of the axes would show.
    grid = np.array([(8 + 6 * (k % 8), 8 + 6 * (k // 8)) for k in range(68)], np.float64)
    seen = []

    def peaks(module, inputs, output):
        seen.append(inputs[0].detach().clone())
        heat = torch.zeros(1, 68, 64, 64)
        for k, (hx, hy) in enumerate(grid.astype(int)):
            heat[0, k, hy, hx] = 1
        return [heat]

    landmarker.aligner.face_alignment_net.register_forward_hook(peaks)
    refined = landmarker(frame, face)

    (x,) = seen
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert x[0, 0, 96:160, 96:160].min() == 1  # the box's middle: red, full
    assert x[0, 1:].max() == 0  # RGB order kept: nothing in green or blue

    assert refined.points68.shape == (68, 2) and refined.points68.dtype == np.float32
    assert refined.mesh is face.mesh and refined.lm68 is refined.points68
    # Heatmap grid -> frame: a scale and a shift, the same on both axes (no swap or flip).
    design = np.column_stack([grid, np.ones(68)])
    fit, *_ = np.linalg.lstsq(design, refined.points68.astype(np.float64), rcond=None)
    (sx, rx), (ry, sy) = fit[0], fit[1]
    assert sx > 0 and abs(sx - sy) < 0.02 * sx and abs(rx) < 0.02 * sx and abs(ry) < 0.02 * sx
    assert np.abs(design @ fit - refined.points68).max() < sx  # within a heatmap pixel
    # The heatmap's centre falls on the box (face-alignment moves it up by 12% of the box).
    centre = np.array([32, 32, 1]) @ fit
    size = np.array([x1 - x0, y1 - y0])
    assert np.all(np.abs(centre - (np.array([x0, y0]) + size / 2)) < 0.15 * size)


def test_the_tracker_keeps_the_refitted_points_and_aligns_on_them():
    """Plumbing of `FaceTracker.update(faces, refine)`: the refitted 68 points (stand-ins for
    FAN's) are the track's lm68 and its squares' source; the mesh stays mediapipe's."""
    def refit(face: Face) -> Face:
        return Face(face.mesh, points68=landmarks68(face.mesh) + np.float32([3, -2]))

    tracker = FaceTracker()
    for t in range(6):
        tracker.update([Face(real_mesh(0.8, (100 + t, 50)))], refit if t != 3 else None)
    tracker.update([])
    tracker.update([Face(real_mesh(0.8, (108, 50)))], refit)
    track = tracker.finish()
    assert track.lm68.shape == (8, 68, 2) and track.lm68.dtype == np.float32
    np.testing.assert_allclose(track.lm68[0], landmarks68(real_mesh(0.8, (100, 50))) + [3, -2],
                               atol=1e-4)
    np.testing.assert_allclose(track.lm68[3], landmarks68(real_mesh(0.8, (103, 50))),
                               atol=1e-4)  # not refitted on that frame
    np.testing.assert_allclose(track.lm68[6], (track.lm68[5] + track.lm68[7]) / 2, atol=1e-4)
    np.testing.assert_allclose(track.mesh[0], real_mesh(0.8, (100, 50)), atol=1e-4)
    unsmoothed = FaceTracker()
    unsmoothed.update([Face(real_mesh(0.8, (100, 50)))], refit)
    np.testing.assert_allclose(unsmoothed.finish().squares[0],
                               square_from_landmarks(track.lm68[0]), atol=1e-6)


# --- BiSeNet ----------------------------------------------------------------------------------

@needs_facexlib
def test_bisenet_is_facexlibs_and_imports_without_torchvision(random_bisenet: Path,
                                                              monkeypatch):
    monkeypatch.setenv(FACEXLIB_WEIGHTS_ENV, str(random_bisenet))
    assert bisenet_weights() == random_bisenet / BISENET_FILE
    net = bisenet_class()
    assert net.__name__ == "BiSeNet"
    facexlib_folder = Path(importlib.util.find_spec("facexlib").origin).parent
    assert Path(importlib.import_module(net.__module__).__file__) == (
        facexlib_folder / "parsing" / "bisenet.py")


@needs_facexlib
def test_bisenet_is_fed_normalised_rgb_crops_and_gives_class_maps(random_bisenet: Path,
                                                                  monkeypatch):
    monkeypatch.setenv(FACEXLIB_WEIGHTS_ENV, str(random_bisenet))
    parser = FaceParser("cpu")
    parser.batch_size = 2  # 3 crops: two batches
    crops = np.zeros((3, 512, 512, 3), np.uint8)
    crops[..., 0], crops[..., 1], crops[..., 2] = 255, 128, 0
    crops[1] = smooth_image(512, 512)
    seen = []
    parser.net.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    labels = parser(crops)

    assert [tuple(x.shape) for x in seen] == [(2, 3, 512, 512), (1, 3, 512, 512)]
    x = seen[0]
    assert x.dtype == torch.float32
    expected = (torch.tensor([255, 128, 0]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / \
        torch.tensor([0.229, 0.224, 0.225])  # RGB in [0, 1], ImageNet's statistics
    torch.testing.assert_close(x[0, :, 100, 100], expected)
    assert labels.shape == (3, 512, 512) and labels.dtype == np.uint8
    assert labels.max() < BISENET_CLASSES
    with torch.no_grad():
        direct = parser.net(seen[1])[0].argmax(1).numpy()
    np.testing.assert_array_equal(labels[2:], direct)  # the full-resolution head's argmax
    with pytest.raises(ValueError, match="512"):
        parser(crops[:, :256, :256])


def test_parsed_mask_is_the_parsed_face_in_frame_pixels():
    """The crop's classes come back to the frame through the square: face classes always, hair
    and hat for hair attributes only; soft (h, w) float32 in [0, 1] with a solid inside."""
    mesh = real_mesh(0.8, (120, 140))
    shape = (480, 440)
    square = square_from_landmarks(landmarks68(mesh))
    labels = np.zeros((512, 512), np.uint8)
    cv2.circle(labels, (256, 300), 120, 1, -1)  # skin
    labels[10:170, 60:452] = PARSED_HAIR[0]
    labels[300:320, 240:272] = 11  # mouth, part of the face

    to_frame = cv2.invertAffineTransform(crop_matrix(square, 512))

    def at(mask: np.ndarray, crop_xy: tuple[float, float]) -> float:
        x, y = to_frame @ np.array([*crop_xy, 1.0])
        return float(mask[int(round(y)), int(round(x))])

    face_only = parsed_face_mask(labels, square, mesh, shape, attr="Young")
    with_hair = parsed_face_mask(labels, square, mesh, shape, attr="blond_hair")
    # An eye attribute keeps to the band across the eyes, as the mesh mask does.
    eyes = parsed_face_mask(labels, square, mesh, shape, attr="Eyeglasses")
    assert (eyes <= face_only).all()
    iris, lips = (np.round(mesh[i]).astype(int) for i in (468, 13))
    assert eyes[iris[1], iris[0]] == face_only[iris[1], iris[0]] > 0.5
    assert eyes[lips[1], lips[0]] == 0 and face_only[lips[1], lips[0]] > 0.5
    for m in (face_only, with_hair):
        assert m.shape == shape and m.dtype == np.float32
        assert m.min() == 0 and m.max() == 1
        assert at(m, (256, 300)) == 1 and at(m, (256, 310)) == 1  # skin, mouth
        assert at(m, (480, 480)) == 0  # background
    assert at(face_only, (256, 90)) == 0 and at(with_hair, (256, 90)) == 1
    assert (with_hair >= face_only - 1e-6).all()
    # The fade lies inside the parsed region, as the mesh mask's does inside the oval.
    disc = np.zeros((512, 512), np.uint8)
    cv2.circle(disc, (256, 300), 120, 1, -1)
    outside = cv2.warpAffine(disc, to_frame, shape[::-1]) == 0
    assert face_only[outside].sum() < 0.03 * face_only.sum()
    empty = parsed_face_mask(np.zeros((512, 512), np.uint8), square, mesh, shape)
    assert empty.shape == shape and not empty.any()


# --- through the pipeline and the CLI ---------------------------------------------------------

@pytest.fixture(scope="module")
def clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Half a second (12 frames) of a real talking head, 224x224."""
    path = tmp_path_factory.mktemp("backends") / "clip.mp4"
    ffmpeg("-i", shared_clip(shared_data, PCAVS_CLIP), "-t", "0.5", "-an", path)
    return path


def test_pipeline_aligns_on_the_landmarker_and_masks_with_the_parser(clip: Path, tmp_path: Path,
                                                                     monkeypatch):
    """Plumbing of Pipeline with stand-in backends: the landmarker gets each frame (RGB uint8)
    with the tracked face, its points make the squares; the parser gets (N, 512, 512, 3) uint8
    aligned crops and its classes make the paste mask."""
    calls: dict[str, list] = {"fan": [], "parse": []}

    class StandInFan:
        def __init__(self, device):
            pass

        def __call__(self, frame, face):
            calls["fan"].append((frame.shape, frame.dtype))
            return Face(face.mesh, points68=landmarks68(face.mesh) + np.float32([2, 0]))

    class StandInParser:
        size = 512

        def __init__(self, device):
            pass

        def __call__(self, crops):
            calls["parse"].append((crops.shape, crops.dtype))
            return np.zeros(crops.shape[:3], np.uint8)  # all background: nothing pasted

    monkeypatch.setattr(s3edit.pipeline, "FanLandmarker", StandInFan)
    monkeypatch.setattr(s3edit.pipeline, "FaceParser", StandInParser)
    pipeline = Pipeline(PassThroughModel(64), UntrainedEditor("s3", tmp_path))
    options = EditOptions("blond_hair", 0, blend="plain", audio=False, landmarks="fan",
                          mask="bisenet")
    info = probe(clip)
    analysis = pipeline.analyse(info, options)
    track = analysis.track
    assert len(calls["fan"]) == track.frames_with_face > 0
    assert set(calls["fan"]) == {((224, 224, 3), np.dtype(np.uint8))}
    valid = np.flatnonzero(track.valid)
    np.testing.assert_allclose(track.lm68[valid], landmarks68(track.mesh[valid]) + [2, 0],
                               atol=1e-3)

    result = pipeline.run(info, tmp_path / "out.mp4", options)
    assert result.frames == info.frame_count
    assert set((shape[1:], dtype) for shape, dtype in calls["parse"]) == {
        ((512, 512, 3), np.dtype(np.uint8))}
    assert sum(shape[0] for shape, _ in calls["parse"]) == len(valid)
    # An empty parsed mask pastes nothing: plain blend through it leaves the frames as they
    # were (the encoder's loss aside).
    before = np.stack(list(read_frames(info))).astype(np.float32)
    after = np.stack(list(read_frames(probe(tmp_path / "out.mp4")))).astype(np.float32)
    assert np.abs(before - after).mean() < 2


@needs_facexlib
def test_apply_with_bisenet_weights_in_place(run_s3edit, clip: Path, random_bisenet: Path,
                                             tmp_path: Path, monkeypatch):
    """`s3edit apply --mask bisenet` end to end with random BiSeNet weights: it finds them and
    runs through (what the random classes paste is not looked at)."""
    monkeypatch.setenv(FACEXLIB_WEIGHTS_ENV, str(random_bisenet))
    out = tmp_path / "out.mp4"
    proc = run_s3edit("apply", clip, "-o", out, "--attr", "blond_hair", "--scale", "0",
                      "--no-model", "--mask", "bisenet", "--device", "cpu", "-q")
    assert proc.returncode == 0, proc.stderr
    assert probe(out).frame_count == probe(clip).frame_count


@pytest.fixture
def fake_input(tmp_path: Path) -> Path:
    """An input that exists: the backends are checked before any input is probed."""
    path = tmp_path / "in.mp4"
    path.write_bytes(b"not probed")
    return path


@needs_face_alignment
def test_missing_fan_weights_fail_in_one_line(run_s3edit, fake_input: Path, tmp_path: Path,
                                              monkeypatch):
    from face_alignment.api import models_urls

    home = tmp_path / "empty_torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    proc = run_s3edit("apply", fake_input, "-o", tmp_path / "out.mp4", "--attr", "eyeglasses",
                      "--landmarks", "fan", timeout=120)
    assert proc.returncode == 1
    name = Path(models_urls["2DFAN-4"]).name
    message = error_message(proc, name, home / "hub" / "checkpoints")
    assert len(message.splitlines()) == 1
    assert not (home / "hub" / "checkpoints" / name).exists()  # nothing was downloaded


def test_the_auto_mask_is_bisenet_for_hair_edits_when_its_weights_are_there(
        random_bisenet: Path, tmp_path: Path, monkeypatch):
    from s3edit.options import EditOptions

    monkeypatch.setenv(FACEXLIB_WEIGHTS_ENV, str(random_bisenet))
    assert EditOptions("blond_hair", 0.6).mask == "bisenet"
    assert EditOptions("eyeglasses", 0.6).mask == "mesh", "the face oval for the others"
    assert EditOptions("blond_hair", 0.6, mask="mesh").mask == "mesh", "as asked"
    monkeypatch.setenv(FACEXLIB_WEIGHTS_ENV, str(tmp_path / "no_weights"))
    assert EditOptions("blond_hair", 0.6).mask == "mesh", "without weights, no error"


@needs_facexlib
def test_missing_bisenet_weights_fail_in_one_line(run_s3edit, fake_input: Path, tmp_path: Path,
                                                  monkeypatch):
    folder = tmp_path / "no_weights"
    monkeypatch.setenv(FACEXLIB_WEIGHTS_ENV, str(folder))
    proc = run_s3edit("apply", fake_input, "-o", tmp_path / "out.mp4", "--attr", "blond_hair",
                      "--mask", "bisenet", timeout=120)
    assert proc.returncode == 1
    error_message(proc, BISENET_FILE, folder)


def test_missing_package_fails_in_one_line_with_the_pip_command(run_s3edit, fake_input: Path,
                                                                 tmp_path: Path, monkeypatch):
    """face-alignment made unimportable by a stand-in package that raises ImportError."""
    stand_in = tmp_path / "site" / "face_alignment"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("raise ImportError('stand-in: not installed')\n")
    monkeypatch.setenv("PYTHONPATH", str(stand_in.parent))
    proc = run_s3edit("apply", fake_input, "-o", tmp_path / "out.mp4", "--attr", "eyeglasses",
                      "--landmarks", "fan", timeout=120)
    assert proc.returncode == 1
    error_message(proc, "face-alignment", "pip install --no-deps face-alignment==1.5.0")

