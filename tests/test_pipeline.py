"""The library's way in, run in process: `Pipeline` with the pass-through model on a short real
clip (no network), beside the subprocess runs of tests/test_cli.py."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PCAVS_CLIP, ffmpeg, psnr, shared_clip

import s3edit.pipeline
from s3edit.edit.loading import UntrainedEditor
from s3edit.errors import S3EditError, UsageError
from s3edit.model.face_model import PassThroughModel
from s3edit.options import EditOptions
from s3edit.pipeline import Pipeline
from s3edit.video import probe, read_frames


@pytest.fixture(scope="module")
def clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Half a second (12 frames) of a real talking head, 224x224 with audio."""
    path = tmp_path_factory.mktemp("pipeline") / "clip.mp4"
    ffmpeg("-i", shared_clip(shared_data, PCAVS_CLIP), "-t", "0.5", path)
    return path


def frames(path: Path) -> np.ndarray:
    return np.stack(list(read_frames(probe(path))))


def test_from_weights_edits_a_clip_in_three_lines(clip: Path, tmp_path: Path):
    pipeline = Pipeline.from_weights(no_model=True)  # the bundled editors, no autoencoder
    result = pipeline.run(clip, tmp_path / "out.mp4", EditOptions("eyeglasses", 0.6))
    assert (result.attr, result.scale, result.status) == ("Eyeglasses", 0.6, "ok")
    assert result.frames == result.frames_with_face == probe(clip).frame_count
    # The pass-through model draws the input crop back, so the residual blend adds nothing.
    assert psnr(frames(clip), frames(tmp_path / "out.mp4")) > 40


def test_run_takes_the_callers_video_info_and_times_its_stages(clip: Path, tmp_path: Path,
                                                               monkeypatch):
    info = probe(clip)

    def no_second_probe(path):
        raise AssertionError("run probed the input again")

    monkeypatch.setattr(s3edit.pipeline, "probe", no_second_probe)
    seen: list[str] = []

    @contextmanager
    def timer(stage: str):
        seen.append(stage)
        yield

    pipeline = Pipeline(PassThroughModel(64), UntrainedEditor("s3", tmp_path), timer=timer)
    options = EditOptions("Smiling", 0, blend="plain", batch_size=5, keyframe_every=1,
                          audio=False)
    result = pipeline.run(info, tmp_path / "out.mp4", options)
    assert result.frames == info.frame_count
    assert {"decode (pass 1)", "detect + landmarks", "identity embed", "align crop",
            "model encode (invert)", "model decode (edit)", "paste back",
            "video encode"} <= set(seen)
    assert seen.count("model encode (invert)") == 3  # 12 frames in batches of 5
    assert "model decode (recon)" not in seen  # only --blend residual-decoded decodes twice
    out = probe(tmp_path / "out.mp4")
    assert (out.frame_count, out.has_audio) == (info.frame_count, False)


class Brightening(PassThroughModel):
    """Decodes every crop 0.2 brighter (in [-1, 1]); counts the frames it runs on."""

    def __init__(self):
        super().__init__(64)
        self.frames_run = 0

    def encode(self, crops, identity, landmarks):
        self.frames_run += len(crops)
        return crops

    def decode(self, latents, identity, landmarks, reference=None, guidance=1.0):
        return latents + 0.2


def test_keyframes_carry_the_change_to_the_frames_between(clip: Path, tmp_path: Path):
    count = probe(clip).frame_count
    keyframes = len(range(0, count, 4)) + ((count - 1) % 4 != 0)  # every 4th and the last
    outputs = {}
    for every in (1, 4):
        model = Brightening()
        pipeline = Pipeline(model, UntrainedEditor("s3", tmp_path))
        # Young: pasted through the whole oval (an eye attribute's band would dim the mean)
        options = EditOptions("Young", 0, blend="plain", keyframe_every=every,
                              audio=False)
        pipeline.run(clip, tmp_path / f"every{every}.mp4", options)
        outputs[every] = frames(tmp_path / f"every{every}.mp4")
        assert model.frames_run == (count if every == 1 else keyframes)
    # The change is the same on every frame, so interpolating it loses nothing; and every
    # frame, keyframe or not, shows it.
    assert psnr(outputs[1], outputs[4]) > 40
    brighter = outputs[4].mean(axis=(1, 2, 3)) - frames(clip).mean(axis=(1, 2, 3))
    assert brighter.min() > 2


