"""The `s3edit apply` command run for real, as a subprocess: exit codes, what it prints on
stdout and stderr, and the files it leaves behind, for bad inputs and for awkward good ones.

Most runs use --no-model (track, align, paste back unchanged) on clips of 1 s or less cut from
the shared real clips, so the whole file runs in about two minutes on two cores.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import FACE_CLIP, LONG_CLIP, PCAVS_CLIP, PROFILE_CLIP, ffmpeg, psnr

from s3edit.video import binaries, probe, read_frames

# `plain` progress lines: "tracking face: 25 frames ..." / "tracking face: 25 frames in 1.2 s".
PROGRESS = re.compile(r"^[a-z][a-z ]*: \d+ frames (\.\.\.|in \d+(\.\d+)? s)$")
# What mediapipe's C++ side (TF Lite, absl) writes straight to file descriptor 2.
NATIVE_LOG = re.compile(
    r"^(INFO: Created TensorFlow Lite|WARNING: All log messages before absl"
    r"|[IWEF]\d{4} \d\d:\d\d:\d\d)"
)




def listing(folder: Path) -> list[str]:
    """Every entry of `folder`, hidden ones (the writer's .partial files) included."""
    return sorted(p.name for p in folder.iterdir())


def message_lines(stderr: str) -> list[str]:
    """stderr lines that are neither progress nor mediapipe's native logging."""
    return [line for line in stderr.splitlines()
            if line.strip() and not PROGRESS.match(line) and not NATIVE_LOG.match(line)]


def squash(text: str) -> str:
    """Without any whitespace, so a message wrapped over lines still matches."""
    return re.sub(r"\s+", "", text)


def error_message(proc: subprocess.CompletedProcess[str], *needles: object) -> str:
    """The error the CLI reported (checked to be a clean 'error: ...' message, no traceback)
    and that it mentions every needle."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = message_lines(proc.stderr)
    assert lines, f"nothing on stderr (exit {proc.returncode})"
    assert lines[0].startswith("error: "), proc.stderr
    assert all(not line.startswith("error: ") for line in lines[1:]), proc.stderr
    message = " ".join(lines)
    for needle in needles:
        assert squash(str(needle)) in squash(message), (needle, message)
    return message


def apply_args(src: object, *extra: object, attr: str = "eyeglasses") -> list[object]:
    return ["apply", src, "--attr", attr, "--scale", "0", "--no-model", *extra]


def assert_same_timing_and_size(src: Path, dst: Path) -> None:
    """`dst` plays like `src`: same display size, frame count and fps, and stored upright."""
    a, b = probe(src), probe(dst)
    assert (b.display_width, b.display_height) == (a.display_width, a.display_height)
    assert b.frame_count == a.frame_count
    assert b.fps == a.fps
    assert b.rotation == 0 and (b.width, b.height) == (a.display_width, a.display_height)




# --- Inputs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def junk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files that are not videos, made without the shared data."""
    d = tmp_path_factory.mktemp("junk")
    j = {"text": d / "notes.mp4", "empty": d / "empty.mp4", "png": d / "still.png",
         "noface": d / "test pattern.mp4"}
    j["text"].write_text("these are my notes, not a video\n" * 20)
    j["empty"].write_bytes(b"")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", j["png"])
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "2",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", j["noface"])
    return j


def first_frame(path: Path) -> np.ndarray:
    """The first frame as a plain ffmpeg decodes it (rotation applied), RGB."""
    raw = subprocess.run([binaries.ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8)


def make_rotated(upright: Path, transposed: Path, rotated: Path) -> bool:
    """Tag `transposed` (`upright` turned a quarter turn anticlockwise) so that players turn it
    back; True once ffmpeg shows it upright. The spelling depends on the ffmpeg version."""
    ways = [("-display_rotation", "-90", "-i", transposed, "-c", "copy"),  # ffmpeg >= 6
            ("-i", transposed, "-c", "copy", "-metadata:s:v:0", "rotate=270"),  # 5.x
            ("-i", transposed, "-c", "copy", "-metadata:s:v:0", "rotate=90")]
    reference = first_frame(upright)
    for args in ways:
        try:
            ffmpeg(*args, rotated)
        except subprocess.CalledProcessError:
            continue
        shown = first_frame(rotated)
        if shown.shape == reference.shape and psnr(shown, reference) > 30:
            return True
    return False


@pytest.fixture(scope="module")
def clips(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short clips of real faces cut from the shared data (1 s or less, 450 px or less)."""
    videos = shared_data / "videos"
    face, pcavs = videos.joinpath(*FACE_CLIP), videos.joinpath(*PCAVS_CLIP)
    for path in (face, pcavs):
        if not path.is_file():
            pytest.skip(f"shared clip {path} not found")
    d = tmp_path_factory.mktemp("clips")
    c = {name: d / f"{name}.mp4" for name in
         ("short", "short2", "one_frame", "odd", "upright", "transposed", "rotated",
          "two_faces", "faststart", "truncated", "truncated_faststart")}
    x264 = ("-c:v", "libx264", "-crf", "18")
    # 25 frames, 224x224, with audio.
    ffmpeg("-i", pcavs, "-t", "1", *x264, "-pix_fmt", "yuv420p", "-c:a", "aac", c["short"])
    # 25 frames, 192x192, no audio; the face of 1.mp4 sits around (388, 255).
    ffmpeg("-i", face, "-t", "1", "-vf", "crop=420:420:178:45,scale=192:192", "-r", "25",
           *x264, "-pix_fmt", "yuv420p", "-an", c["short2"])
    ffmpeg("-i", face, "-frames:v", "1", *x264, "-pix_fmt", "yuv420p", "-an", c["one_frame"])
    # 15 frames of 401x301 (H.264 stores odd sizes in 4:4:4 only; crop in 4:4:4 so that the
    # crop filter does not round to even).
    ffmpeg("-i", face, "-t", "0.5", "-vf", "format=yuv444p,crop=401:301:188:105", "-r", "30",
           *x264, "-pix_fmt", "yuv444p", "-an", c["odd"])
    # A phone-style clip: 256x192 stored as 192x256, with the turn in the metadata.
    ffmpeg("-i", face, "-t", "1", "-vf", "crop=560:420:108:45,scale=256:192", "-r", "25",
           *x264, "-pix_fmt", "yuv420p", "-an", c["upright"])
    ffmpeg("-i", c["upright"], "-vf", "transpose=2", *x264, "-pix_fmt", "yuv420p",
           c["transposed"])
    if not make_rotated(c["upright"], c["transposed"], c["rotated"]):
        del c["rotated"]
    # The same face twice, side by side: 448x224.
    ffmpeg("-i", c["short"], "-filter_complex", "[0:v][0:v]hstack=inputs=2", *x264,
           "-pix_fmt", "yuv420p", "-an", c["two_faces"])
    # The first half of the bytes: 1.mp4 keeps its index at the end (lost), a faststart copy
    # at the front (kept, so the damage shows only while decoding).
    ffmpeg("-i", c["short"], "-c", "copy", "-movflags", "+faststart", c["faststart"])
    for name, whole in (("truncated", face), ("truncated_faststart", c["faststart"])):
        data = whole.read_bytes()
        c[name].write_bytes(data[: len(data) // 2])
    return c


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty output folder."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# --- Bad inputs: one clear error, the right exit code, nothing left behind --------------------
#
# The unreadable files go through one run (each CLI start costs several seconds of imports):
# each gets its own error line and JSON record, and the batch exits 1.


@pytest.fixture(scope="module")
def bad_run(request: pytest.FixtureRequest, run_s3edit, junk: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory):
    inputs = {name: junk[name] for name in ("text", "empty", "png")}
    try:
        clips = request.getfixturevalue("clips")
        inputs |= {name: clips[name] for name in ("truncated", "truncated_faststart")}
    except pytest.skip.Exception:
        pass  # no shared data: the truncated cases skip
    folder = tmp_path_factory.mktemp("bad_out")
    proc = run_s3edit("apply", *inputs.values(), "--out-dir", folder, "--attr", "eyeglasses",
                      "--scale", "0", "--no-model", "--json", "-q")
    return proc, inputs, folder


@pytest.mark.parametrize(
    ("name", "phrase"),
    [("text", "not a"), ("empty", "empty"), ("png", "still image"),
     ("truncated", "moov atom not found"), ("truncated_faststart", "decoding failed")],
)
def test_unreadable_input_fails_cleanly(bad_run, name: str, phrase: str) -> None:
    proc, inputs, folder = bad_run
    if name not in inputs:
        pytest.skip("needs the shared data")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = message_lines(proc.stderr)
    assert len(lines) == len(inputs), proc.stderr  # one line per input, nothing else
    assert all(line.startswith("error: ") for line in lines), proc.stderr
    src = inputs[name]
    mine = [line for line in lines if str(src) in line]
    assert len(mine) == 1 and phrase in mine[0], lines
    records = {r["input"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert records[str(src)]["status"] == "error" and records[str(src)]["exit_code"] == 1
    assert src.name in records[str(src)]["error"]
    assert listing(folder) == []


@pytest.fixture(scope="module")
def no_face_run(run_s3edit, junk: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("noface_out")
    proc = run_s3edit(*apply_args(junk["noface"], "-o", folder / "edited.mp4", "-q", "--json"))
    return proc, folder


def test_video_without_a_face_exits_3(no_face_run) -> None:
    proc, folder = no_face_run
    assert proc.returncode == 3
    assert "no face" in error_message(proc)
    assert json.loads(proc.stdout)["exit_code"] == 3
    assert listing(folder) == []


def test_video_without_a_face_prints_only_the_error(no_face_run) -> None:
    proc, _ = no_face_run
    assert [line for line in proc.stderr.splitlines() if line.strip()] \
        == message_lines(proc.stderr)


def test_missing_input_is_a_usage_error(run_s3edit, tmp_path: Path, out: Path) -> None:
    src = tmp_path / "not here.mp4"
    proc = run_s3edit(*apply_args(src, "-o", out / "edited.mp4"))
    assert proc.returncode == 2
    error_message(proc, "not here.mp4", "no such file")
    assert proc.stdout == ""
    assert listing(out) == []


def test_unknown_attribute_lists_the_valid_names(run_s3edit, junk: dict[str, Path],
                                                 out: Path) -> None:
    proc = run_s3edit(*apply_args(junk["noface"], "-o", out / "edited.mp4", attr="eyeglass"))
    assert proc.returncode == 2
    error_message(proc, "eyeglass", "Eyeglasses", "Smiling", "Wearing_Hat")
    assert listing(out) == []


def test_an_output_name_no_container_takes_is_refused_before_any_work(
        run_s3edit, junk: dict[str, Path], out: Path) -> None:
    """`-o edited.txt` (apply) and `-o preview.mp4` (preview, a picture) fail at once, saying
    which endings work, instead of after tracking and editing every frame."""
    proc = run_s3edit(*apply_args(junk["noface"], "-o", out / "edited.txt"))
    assert proc.returncode == 2 and "tracking" not in proc.stderr
    error_message(proc, "edited.txt", ".mp4", ".webm")
    proc = run_s3edit("preview", junk["noface"], "--attr", "eyeglasses", "--no-model",
                      "-o", out / "preview.mp4")
    assert proc.returncode == 2
    error_message(proc, "preview.mp4", ".png", ".jpg")
    assert listing(out) == []


@pytest.mark.parametrize("how", ["-o", "--out-dir"])
def test_missing_output_folder(run_s3edit, junk: dict[str, Path], tmp_path: Path,
                               how: str) -> None:
    missing = tmp_path / "no such folder"
    target = missing / "edited.mp4" if how == "-o" else missing
    proc = run_s3edit(*apply_args(junk["noface"], how, target))
    assert proc.returncode == 1
    error_message(proc, "output folder", missing, "does not exist")
    assert not missing.exists()
    assert listing(tmp_path) == []


@pytest.mark.parametrize("case", ["missing output folder", "unknown attribute"])
def test_long_error_stays_on_one_line(run_s3edit, junk: dict[str, Path], tmp_path: Path,
                                      case: str) -> None:
    # stderr is not a terminal here, so rich would wrap at 80 columns unless told not to.
    if case == "missing output folder":
        target = tmp_path / ("a folder whose name is long enough to pass eighty columns " * 2)
        proc = run_s3edit(*apply_args(junk["noface"], "-o", target / "edited.mp4"))
    else:
        proc = run_s3edit(*apply_args(junk["noface"], "-o", tmp_path / "x.mp4",
                                      attr="glasses"))
    assert proc.returncode in (1, 2)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and len(lines[0]) > 100, lines


def test_output_option_takes_one_input(run_s3edit, junk: dict[str, Path], out: Path) -> None:
    proc = run_s3edit(*apply_args(junk["noface"], junk["text"], "-o", out / "edited.mp4"))
    assert proc.returncode == 2
    error_message(proc, "-o takes one input", "--out-dir")
    assert listing(out) == []


def test_an_output_is_required(run_s3edit, junk: dict[str, Path], out: Path) -> None:
    proc = run_s3edit(*apply_args(junk["noface"]))
    assert proc.returncode == 2
    error_message(proc, "-o", "--out-dir")
    assert listing(out) == []


# --- --overwrite, on a one-frame video --------------------------------------------------------


@pytest.fixture(scope="module")
def overwrite_run(run_s3edit, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """A run refused because the output exists, then the same run with --overwrite."""
    folder = tmp_path_factory.mktemp("overwrite")
    dst = folder / "edited.mp4"
    dst.write_bytes(b"an older result")
    refused = run_s3edit(*apply_args(clips["one_frame"], "-o", dst, "--json"))
    kept = dst.read_bytes()
    listed = listing(folder)
    replaced = run_s3edit(*apply_args(clips["one_frame"], "-o", dst, "--json", "--overwrite"))
    return refused, kept, listed, replaced, dst


def test_existing_output_needs_overwrite(overwrite_run, clips: dict[str, Path]) -> None:
    refused, kept, listed, replaced, dst = overwrite_run
    assert refused.returncode == 1
    error_message(refused, dst, "exists", "--overwrite")
    assert kept == b"an older result" and listed == ["edited.mp4"]

    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["status"] == "ok"
    assert_same_timing_and_size(clips["one_frame"], dst)
    assert listing(dst.parent) == ["edited.mp4"]


def test_one_frame_video(overwrite_run, clips: dict[str, Path]) -> None:
    *_, replaced, dst = overwrite_run
    assert probe(clips["one_frame"]).frame_count == 1
    assert replaced.returncode == 0, replaced.stderr
    record = json.loads(replaced.stdout)
    assert (record["frames"], record["frames_with_face"]) == (1, 1)
    assert_same_timing_and_size(clips["one_frame"], dst)


# --- Dry run, --out-dir, help -------------------------------------------------------------------


def test_dry_run_json_writes_nothing(run_s3edit, clips: dict[str, Path], tmp_path: Path,
                                     out: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clips["short"], folder / "a.mp4")
    shutil.copy(clips["short2"], folder / "b clip.mp4")
    (folder / "notes.txt").write_text("not a video")
    (out / "a.smiling-0.5.mp4").write_bytes(b"done before")
    proc = run_s3edit("apply", folder, "--out-dir", out, "--attr", "smiling",
                      "--scale", "-0.5", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records == [
        {"input": str(folder / "a.mp4"), "output": str(out / "a.smiling-0.5.mp4"),
         "attr": "Smiling", "scale": -0.5, "status": "would skip (exists)"},
        {"input": str(folder / "b clip.mp4"), "output": str(out / "b clip.smiling-0.5.mp4"),
         "attr": "Smiling", "scale": -0.5, "status": "would write"},
    ]
    assert listing(out) == ["a.smiling-0.5.mp4"]
    assert (out / "a.smiling-0.5.mp4").read_bytes() == b"done before"

    proc = run_s3edit(*apply_args(folder / "a.mp4", "-o", out / "one.mp4", "--dry-run",
                                  "--json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "input": str(folder / "a.mp4"), "output": str(out / "one.mp4"), "attr": "Eyeglasses",
        "scale": 0.0, "status": "would write"}
    assert listing(out) == ["a.smiling-0.5.mp4"]


def test_dry_run_checks_the_inputs(run_s3edit, junk: dict[str, Path], out: Path) -> None:
    proc = run_s3edit(*apply_args(junk["text"], "-o", out / "edited.mp4", "--dry-run"))
    assert proc.returncode == 1
    error_message(proc, junk["text"].name)
    assert listing(out) == []


def test_out_dir_refuses_two_inputs_with_one_output_name(run_s3edit, clips: dict[str, Path],
                                                         tmp_path: Path, out: Path) -> None:
    for sub in ("day 1", "day 2"):
        (tmp_path / sub).mkdir()
        shutil.copy(clips["short"], tmp_path / sub / "clip.mp4")
    proc = run_s3edit(*apply_args(tmp_path / "day 1" / "clip.mp4", tmp_path / "day 2" / "clip.mp4",
                                  "--out-dir", out, "--dry-run", "--json"))
    assert proc.returncode == 2
    error_message(proc, "clip.eyeglasses+0.mp4")
    assert listing(out) == []


def test_folder_without_videos_is_a_usage_error(run_s3edit, tmp_path: Path, out: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a video")
    proc = run_s3edit(*apply_args(folder, "--out-dir", out))
    assert proc.returncode == 2
    error_message(proc, "no video files")
    assert listing(out) == []


def test_help(s3edit_env: dict[str, str]) -> None:
    script = Path(sys.executable).with_name("s3edit")
    commands = [[sys.executable, "-m", "s3edit", "--help"],
                [sys.executable, "-m", "s3edit", "apply", "--help"]]
    if script.exists():
        commands += [[str(script), "--help"], [str(script), "apply", "--help"]]
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=s3edit_env, timeout=60)
        assert proc.returncode == 0, (cmd, proc.stderr)
        assert "Traceback" not in proc.stderr
        if cmd[-2] == "apply":
            assert all(opt in proc.stdout for opt in ("--attr", "--out-dir", "--no-model"))
        else:
            assert "apply" in proc.stdout and "Edit face attributes" in proc.stdout


def test_help_lists_guidance_and_the_training_options(s3edit_env: dict[str, str]) -> None:
    """Every option is named in full, and no line is cut, in a terminal 80 columns wide (rich's
    help tables cut long option names there: "--keyframe-eve…")."""
    env = dict(s3edit_env, COLUMNS="80")

    def help_of(*command: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "s3edit", *command, "--help"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "…" not in proc.stdout and max(map(len, proc.stdout.splitlines())) <= 80
        return proc.stdout

    for command in ("apply", "preview"):
        text = help_of(command)
        assert all(option in text for option in ("--guidance", "--eta", "--seed")), command
    apply_help = help_of("apply")
    assert "--keyframe-every" in apply_help and "--encoder" in apply_help
    text = help_of("train", "autoencoder")
    for option in ("--attributes", "--no-attributes", "--oversample", "--oversample-share",
                   "--bf16", "--fp32", "--max-minutes", "--clear-eyeglasses", "--any-eyeglasses"):
        assert option in text, option


def test_training_with_attributes_needs_labels(run_s3edit, tmp_path: Path) -> None:
    """`train autoencoder` reads the attributes by default: a folder of faces without the
    CelebA annotation file is refused, saying why, before any preprocessing."""
    import cv2
    from helpers import smooth_image

    data = tmp_path / "faces"
    data.mkdir()
    cv2.imwrite(str(data / "0.jpg"), smooth_image(64, 64))
    proc = run_s3edit("train", "autoencoder", "--data", data, "--out", tmp_path / "run",
                      "--steps", "1", "--device", "cpu")
    assert proc.returncode == 2
    error_message(proc, "attribute labels")
    proc = run_s3edit("train", "autoencoder", "--data", data, "--out", tmp_path / "run",
                      "--oversample", "blond_hair+spectacles", "--device", "cpu")
    assert proc.returncode == 2
    error_message(proc, "unknown attribute 'spectacles'")
    assert not (tmp_path / "run").exists()


def test_editor_without_self_training_refuses_unlabelled_clips(run_s3edit, shared_data: Path,
                                                                 tmp_path: Path) -> None:
    """Without pseudo-edits the S3Editor transforms learn the labelled edits alone, so video
    codes (no labels) are refused up front, before any classifier is trained."""
    proc = run_s3edit("train", "editor", "--editor", "s3", "--no-self-training",
                      "--data", shared_data / "CelebAMask-HQ-128",
                      "--data", shared_data / "videos" / "liveportrait" / "driving",
                      "--out", tmp_path / "run")
    assert proc.returncode == 2
    error_message(proc, "no labels")
    assert not (tmp_path / "run").exists()


def test_over_editing_on_decoded_faces_needs_region_groups_of_clip_codes(
        run_s3edit, shared_data: Path, tmp_path: Path) -> None:
    """Ranking groups on decoded faces needs region groups and codes the decoder reads:
    refused up front, before any classifier is trained."""
    data = shared_data / "CelebAMask-HQ-128"
    for extra in ([], ["--sparse-groups", "regions"]):
        proc = run_s3edit("train", "editor", "--editor", "s3", "--over-editing", "decoded",
                          *extra, "--data", data, "--out", tmp_path / "run")
        assert proc.returncode == 2
        error_message(proc, "needs --editor s3 --sparse-groups regions and --attribute-encoder")
    assert not (tmp_path / "run").exists()


# --- Inputs that must work ----------------------------------------------------------------------
#
# One --out-dir run over a folder (with spaces and accents in its name) of awkward clips: one
# CLI start instead of five. Each test then checks its own clip's output and JSON record.

GOOD = {"clip été.mp4": "short", "b clip.mp4": "short2", "odd.mp4": "odd",
        "rotated.mp4": "rotated", "two faces.mp4": "two_faces"}


@pytest.fixture(scope="module")
def good_run(run_s3edit, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("good")
    folder, out = base / "mes vidéos", base / "sorties été"
    folder.mkdir()
    out.mkdir()
    for name, clip in GOOD.items():
        if clip in clips:
            shutil.copy(clips[clip], folder / name)
    proc = run_s3edit(*apply_args(folder, "--out-dir", out, "--json"))
    records = {Path(r["input"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
    return proc, folder, out, records


def check_good(good_run, name: str) -> tuple[Path, Path, dict]:
    """The input, output and record of clip `name` of the batch, checked as a success."""
    proc, folder, out, records = good_run
    if not (folder / name).exists():
        pytest.skip("this ffmpeg cannot write rotation metadata")
    assert "Traceback" not in proc.stderr
    record = records[name]
    assert record["status"] == "ok", record
    src, dst = folder / name, out / f"{Path(name).stem}.eyeglasses+0.mp4"
    assert record["input"] == str(src) and record["output"] == str(dst)
    assert record["frames"] == probe(src).frame_count
    assert record["attr"] == "Eyeglasses" and record["scale"] == 0
    assert_same_timing_and_size(src, dst)
    return src, dst, record


def test_out_dir_writes_each_clip_then_skips_them(run_s3edit, good_run) -> None:
    proc, folder, out, records = good_run
    assert proc.returncode == 0, proc.stderr
    inputs = listing(folder)
    names = sorted(f"{Path(n).stem}.eyeglasses+0.mp4" for n in inputs)
    assert listing(out) == names  # no .partial file left
    assert sorted(records) == inputs
    assert all(r["status"] == "ok" for r in records.values())
    assert all(not r["in_profile"] for r in records.values())  # they all face the camera
    written = {n: (out / n).read_bytes() for n in names}

    again = run_s3edit(*apply_args(folder, "--out-dir", out, "--json", "-q"))
    assert again.returncode == 0, again.stderr
    skipped = [json.loads(line) for line in again.stdout.splitlines()]
    assert [r["status"] for r in skipped] == ["skipped (exists)"] * len(inputs)
    assert {n: (out / n).read_bytes() for n in names} == written


def test_path_with_spaces_and_accents(good_run) -> None:
    src, dst, record = check_good(good_run, "clip été.mp4")
    assert record["frames_with_face"] == record["frames"] == 25
    assert dst.name == "clip été.eyeglasses+0.mp4"


def test_odd_width_and_height(good_run) -> None:
    src, dst, record = check_good(good_run, "odd.mp4")
    assert (probe(src).width, probe(src).height) == (401, 301)
    assert record["frames_with_face"] == record["frames"] == 15


def test_rotated_phone_video_comes_out_upright(good_run, clips: dict[str, Path]) -> None:
    src, dst, record = check_good(good_run, "rotated.mp4")
    info = probe(src)
    assert info.rotation in (90, 270) and (info.width, info.height) == (192, 256)
    assert (info.display_width, info.display_height) == (256, 192)
    assert record["frames_with_face"] == record["frames"]
    # Same picture as the clip it was made from: upright, not merely the right size.
    edited = list(read_frames(probe(dst)))
    upright = list(read_frames(probe(clips["upright"])))
    assert min(psnr(a, b) for a, b in zip(edited, upright, strict=True)) > 30


def test_two_faces(run_s3edit, good_run, clips: dict[str, Path], out: Path) -> None:
    src, _, record = check_good(good_run, "two faces.mp4")
    assert record["frames_with_face"] == record["frames"]

    dst = out / "right.mp4"
    proc = run_s3edit(*apply_args(src, "-o", dst, "--json", "-q", "--face-index", "1"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["frames_with_face"] == record["frames"]
    assert_same_timing_and_size(src, dst)

    proc = run_s3edit(*apply_args(src, "-o", out / "none.mp4", "-q", "--face-index", "5"))
    assert proc.returncode == 1
    error_message(proc, "face index 5", "2 face(s) found")
    assert listing(out) == ["right.mp4"]


# --- Ctrl-C ---------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_exits_130_and_leaves_nothing(shared_data: Path, out: Path,
                                            s3edit_env: dict[str, str]) -> None:
    src = (shared_data / "videos").joinpath(*LONG_CLIP)
    if not src.is_file():
        pytest.skip(f"shared clip {src} not found")
    # A background child of a non-interactive shell may inherit SIGINT ignored; Python then
    # never raises KeyboardInterrupt. Give the CLI the default disposition, as a terminal would.
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3edit", *map(str, apply_args(src, "-o", out / "long.mp4"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=s3edit_env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        while not any(".partial" in name for name in listing(out)):
            assert proc.poll() is None, f"finished before writing: {proc.communicate()}"
            assert time.monotonic() < deadline, "no .partial file after 90 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert message_lines(stderr)[-1] == "interrupted"
    assert listing(out) == []


def test_a_face_in_profile_is_told(run_s3edit, shared_data: Path, tmp_path: Path,
                                   out: Path) -> None:
    """pcavs 00002 is seen in profile (median turn 1.65), where edits hardly show: the run
    succeeds and says so on stderr, and its record says so to scripts."""
    profile = (shared_data / "videos").joinpath(*PROFILE_CLIP)
    if not profile.is_file():
        pytest.skip(f"shared clip {profile} not found")
    src = tmp_path / "profile.mp4"
    ffmpeg("-i", profile, "-t", "1", "-c:v", "libx264", "-crf", "18", "-an", src)
    proc = run_s3edit(*apply_args(src, "-o", out / "a.mp4"))
    assert proc.returncode == 0, proc.stderr
    assert "the face is seen in profile" in proc.stderr
    record = json.loads(run_s3edit(*apply_args(src, "-o", out / "b.mp4", "--json", "-q")).stdout)
    assert record["in_profile"] and record["head_turn"] > 1.3


def test_plain_progress_says_a_stage_ended_once():
    """apply's last flush of a clip can advance by 0 frames after the last keyframe's batch
    wrote them all; the end line was then printed twice."""
    import io

    from rich.console import Console

    from s3edit.progress import stage_progress

    out = io.StringIO()
    with stage_progress(Console(file=out, force_terminal=False)) as progress:
        advance = progress("editing frames", 4)
        for n in (3, 1, 0):
            advance(n)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(PROGRESS.match(line) for line in lines), lines
    assert lines[1].startswith("editing frames: 4 frames in ")
