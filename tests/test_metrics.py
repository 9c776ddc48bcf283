"""Evaluation metrics: identity and its temporal consistency, locality, the image classifier,
the folder convention of the suite, and one real clip measured against itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FACE_CLIP, celeba_subset, real_mesh, shared_clip, smooth_image

from s3edit.errors import UsageError
from s3edit.face.mask import attribute_region, region_mask
from s3edit.metrics.attributes import ImageAttributeClassifier, load_image_classifier
from s3edit.metrics.evaluate import (
    evaluate_pair,
    evaluate_suite,
    find_pairs,
)
from s3edit.metrics.fidelity import (
    attribute_changes,
    change_inside,
    locality,
)
from s3edit.metrics.identity import (
    identity_similarity,
    sampled,
    temporal_identity,
    track_face,
)
from s3edit.metrics.report import format_table, write_report
from s3edit.train.image_classifier import balanced_weights, train_image_classifier
from s3edit.video import VideoWriter, binaries, probe, read_frames


def same_person(frames: int = 12, seed: int = 0) -> np.ndarray:
    """Embeddings of one face over time: a fixed vector plus a little per-frame noise."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=128) + 0.2 * rng.normal(size=(frames, 128))).astype(np.float32)


# --- identity ---------------------------------------------------------------------------------

def test_identity_metrics_of_an_unchanged_clip_are_one():
    emb = same_person()
    np.testing.assert_allclose(identity_similarity(emb, emb.copy()), 1, atol=1e-6)
    tl, tg = temporal_identity(emb, emb.copy())
    assert tl == pytest.approx(1) and tg == pytest.approx(1)


def test_temporal_identity_drops_when_one_frame_jumps():
    emb = same_person()
    edited = emb.copy()
    edited[5] = same_person(1, seed=7)[0]  # somebody else on one frame
    tl, tg = temporal_identity(emb, edited)
    assert tl < 0.9 and tg < 0.95 and tl < tg  # a one-frame flicker hurts neighbours most
    sim = identity_similarity(emb, edited)
    assert sim[5] < 0.5 and np.delete(sim, 5) == pytest.approx(1)


def test_temporal_identity_skips_frames_without_a_face():
    emb = same_person()
    edited = emb.copy()
    emb[3] = np.nan  # no face in the original there
    tl, tg = temporal_identity(emb, edited)
    assert tl == pytest.approx(1) and tg == pytest.approx(1)
    assert np.isnan(temporal_identity(emb[:2], edited[:1])).all()  # one frame: no pairs


# --- fidelity and locality --------------------------------------------------------------------

def test_attribute_regions():
    assert attribute_region("Eyeglasses") == "eyes" and attribute_region("Smiling") == "mouth"
    assert attribute_region("Blond_Hair") == "hair" and attribute_region("Young") == "face"
    # as the CLI's spellings and the mask's own checks are: in any case
    assert attribute_region("eyeglasses") == "eyes" and attribute_region("SMILING") == "mouth"


def test_locality_inside_and_outside_the_region():
    mesh = real_mesh(0.8, (200, 150))
    frame = smooth_image(420, 520)
    eyes = region_mask(mesh, frame.shape[:2], "eyes").astype(bool)

    inside = frame.copy()
    inside[eyes] = 255 - inside[eyes]
    a, total = change_inside(frame, inside, mesh, "eyes")
    assert total > 0 and a / total == pytest.approx(1)

    outside = frame.copy()
    outside[380:, 430:] = 0  # a corner far from the face
    a, total = change_inside(frame, outside, mesh, "eyes")
    assert total > 0 and a / total == pytest.approx(0)

    # Codec-sized noise everywhere is not change; an edit of the eyes on top of it still is.
    noise = np.random.default_rng(0).integers(-3, 4, frame.shape)
    noisy = np.clip(inside.astype(int) + noise, 0, 255).astype(np.uint8)
    a, total = change_inside(frame, noisy, mesh, "eyes")
    assert a / total > 0.95
    assert np.isnan(locality(np.zeros(3), np.zeros(3)))  # nothing changed: undefined
    assert locality(np.array([1.0, 0, np.nan]), np.array([1.0, 3, np.nan])) == 0.25


def test_attribute_changes():
    original = np.full((4, 40), 0.2)
    edited = original.copy()
    edited[:, 15] = 0.9
    edited[:, 0] = 0.3
    edited[2] = np.nan  # no face there: left out
    target, off, each = attribute_changes(original, edited, 15)
    assert target == pytest.approx(0.7) and off == pytest.approx(0.1 / 39)
    assert each[15] == pytest.approx(0.7) and each[0] == pytest.approx(0.1)
    assert np.abs(np.delete(each, [0, 15])).max() == 0


# --- image classifier -------------------------------------------------------------------------