def test_an_edit_without_its_editor_fails_before_reading_the_video(tmp_path: Path):
    pipeline = Pipeline(PassThroughModel(64), UntrainedEditor("lt", tmp_path))
    with pytest.raises(S3EditError, match="no weights for the 'lt' editor"):
        pipeline.run(tmp_path / "not-there.mp4", tmp_path / "out.mp4",
                     EditOptions("eyeglasses", 0.5))
    pipeline.check_edit(EditOptions("eyeglasses", 0))  # scale 0 needs no editor


def test_edit_options_check_what_they_are_given():
    assert EditOptions("blond_hair").attr == "Blond_Hair"
    with pytest.raises(UsageError, match="blend"):
        EditOptions("eyeglasses", blend="soft")
    with pytest.raises(UsageError):
        EditOptions("spectacles")
    with pytest.raises(UsageError, match="editor"):
        Pipeline.from_weights(editor="nope", no_model=True)


def test_the_auto_blend_drops_the_frames_detail_only_when_taking_something_worn_off():
    assert EditOptions("eyeglasses", -0.6).blend == "adaptive"
    assert EditOptions("wearing_hat", -1).blend == "adaptive"
    assert EditOptions("young", -0.6).blend == "residual"
    assert EditOptions("eyeglasses", 0.6).blend == "residual"
    assert EditOptions("eyeglasses", 0).blend == "residual"
    assert EditOptions("eyeglasses", -0.6, blend="residual").blend == "residual"


def frontal_and_turned_meshes() -> tuple[np.ndarray, np.ndarray]:
    """A real face mesh (videoretalking 1, frame 0: a man looking slightly aside), and the
    same with the nose moved most of the way to one side of the face (head turn -0.8)."""
    from helpers import real_mesh

    from s3edit.face.hair import CHEEK_SIDES, NOSE_TIP, head_turn

    frontal = real_mesh()
    turned = frontal.copy()
    turned[NOSE_TIP] = 0.9 * frontal[CHEEK_SIDES[0]] + 0.1 * frontal[CHEEK_SIDES[1]]
    assert abs(head_turn(frontal)) < 0.5 and head_turn(turned) == pytest.approx(-0.8)
    return frontal, turned


def profile_mesh() -> np.ndarray:
    """The frontal mesh with the nose past one side of the face (head turn -1.6)."""
    from s3edit.face.hair import CHEEK_SIDES, NOSE_TIP

    profile, _ = frontal_and_turned_meshes()
    profile[NOSE_TIP] = 1.3 * profile[CHEEK_SIDES[0]] - 0.3 * profile[CHEEK_SIDES[1]]
    return profile


def test_auto_guidance_of_eyeglasses_put_on_is_settled_by_the_first_keyframes():
    frontal, turned = frontal_and_turned_meshes()

    def calibrates(options: EditOptions, mesh: np.ndarray) -> bool:
        return Pipeline.calibrates_guidance(options, mesh[None])

    glasses = EditOptions("eyeglasses", 0.6)
    assert calibrates(glasses, frontal) and calibrates(glasses, turned)
    assert not calibrates(glasses, profile_mesh()), "in profile guidance only breaks the face"
    assert not calibrates(glasses, np.full_like(frontal, np.nan)), "never tracked"
    assert not calibrates(EditOptions("eyeglasses", -0.6), frontal), "taking them off"
    assert not calibrates(EditOptions("smiling", 0.6), frontal)
    assert not calibrates(EditOptions("eyeglasses", 0.6, guidance="1.5"), frontal), "as asked"


