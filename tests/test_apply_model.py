"""`s3edit apply` through the bundled diffusion autoencoder (a short real clip, few steps)."""

import json

import cv2
import numpy as np
import pytest
from helpers import BOB_CLIP, FACE_CLIP, PCAVS_CLIP, PORTRAIT_CLIP, ffmpeg, psnr, shared_clip

from s3edit.video import probe, read_frames
from s3edit.weights import REPO_WEIGHTS, autoencoder_dir


@pytest.fixture(scope="module")
def short_clip(shared_data, tmp_path_factory):
    clip = tmp_path_factory.mktemp("model") / "one second.mp4"
    ffmpeg("-i", shared_clip(shared_data, PCAVS_CLIP), "-t", "1", clip)
    return clip


def apply(run_s3edit, src, out, *extra, steps=3):
    proc = run_s3edit("apply", src, "-o", out, "--attr", "eyeglasses", "--steps", str(steps),
                      "--device", "cpu", "--json", "-q", *extra, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def frames(path):
    return np.stack(list(read_frames(probe(path))))


def test_bundled_autoencoder_is_present():
    assert autoencoder_dir(REPO_WEIGHTS) is not None, "weights/autoencoder is missing"


def test_scale_zero_plain_blend_shows_the_reconstruction(run_s3edit, short_clip, tmp_path):
    out = tmp_path / "plain.mp4"
    record = apply(run_s3edit, short_clip, out, "--scale", "0", "--blend", "plain", steps=10)
    assert record["status"] == "ok" and record["frames"] == probe(short_clip).frame_count
    original, edited = frames(short_clip), frames(out)
    # The decoded face is the model's 64 px reconstruction, not a copy of the input...
    assert psnr(original, edited) < 38
    # ...and it is still that face: the frame as a whole stays close.
    assert psnr(original, edited) > 20


def test_scale_zero_residual_blend_returns_the_input(run_s3edit, short_clip, tmp_path):
    out = tmp_path / "residual.mp4"
    apply(run_s3edit, short_clip, out, "--scale", "0")
    assert psnr(frames(short_clip), frames(out)) > 40  # only the video codec's loss


def test_preview_shows_original_reconstruction_edit_and_the_edited_frame(run_s3edit, short_clip,
                                                                          tmp_path):
    from s3edit.face.align import align_crop, square_from_landmarks
    from s3edit.face.landmarks import FaceDetector

    out = tmp_path / "preview.png"
    args = ("preview", short_clip, "--frame", "5", "--attr", "young", "--scale", "1",
            "--device", "cpu", "-o", out)
    proc = run_s3edit(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr
    strip = cv2.imread(str(out))[:, :, ::-1]
    assert strip.shape == (256, 1024, 3)
    original, recon, edit, in_frame = (strip[40:, i * 256:(i + 1) * 256].astype(float)
                                       for i in range(4))
    # Below the labels: the reconstruction is the same face as the original panel (landmark
    # dots aside), and the edit differs from the reconstruction.
    assert np.abs(recon - original).mean() < 20
    assert np.abs(edit - recon).mean() > 0.5
    # The last panel is the frame with the edit pasted in, cut as the original panel is: the
    # same picture, changed on the face and untouched outside the mask (the corners).
    frame = frames(short_clip)[5]
    with FaceDetector(video=False) as detect:
        face = max(detect(frame), key=lambda f: f.area)
    unedited = align_crop(frame, square_from_landmarks(face.lm68), 256)[40:].astype(float)
    assert np.abs(in_frame - unedited).mean() < 20
    for corner in (np.s_[-24:, :24], np.s_[-24:, -24:]):
        np.testing.assert_array_equal(in_frame[corner], unedited[corner])
    face_box = np.s_[60:180, 70:186]
    assert np.abs(in_frame[face_box] - unedited[face_box]).mean() > 0.5
    again = run_s3edit(*args, timeout=600)
    assert again.returncode != 0 and "exists" in again.stderr


def test_guidance_scales_the_previewed_edit(run_s3edit, short_clip, tmp_path):
    """Edit guidance decodes the edit further from the unedited face and leaves the
    reconstruction alone."""
    def panels(guidance: float | str) -> tuple[np.ndarray, np.ndarray]:
        out = tmp_path / f"guidance {guidance}.png"
        proc = run_s3edit("preview", short_clip, "--frame", "5", "--attr", "young", "--scale",
                          "1", "--guidance", str(guidance), "--device", "cpu", "-o", out,
                          timeout=600)
        assert proc.returncode == 0, proc.stderr
        strip = cv2.imread(str(out)).astype(float)
        return strip[40:, 256:512], strip[40:, 512:768]  # below the labels

    recon, edit = panels(1)
    recon_guided, edit_guided = panels(3)
    np.testing.assert_allclose(recon_guided, recon, atol=1)
    change, guided_change = np.abs(edit - recon).mean(), np.abs(edit_guided - recon).mean()
    assert change > 0.5, "the edit must change the face for guidance to scale it"
    assert guided_change > 1.5 * change
    # This face is turned aside (pcavs 00010, head turn -1.0): the default guides the edit.
    _, edit_auto = panels("auto")
    assert np.abs(edit_auto - recon).mean() > 1.3 * change


def test_smiling_moves_the_landmarks_and_the_face_smiles(run_s3edit, short_clip, tmp_path):
    """An expression edit goes through the landmark codes (weights/editors/expression): the
    image classifier, which never saw the codes, sees the smile, and the person stays."""
    from s3edit.metrics.evaluate import evaluate_pair

    out = tmp_path / "smile.mp4"
    # At 3 steps the round trip is far from exact, so the change is taken from the decoded
    # reconstruction rather than from the input crop.
    proc = run_s3edit("apply", short_clip, "-o", out, "--attr", "smiling", "--scale", "1.5",
                      "--steps", "3", "--blend", "residual-decoded", "--device", "cpu", "-q",
                      "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)  # what auto chose: this face is turned aside (-1.0)
    assert (record["guidance"], record["hair_noise"]) == (2.0, "inverted")
    result = evaluate_pair(short_clip, out, "Smiling", every=4)
    assert result["target_change"] > 0.1
    assert result["identity"] > 0.9


def test_taking_glasses_off_removes_the_frames_the_residual_paste_leaves_on(run_s3edit,
                                                                            shared_data,
                                                                            tmp_path):
    """liveportrait d13 wears glasses. The default blend for a negative eyeglasses edit drops
    the frame's own detail where the edit changes the face, so the sharp rims go with the
    model's; the residual paste keeps them (bench/README.md, stop 23)."""
    from s3edit.metrics.evaluate import evaluate_pair

    clip = tmp_path / "glasses.mp4"
    # Frames 12-23, where the glasses face the camera and the classifier is sure of them.
    ffmpeg("-i", shared_clip(shared_data, PORTRAIT_CLIP), "-vf",
           "trim=start_frame=12:end_frame=24,setpts=PTS-STARTPTS", "-an", clip)
    after = {}
    for blend in ("auto", "residual"):
        out = tmp_path / f"{blend}.mp4"
        apply(run_s3edit, clip, out, "--scale", "-0.6", "--blend", blend, steps=10)
        result = evaluate_pair(clip, out, "Eyeglasses", every=3)
        assert result["identity"] > 0.96
        after[blend] = np.mean(result["per_frame"]["target_edited"])
    before = np.mean(result["per_frame"]["target_original"])
    assert before > 0.7
    assert after["auto"] < 0.2
    assert after["residual"] > 0.25


def test_stochastic_decoding_changes_only_what_the_edit_changes(run_s3edit, short_clip,
                                                                tmp_path):
    """With --eta the edit is measured against a reconstruction decoded with the same noise:
    the reconstruction panel is the input face, the edit changes it, the same seed repeats
    the edit and another seed draws another one."""
    def panels(seed: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = tmp_path / f"{name}.png"
        proc = run_s3edit("preview", short_clip, "--frame", "5", "--attr", "eyeglasses",
                          "--scale", "0.6", "--eta", "1", "--seed", str(seed), "--device",
                          "cpu", "-o", out, timeout=600)
        assert proc.returncode == 0, proc.stderr
        strip = cv2.imread(str(out)).astype(float)
        return strip[40:, :256], strip[40:, 256:512], strip[40:, 512:768]

    original, recon, edit = panels(0, "seed 0")
    assert np.abs(recon - original).mean() < 20  # the 64 px crop (landmark dots aside)
    assert np.abs(edit - recon).mean() > 1
    np.testing.assert_array_equal(panels(0, "seed 0 again")[2], edit)
    _, other_recon, other_edit = panels(1, "seed 1")
    # The reconstruction is the input crop whatever the draws: only the edit moves.
    np.testing.assert_array_equal(other_recon, recon)
    assert np.abs(other_edit - edit).mean() > 0.2


def test_blond_hair_redraws_the_hair_and_leaves_the_background(run_s3edit, shared_data,
                                                              tmp_path):
    """A man with dark hair (videoretalking 1), made blond. The default redraws the noise
    under the hair: the hair comes out light and more golden than from the inverted noise,
    which holds its colour and greys it, and the classifier sees more blond. The paste mask is
    then the hair found and the face's outer ring, so the wall beside the head stays as it was
    (the mesh's hair guess, used with the inverted noise, takes wall in and lightens it too),
    and so does the face within (the decode shades one cheek), from either noise."""
    from s3edit.face.hair import HairSegmenter
    from s3edit.face.landmarks import FaceDetector
    from s3edit.face.mask import face_mask
    from s3edit.metrics.evaluate import evaluate_pair

    clip = tmp_path / "dark hair.mp4"
    ffmpeg("-i", shared_clip(shared_data, FACE_CLIP), "-frames:v", "12", "-an", clip)
    original = frames(clip)
    with FaceDetector(video=False) as detect:
        mesh = max(detect(original[0]), key=lambda f: f.area).mesh
    with HairSegmenter() as segment:
        hair = segment(original[0], mesh) > 0
    grown = cv2.dilate(hair.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    shape = original.shape[1:3]
    # The mesh's hair guess, less the face and the hair found: wall, mostly.
    wall_region = ((face_mask(mesh, shape, attr="blond_hair") > 0.5) & ~grown
                   & (face_mask(mesh, shape, dilate=0.05) == 0))
    inner_face = face_mask(mesh, shape, dilate=-0.3) > 0.5
    lab_change, blond, wall, face = {}, {}, {}, {}
    for noise in ("fresh", "inverted"):
        out = tmp_path / f"{noise}.mp4"
        apply(run_s3edit, clip, out, "--attr", "blond_hair", "--scale", "0.6", "--hair-noise",
              noise, steps=10)
        edited = frames(out)
        lab = [cv2.cvtColor(f, cv2.COLOR_RGB2LAB).astype(float) for f in (original[0],
                                                                          edited[0])]
        lab_change[noise] = (lab[1] - lab[0])[hair].mean(0)
        wall[noise] = np.abs(edited[0].astype(float) - original[0])[wall_region].mean()
        face[noise] = np.abs(edited[0].astype(float) - original[0])[inner_face].mean()
        blond[noise] = evaluate_pair(clip, out, "Blond_Hair", every=3)["target_change"]
    (light, _, yellow), (_, _, inverted_yellow) = lab_change["fresh"], lab_change["inverted"]
    assert light > 60 and yellow > inverted_yellow + 1  # both lighten it; fresh more golden
    assert blond["fresh"] > blond["inverted"] + 0.03
    assert wall["fresh"] < 2 and wall["inverted"] > 3 * wall["fresh"]
    assert face["fresh"] < 2.5 and face["inverted"] < 2.5


def test_blond_hair_reaches_the_ends_of_a_bob_past_the_crop(run_s3edit, shared_data, tmp_path):
    """videoretalking 4: her bob ends just below the model's crop. The hair there, past the
    crop, is lightened and made golden like the hair inside it, not left brown under a
    straight edge."""
    from s3edit.face.align import square_from_landmarks
    from s3edit.face.hair import HairSegmenter
    from s3edit.face.landmarks import FaceDetector

    clip, out = tmp_path / "bob.mp4", tmp_path / "blond.mp4"
    ffmpeg("-i", shared_clip(shared_data, BOB_CLIP), "-frames:v", "4", "-an", clip)
    apply(run_s3edit, clip, out, "--attr", "blond_hair", "--scale", "0.6", steps=10)
    original, edited = frames(clip)[0], frames(out)[0]
    with FaceDetector(video=False) as detect:
        face = max(detect(original), key=lambda f: f.area)
    with HairSegmenter() as segment:
        hair = segment(original, face.mesh) > 0
    centre, across, down = square_from_landmarks(face.lm68)
    ys, xs = np.mgrid[:original.shape[0], :original.shape[1]]
    offset = np.stack([xs - centre[0], ys - centre[1]], -1)
    v = offset @ down / down.dot(down)  # 1 on the crop's bottom edge
    u = offset @ across / across.dot(across)
    lab = [cv2.cvtColor(f, cv2.COLOR_RGB2LAB).astype(float) for f in (original, edited)]

    def change(lo, hi):
        where = hair & (v > lo) & (v <= hi) & (np.abs(u) < 1)
        assert where.sum() > 200
        return (lab[1] - lab[0])[where].mean(0)

    light_in, _, yellow_in = change(0.8, 1.0)
    light_past, _, yellow_past = change(1.0, 1.2)
    assert light_in > 30 and yellow_in > 5
    assert light_past > 0.4 * light_in and yellow_past > 0.4 * yellow_in


def test_a_hair_edit_grows_with_its_scale(run_s3edit, shared_data, tmp_path):
    """videoretalking 4, made blond at three strengths: the hair lightens a little at 0.1,
    more at 0.3 and most at 0.6, rather than jumping to the decoder's hair at any scale."""
    from s3edit.face.hair import HairSegmenter
    from s3edit.face.landmarks import FaceDetector

    clip = tmp_path / "bob.mp4"
    ffmpeg("-i", shared_clip(shared_data, BOB_CLIP), "-frames:v", "4", "-an", clip)
    original = frames(clip)[0]
    with FaceDetector(video=False) as detect:
        mesh = max(detect(original), key=lambda f: f.area).mesh
    with HairSegmenter() as segment:
        hair = segment(original, mesh) > 0
    light = {}
    for scale in (0.1, 0.3, 0.6):
        out = tmp_path / f"blond {scale}.mp4"
        apply(run_s3edit, clip, out, "--attr", "blond_hair", "--scale", str(scale), steps=10)
        lab = [cv2.cvtColor(f, cv2.COLOR_RGB2LAB).astype(float) for f in (original,
                                                                          frames(out)[0])]
        light[scale] = (lab[1] - lab[0])[hair, 0].mean()
    # Measured 6, 28 and 55 L; with the noise redrawn whole at every scale, 16, 39 and 55.
    assert 0 < light[0.1] < light[0.3] < light[0.6]
    assert light[0.1] < 0.2 * light[0.6]


def test_clear_lenses_draw_rims_where_the_decoded_edit_darkens_the_eyes(run_s3edit, shared_data,
                                                                         tmp_path):
    """videoretalking 1, eyeglasses +0.6. As decoded, the edit darkens the eyes like
    sunglasses (by 17 grey levels on average); the default (clear lenses) keeps the rims and
    drops the tint: the eyes keep most of their brightness while dark lines stay round them,
    and the classifier still calls them eyeglasses on every measured frame, with the identity
    kept about as well."""
    from s3edit.face.landmarks import FaceDetector
    from s3edit.face.mask import face_size, region_mask
    from s3edit.metrics.evaluate import evaluate_pair

    clip = tmp_path / "no glasses.mp4"
    ffmpeg("-i", shared_clip(shared_data, FACE_CLIP), "-frames:v", "12", "-an", clip)
    original = frames(clip)
    with FaceDetector(video=False) as detect:
        mesh = max(detect(original[0]), key=lambda f: f.area).mesh
    eyes = region_mask(mesh, original.shape[1:3], "eyes") > 0
    size = int(0.25 * face_size(mesh))
    ring = (cv2.dilate(eyes.astype(np.uint8), np.ones((size, size), np.uint8)) > 0) & ~eyes
    change, darkest, result = {}, {}, {}
    for lenses in ("clear", "decoded"):
        out = tmp_path / f"{lenses}.mp4"
        apply(run_s3edit, clip, out, "--scale", "0.6", "--lenses", lenses, steps=10)
        diff = frames(out)[0].astype(float).mean(-1) - original[0].astype(float).mean(-1)
        change[lenses] = diff[eyes].mean()
        darkest[lenses] = np.percentile(diff[ring], 5)
        result[lenses] = evaluate_pair(clip, out, "Eyeglasses", every=3)
    assert change["decoded"] < -10 and change["clear"] > 0.5 * change["decoded"]  # the tint
    assert darkest["clear"] < -20  # the rims round the eyes
    assert min(result["clear"]["per_frame"]["target_edited"]) > 0.7
    # Issue 12's bar, and about as well kept as with the tint: the thin rims cost 0.000 with
    # imageio-ffmpeg's ffmpeg 9 and 0.009-0.011 with Debian's ffmpeg 5.1 (what setup.sh
    # installs), whose x264 encodes them otherwise.
    assert result["clear"]["identity"] >= 0.96
    assert result["clear"]["identity"] >= result["decoded"]["identity"] - 0.015


def test_auto_guidance_draws_the_glasses_a_face_gets_too_little_of(run_s3edit, shared_data,
                                                                   tmp_path):
    """videoretalking 3 faces the camera; without guidance its eyeglasses edit at +0.6 only
    shades the eyes (Eyeglasses 0.07 on 48 frames). The first keyframes show it, so the
    default decodes the clip with guidance, and the classifier sees glasses. liveportrait d0
    draws them without help and keeps guidance 1."""
    from s3edit.metrics.evaluate import evaluate_pair

    def edit(parts: tuple[str, ...], *extra: str) -> tuple[dict, dict]:
        clip = tmp_path / f"{parts[-1]}"
        if not clip.exists():
            ffmpeg("-i", shared_clip(shared_data, parts), "-frames:v", "12", "-an", clip)
        out = tmp_path / f"{parts[-1]}.{len(extra)}.mp4"
        record = apply(run_s3edit, clip, out, "--scale", "0.6", *extra, steps=10)
        return record, evaluate_pair(clip, out, "Eyeglasses", every=3)

    weak = ("videoretalking", "examples", "face", "3.mp4")
    record, result = edit(weak)
    assert record["guidance"] >= 1.5
    assert np.mean(result["per_frame"]["target_edited"]) > 0.6
    assert result["identity"] >= 0.96
    _, unguided = edit(weak, "--guidance", "1")
    assert max(unguided["per_frame"]["target_edited"]) < 0.3
    record, _ = edit(("liveportrait", "driving", "d0.mp4"))
    assert record["guidance"] == 1.0