def test_classifier_shapes_and_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = ImageAttributeClassifier().eval()
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1e6
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 40)
    crops = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    probs = model.probabilities(crops)
    assert probs.shape == (3, 40) and ((probs > 0) & (probs < 1)).all()
    model.save_pretrained(tmp_path / "clf")
    loaded = load_image_classifier(tmp_path / "clf")
    np.testing.assert_allclose(loaded.probabilities(crops), probs, atol=1e-6)
    assert loaded.index("Eyeglasses") == 15


def test_train_image_classifier_runs(shared_data: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch):
    celeba = shared_data / "CelebAMask-HQ-128"
    if not celeba.is_dir():
        pytest.skip(f"{celeba} not found")
    data = celeba_subset(celeba, tmp_path / "celeba")
    monkeypatch.setenv("S3EDIT_CACHE", str(tmp_path / "cache"))

    folder = train_image_classifier(data, tmp_path / "out", steps=3, batch_size=4,
                                    progress=False)
    assert (folder / "config.json").exists()
    metrics = (folder / "metrics.json").read_text()
    assert '"train_images": 16' in metrics and '"steps": 3' in metrics
    assert load_image_classifier(folder).probabilities(np.zeros((1, 128, 128, 3), np.uint8)
                                                       ).shape == (1, 40)


def test_balanced_weights_balance_a_rare_pairing_within_each_half():
    # Columns: a hair colour common in one half (group = column 1) and rare in the other, a
    # label too rare in one half to balance there, and the group itself.
    rng = np.random.default_rng(0)
    group = torch.tensor(rng.random(4000) < 0.4).float()
    colour = torch.where(group == 1, torch.tensor(rng.random(4000) < 0.02).float(),
                         torch.tensor(rng.random(4000) < 0.3).float())
    rare = torch.where(group == 1, torch.zeros(4000), torch.tensor(rng.random(4000) < 0.2).float())
    labels = torch.stack([colour, group, rare], 1)

    plain, grouped = balanced_weights(labels), balanced_weights(labels, group=1)
    for weights in (plain, grouped):
        assert weights.mean(0).tolist() == pytest.approx([1, 1, 1], abs=1e-4)
        for column in range(3):  # positives and negatives weigh alike over the data
            y = labels[:, column]
            assert float((weights[:, column] * y).sum()) == pytest.approx(
                float((weights[:, column] * (1 - y)).sum()), rel=1e-4)
    for half in (group == 1, group == 0):  # and within each half, where both are common enough
        y, w = colour[half], grouped[half, 0]
        assert float((w * y).sum()) == pytest.approx(float((w * (1 - y)).sum()), rel=1e-4)
    men = (group == 1) & (colour == 1)
    assert grouped[men, 0].mean() > 5 * plain[men, 0].mean()
    torch.testing.assert_close(grouped[:, 1:], plain[:, 1:])  # too rare to balance; the group


# --- a folder of pairs ------------------------------------------------------------------------

def test_suite_pairs_edited_clips_with_originals_by_name(tmp_path: Path):
    for name in ["a.mp4", "a.eyeglasses+1.mp4", "a.smiling-0.5.mp4", "b.v2.mov",
                 "b.v2.young+2.mp4", "c.bald+1.mp4", "d.sharpened+1.mp4", "notes.txt"]:
        (tmp_path / name).touch()
    pairs = {p.edited.name: p for p in find_pairs(tmp_path)}
    assert set(pairs) == {"a.eyeglasses+1.mp4", "a.smiling-0.5.mp4", "b.v2.young+2.mp4",
                          "c.bald+1.mp4"}
    assert (pairs["a.smiling-0.5.mp4"].attr, pairs["a.smiling-0.5.mp4"].scale) == ("Smiling",
                                                                                     -0.5)
    assert pairs["b.v2.young+2.mp4"].original == tmp_path / "b.v2.mov"
    assert pairs["c.bald+1.mp4"].original is None

    only = tmp_path / "only"
    only.mkdir()
    (only / "c.bald+1.mp4").touch()
    rows = evaluate_suite(only)
    assert len(rows) == 1 and "no original c.mp4" in rows[0]["error"]


def test_bad_arguments_are_usage_errors(tmp_path: Path):
    with pytest.raises(UsageError, match="not an image classifier"):
        evaluate_pair(tmp_path / "a.mp4", tmp_path / "b.mp4", "Eyeglasses",
                      image_classifier_dir=tmp_path)
    with pytest.raises(UsageError, match="unknown attribute"):
        evaluate_pair(tmp_path / "a.mp4", tmp_path / "b.mp4", "sunglasses")
    with pytest.raises(UsageError, match="every"):
        sampled(10, 0)