def test_hair_noise_is_fresh_for_hair_edits_of_a_face_facing_the_camera():
    frontal, turned = frontal_and_turned_meshes()
    untracked = np.full_like(frontal, np.nan)

    def redraws(options: EditOptions, *meshes: np.ndarray) -> bool:
        return Pipeline.redraws_hair(options, np.stack(meshes))

    blond = EditOptions("blond_hair", 0.6)
    assert blond.hair_noise == "auto"
    assert redraws(blond, frontal, frontal, untracked)
    assert not redraws(blond, turned, turned, frontal), "most frames turned aside"
    assert not redraws(blond, untracked)
    assert redraws(EditOptions("gray_hair", -0.5), frontal)
    assert not redraws(EditOptions("eyeglasses", 0.6), frontal)
    assert not redraws(EditOptions("blond_hair", 0), frontal), "scale 0 keeps the frame"
    assert redraws(EditOptions("blond_hair", 0.6, hair_noise="fresh"), turned), "as asked"
    assert not redraws(EditOptions("blond_hair", 0.6, hair_noise="inverted"), frontal)
    with pytest.raises(UsageError, match="hair noise"):
        EditOptions("blond_hair", 0.6, hair_noise="new")


def test_auto_guidance_guides_the_edit_of_a_face_turned_short_of_a_profile():
    from s3edit.options import TURNED_FACE_GUIDANCE

    frontal, turned = frontal_and_turned_meshes()

    def guidance(options: EditOptions, *meshes: np.ndarray) -> float:
        return Pipeline.edit_guidance(options, np.stack(meshes))

    smile = EditOptions("smiling", 0.6)
    assert smile.guidance == "auto"
    assert guidance(smile, frontal, frontal, turned) == 1.0
    assert guidance(smile, turned, turned, frontal) == TURNED_FACE_GUIDANCE > 1
    assert guidance(EditOptions("eyeglasses", 0.6), turned) == TURNED_FACE_GUIDANCE
    assert guidance(smile, profile_mesh()) == 1.0, "in profile the decoder draws nothing"
    assert guidance(smile, np.full_like(frontal, np.nan)) == 1.0, "never tracked"
    for asked in (1, "1.5", 3.0):  # as asked, whichever way the face looks
        options = EditOptions("eyeglasses", 0.6, guidance=asked)
        assert guidance(options, turned) == guidance(options, frontal) == float(asked)
    for bad in ("strong", "-1", 21):
        with pytest.raises(UsageError, match="guidance"):
            EditOptions("eyeglasses", 0.6, guidance=bad)


def test_fresh_hair_noise_redraws_the_hair_alike_on_every_frame():
    """Inside the hair masks the noise maps take one draw, the same for every frame and every
    call; outside them they stay the inverted ones."""
    from s3edit.pipeline import with_fresh_hair_noise

    latents = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    hair = np.zeros((2, 64, 64), np.float32)
    hair[0, :32] = 1  # the top half of the first crop, the top quarter of the second
    hair[1, :16] = 1
    redrawn = with_fresh_hair_noise(latents, hair)
    assert redrawn.shape == latents.shape
    torch.testing.assert_close(redrawn[:, :, 10:], latents[:, :, 10:], rtol=0, atol=0)
    torch.testing.assert_close(redrawn[0, :, :2], redrawn[1, :, :2])  # the same draw
    assert (redrawn[:, :, :2] - latents[:, :, :2]).abs().mean() > 0.5
    torch.testing.assert_close(with_fresh_hair_noise(latents, hair), redrawn)


def test_a_weaker_hair_edit_redraws_the_hair_noise_in_part():
    from s3edit.pipeline import HAIR_FULL_REDRAW_SCALE, hair_redraw_share, with_fresh_hair_noise

    assert hair_redraw_share(HAIR_FULL_REDRAW_SCALE) == hair_redraw_share(-1.5) == 1.0
    assert hair_redraw_share(HAIR_FULL_REDRAW_SCALE / 2) == pytest.approx(0.5)
    latents = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    hair = np.ones((1, 64, 64), np.float32)
    torch.testing.assert_close(with_fresh_hair_noise(latents, hair, 0.0), latents)
    whole = with_fresh_hair_noise(latents, hair, 1.0)
    half = with_fresh_hair_noise(latents, hair, 0.5)
    # Halfway between the inverted draw and the fresh one, and still unit noise.
    for draw in (latents, whole):
        assert torch.corrcoef(torch.stack([half.flatten(), draw.flatten()]))[0, 1] > 0.6
    assert half.std() == pytest.approx(1.0, abs=0.05)