def test_format_table():
    rows = [{"name": "a.eyeglasses+1.mp4", "attr": "Eyeglasses", "scale": 1.0, "frames": 90,
             "identity": 0.93456, "tl_id": 0.99, "tg_id": 0.98, "target_change": 0.41,
             "off_target_change": 0.03, "locality": 0.62},
            {"name": "b.young+2.mp4", "attr": "Young", "scale": 2.0, "frames": 10,
             "identity": 0.9, "tl_id": None, "tg_id": None, "target_change": None,
             "off_target_change": None, "locality": 0.5},
            {"name": "c.bald+1.mp4", "attr": "Bald", "scale": 1.0, "error": "no original"}]
    lines = format_table(rows).splitlines()
    assert len(lines) == 4 and "identity" in lines[0] and "TL-ID" in lines[0]
    assert "0.935" in lines[1] and "+0.410" in lines[1] and "+1" in lines[1]
    assert lines[2].count("-") >= 4  # missing numbers
    assert "error: no original" in lines[3]
    assert len({len(line) for line in lines[:2]}) == 1  # aligned columns


# --- a real clip ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2 s (60 frames) of a real talking head."""
    source = shared_clip(shared_data, FACE_CLIP)
    clip = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run([binaries.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(source),
                    "-t", "2", "-an", "-c:v", "libx264", "-crf", "18", str(clip)], check=True)
    return clip


def test_real_clip_against_itself(real_clip: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch):
    clip = real_clip
    monkeypatch.setenv("S3EDIT_WEIGHTS", str(tmp_path / "no-weights"))  # no default classifier

    result = evaluate_pair(clip, clip, "eyeglasses", every=10)
    assert result["attr"] == "Eyeglasses" and result["region"] == "eyes"
    assert result["frames"] == 60 and result["frames_with_face"] == 6
    assert result["identity"] == pytest.approx(1, abs=1e-4)
    assert result["tl_id"] == pytest.approx(1, abs=1e-4)
    assert result["tg_id"] == pytest.approx(1, abs=1e-4)
    assert result["locality"] is None and result["pixel_change"] == 0  # nothing changed
    assert result["target_change"] is None and result["off_target_change"] is None
    assert result["per_frame"]["frame"] == [0, 10, 20, 30, 40, 50]

    report = write_report(result, clip, clip, tmp_path / "report.html")
    text = report.read_text()
    assert "<polyline" in text and "data:image/png;base64," in text
    assert "No image attribute classifier" in text


def test_eval_of_clips_of_different_lengths_says_what_it_compared(
        real_clip: Path, tmp_path: Path, run_s3edit):
    """Clips of different lengths are not an original and its edit as apply writes them: eval
    still compares the frames they share, and says so on stderr."""
    short = tmp_path / "short.mp4"
    subprocess.run([binaries.ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(real_clip),
                    "-frames:v", "30", "-c:v", "libx264", "-crf", "18", str(short)], check=True)
    proc = run_s3edit("eval", real_clip, short, "--attr", "eyeglasses", "--every", "10",
                      "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["frames"], result["frames_original"], result["frames_edited"]) == (30, 60, 30)
    assert "note:" in proc.stderr and "compared the first 30" in proc.stderr
    same = run_s3edit("eval", real_clip, real_clip, "--attr", "eyeglasses", "--every", "30",
                      "-q")
    assert same.returncode == 0 and "note:" not in same.stderr


def test_real_edit_of_the_eyes(real_clip: Path, tmp_path: Path):
    """A crude 'sunglasses' edit, darkening the eyes region, as the suite finds it in a folder."""
    folder = tmp_path / "suite"
    folder.mkdir()
    original = folder / "clip.mp4"
    shutil.copy(real_clip, original)
    info = probe(original)
    track = track_face(info)
    with VideoWriter(folder / "clip.eyeglasses+1.mp4", info) as writer:
        for t, frame in enumerate(read_frames(info)):
            eyes = region_mask(track.mesh[t], frame.shape[:2], "eyes") > 0
            frame[eyes] //= 4
            writer.write(frame)
    ImageAttributeClassifier().save_pretrained(tmp_path / "clf")  # untrained, for the plumbing

    rows = evaluate_suite(folder, image_classifier_dir=tmp_path / "clf", every=10)
    assert len(rows) == 1 and "error" not in rows[0]
    row = rows[0]
    assert (row["name"], row["attr"], row["scale"]) == ("clip.eyeglasses+1.mp4", "Eyeglasses", 1)
    assert row["locality"] > 0.9
    assert 0.5 < row["identity"] < 0.99  # dark eyes change the embedding, not the person
    assert row["tl_id"] == pytest.approx(1, abs=0.05)
    assert row["target_change"] is not None and row["off_target_change"] is not None
    assert len(row["per_frame"]["target_edited"]) == 6
    changes = row["attribute_changes"]
    assert len(changes) == 40 and changes["Eyeglasses"] == pytest.approx(row["target_change"],
                                                                          abs=1e-3)
    others = [abs(c) for a, c in changes.items() if a != "Eyeglasses"]
    assert np.mean(others) <= row["off_target_change"] + 1e-3  # |mean| <= mean |.|
    assert "clip.eyeglasses+1.mp4" in format_table(rows)
    report = write_report(row, original, folder / "clip.eyeglasses+1.mp4", tmp_path / "r.html")
    assert "Other attributes that moved most" in report.read_text()