def test_lenses_are_clear_when_adding_eyeglasses():
    assert EditOptions("eyeglasses", 0.6).lenses == "clear"
    assert EditOptions("eyeglasses", -0.6).lenses == "decoded", "taking them off: the tint too"
    assert EditOptions("eyeglasses", 0).lenses == "decoded"
    assert EditOptions("young", 0.6).lenses == "decoded"
    assert EditOptions("eyeglasses", 0.6, lenses="decoded").lenses == "decoded", "as asked"
    with pytest.raises(UsageError, match="lenses"):
        EditOptions("eyeglasses", 0.6, lenses="dark")


def test_without_tint_keeps_thin_rims_and_drops_broad_shading():
    """A change made of a broad dark patch (the lens tint) and a one-pixel dark ring (a rim):
    the patch goes, the ring stays."""
    from s3edit.pipeline import without_tint

    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    patch = -40 * np.exp(-((x - 32) ** 2 + (y - 32) ** 2) / (2 * 10**2))
    ring = np.where(np.abs(np.hypot(x - 32, y - 32) - 12) < 0.5, -60.0, 0.0)
    delta = np.repeat((patch + ring)[None, ..., None], 3, axis=-1).astype(np.float32)
    clear = without_tint(delta)
    assert clear.shape == delta.shape
    on_ring, inside = np.abs(np.hypot(x - 32, y - 32) - 12) < 0.5, np.hypot(x - 32, y - 32) < 6
    assert clear[0][inside].mean() > -4, "the patch's darkening inside the ring is gone"
    assert delta[0][inside].mean() < -35
    assert clear[0][on_ring].mean() < -30, "the ring keeps most of its darkness"
    np.testing.assert_allclose(without_tint(np.full((1, 64, 64, 3), 9.0, np.float32)), 0,
                               atol=1e-4)


def test_an_even_hair_tint_takes_an_orange_patch_into_the_blond_and_leaves_the_rest():
    """Dark hair over the top half of a crop turned blond, with an orange patch (the decoder's
    on d0's crown): the patch's colour comes within the spread of the blond's, its lightness
    and everything outside the hair stay as they were."""
    import cv2

    from s3edit.pipeline import with_even_hair_tint

    crop = np.full((1, 64, 64, 3), (60, 45, 35), np.uint8)
    hair = np.zeros((1, 128, 128), np.float32)
    hair[0, :64] = 1
    edited = crop.astype(np.float32).copy()
    edited[0, :32] = (200, 180, 120)  # blond
    edited[0, :32, :12] = (220, 120, 60)  # orange patch
    edited[0, 40:] = (90, 70, 60)  # the face below changes too, outside the hair
    evened = with_even_hair_tint(edited - crop, crop, hair, spread=6.0)

    def lab(x):
        return cv2.cvtColor(np.clip(x, 0, 255).astype(np.float32) / 255, cv2.COLOR_RGB2LAB)

    before, after = lab(edited[0]), lab(crop[0] + evened[0])
    blond, patch = before[5, 30], after[5, 5]
    assert np.abs(lab(edited[0])[5, 5, 1:] - blond[1:]).max() > 15, "the patch was orange"
    assert np.abs(patch[1:] - after[5, 30, 1:]).max() < 6 + 1, "now its colour is the blond's"
    assert abs(patch[0] - before[5, 5, 0]) < 1, "its lightness is kept"
    np.testing.assert_allclose(evened[0, 40:], (edited - crop)[0, 40:], atol=1e-3)
