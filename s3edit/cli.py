"""The `s3edit` command line: options in, a Pipeline run, results out.

Results go to stdout (one line, or one JSON object, per input); progress and errors go to
stderr. Exit codes: 0 ok, 1 failure, 2 usage, 3 no face in the video, 130 interrupted.

The commands import the library (torch, diffusers, mediapipe) inside their bodies, not here:
that keeps `s3edit --help` and usage errors at about 0.2 s instead of several seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from s3edit.cli_shared import Device, EditorName, fail, launched_process, stderr
from s3edit.errors import S3EditError, UsageError
from s3edit.options import (
    BLENDS,
    DEFAULT_EDITOR,
    DEFAULT_ETA,
    DEFAULT_GUIDANCE,
    DEFAULT_PRECISION,
    DEFAULT_REFINE,
    DEFAULT_STEPS,
    HAIR_NOISES,
    LANDMARKS,
    LENSES,
    MASKS,
    PRECISIONS,
    EditOptions,
)
from s3edit.progress import stage_progress
from s3edit.train.cli import train_app
from s3edit.video import VIDEO_SUFFIXES, check_video_name

app = typer.Typer(
    help="Edit face attributes in videos (add eyeglasses, a smile, age...) while keeping "
         "identity, motion and the rest of the frame.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    rich_markup_mode=None,
)
samples_app = typer.Typer(help="Public sample clips: list them, fetch one into the cache.",
                          no_args_is_help=True)
app.add_typer(samples_app, name="samples")
app.add_typer(train_app, name="train")

REFINE_HELP = ("Fixed-point iterations per inversion step: each costs one network pass a step "
               "and brings the reconstruction closer to exact (0: plain DDIM inversion).")
GUIDANCE_HELP = ("Edit guidance: each decoding step moves this many times as far as the edited "
                 "code asks from where the unedited code goes (1: none; above 1 costs a second "
                 "network pass a step). auto: 2 on a face turned aside (three-quarter view), "
                 "where the decoder draws only part of an edit; 1 facing the camera or in "
                 "profile. Putting eyeglasses on (not in profile), auto decodes the first "
                 "keyframes without guidance and gives the clip what makes up a weak edit "
                 "(1-2).")

ETA_HELP = ("Fresh noise in each decoding step (DDIM's eta: 0 deterministic, 1 DDPM), the "
            "same draws for every frame and for the unedited reconstruction the edit is "
            "measured against: the decoder then draws an edit's fine structure, such as "
            "spectacle frames, instead of its average shading. Above 0 costs one more "
            "decode a keyframe.")
SEED_HELP = "Seed of the decoding noise (--eta): another seed draws, say, other frames."

PRECISION_HELP = ("The UNet's arithmetic: auto is bf16 where the hardware has it (1.5x faster "
                  "on a CPU with AVX512-BF16 or AMX, within 2% of fp32), fp32 the full "
                  "computation.")
Blend = Enum("Blend", {name.replace("-", "_"): name for name in BLENDS}, type=str)
Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)
Landmarks = Enum("Landmarks", {name: name for name in LANDMARKS}, type=str)
Mask = Enum("Mask", {name: name for name in MASKS}, type=str)
HairNoise = Enum("HairNoise", {name: name for name in HAIR_NOISES}, type=str)
Lenses = Enum("Lenses", {name: name for name in LENSES}, type=str)
DEFAULT_PRECISION_CHOICE = Precision(DEFAULT_PRECISION)
DEFAULTS = EditOptions("Eyeglasses")  # apply's defaults are the library's
DEFAULT_BLEND = Blend(BLENDS[0])  # "auto": EditOptions resolves it for the scale
DEFAULT_EDITOR_CHOICE = EditorName(DEFAULT_EDITOR)
DEFAULT_LANDMARKS = Landmarks(DEFAULTS.landmarks)
DEFAULT_MASK = Mask(MASKS[0])  # "auto": EditOptions resolves it for the attribute
DEFAULT_HAIR_NOISE = HairNoise(HAIR_NOISES[0])  # "auto": likewise
DEFAULT_LENSES = Lenses(LENSES[0])  # "auto": likewise


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the videos they hold (sorted, not recursive)."""
    found = []
    for path in inputs:
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
        elif path.exists():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    if not found:
        raise UsageError("no video files among the inputs")
    return found


def output_name(input_path: Path, attr: str, scale: float) -> str:
    return f"{input_path.stem}.{attr.lower()}{scale:+g}.mp4"


def plan_outputs(inputs: list[Path], output: Path | None, out_dir: Path | None, attr: str,
                 scale: float) -> list[tuple[Path, Path]]:
    if (output is None) == (out_dir is None):
        raise UsageError("give either -o OUT (one input) or --out-dir DIR")
    if output is not None:
        if len(inputs) != 1:
            raise UsageError(f"-o takes one input, got {len(inputs)}; use --out-dir for several")
        if not output.parent.is_dir():
            raise S3EditError(f"output folder {output.parent} does not exist")
        check_video_name(output)
        return [(inputs[0], output)]
    if not out_dir.is_dir():
        raise S3EditError(f"output folder {out_dir} does not exist")
    jobs = [(path, out_dir / output_name(path, attr, scale)) for path in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in jobs:
        if dst in seen:
            raise UsageError(f"{seen[dst]} and {src} would both be written to {dst}; "
                             "edit them in separate runs or rename one")
        seen[dst] = src
    return jobs


@app.command()
def apply(
    inputs: Annotated[list[Path], typer.Argument(help="Video files or folders of videos.",
                                                 show_default=False)],
    attr: Annotated[str, typer.Option("--attr", "-a", help="CelebA attribute to edit, e.g. "
                                      "eyeglasses, smiling, young, blond_hair.")],
    scale: Annotated[float, typer.Option("--scale", "-s", help="Edit strength; negative "
                                         "removes the attribute, 0 reconstructs. Expressions "
                                         "(smiling, mouth_slightly_open, high_cheekbones, "
                                         "narrow_eyes) move the landmarks: 1 is the average "
                                         "difference between faces with and without. With the "
                                         "default weights eyeglasses and hair colour show at "
                                         "0.5-0.6, an older face (young) at about -1.5; "
                                         "younger hardly shows.")]
    = DEFAULTS.scale,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output video (one "
                                                "input).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Folder for outputs of "
                       "several inputs; existing outputs are skipped.")] = None,
    editor: Annotated[EditorName, typer.Option(help="How the identity code is moved: s3 "
                      "(S3Editor), linear (the attribute direction) or lt (Latent "
                      "Transformer). Not used for expressions, which move the landmarks.")]
    = DEFAULT_EDITOR_CHOICE,
    steps: Annotated[int, typer.Option(min=1, max=1000, help="DDIM steps for inversion and "
                                       "decoding.")] = DEFAULT_STEPS,
    refine: Annotated[int, typer.Option(min=0, max=20, help=REFINE_HELP)] = DEFAULT_REFINE,
    guidance: Annotated[str, typer.Option(metavar="auto|WEIGHT", help=GUIDANCE_HELP)]
    = DEFAULT_GUIDANCE,
    eta: Annotated[float, typer.Option(min=0, max=1, help=ETA_HELP)] = DEFAULT_ETA,
    blend: Annotated[Blend, typer.Option(help="auto: adaptive when removing something worn "
                     "(eyeglasses, a hat...), residual otherwise; residual: add the edit's "
                     "change (edit minus the input crop) onto the original face, keeping its "
                     "detail; "
                     "residual-decoded: the change from the decoded reconstruction instead "
                     "(one more decode a frame); plain: paste the decoded face; adaptive: "
                     "residual, but the decoded face where the edit changes it strongly, so "
                     "that what the edit removes (glasses) does not show through.")]
    = DEFAULT_BLEND,
    face_index: Annotated[int | None, typer.Option(min=0, help="Face to edit, numbered left "
                          "to right on the first frame with faces (default: the largest).")]
    = None,
    keyframe_every: Annotated[int, typer.Option(min=1, help="Run the model on every k-th "
                              "tracked frame (and where the face moves fast) and interpolate "
                              "the edit's change in between; 1 runs it on every frame, the "
                              "full computation.")] = DEFAULTS.keyframe_every,
    batch_size: Annotated[int, typer.Option(min=1, help="Keyframes per model batch.")]
    = DEFAULTS.batch_size,
    landmarks: Annotated[Landmarks, typer.Option(help="Where the 68 landmarks (alignment and "
                         "landmark code) come from: mediapipe's face mesh, or face-alignment's "
                         "FAN fitted to the face mediapipe found (optional package and "
                         "weights: README, Optional face backends).")] = DEFAULT_LANDMARKS,
    mask: Annotated[Mask, typer.Option(help="The paste mask: mesh (the face oval, and a hair "
                    "guess for hair attributes), bisenet (facexlib's face parsing: the "
                    "parsed face, and the real hair for hair attributes; optional package and "
                    "weights), or auto: mesh, but bisenet for hair attributes when its package "
                    "and weights are there.")] = DEFAULT_MASK,
    hair_noise: Annotated[HairNoise, typer.Option(help="The noise map under the hair: inverted "
                          "(the frame's own, which holds its hair colour) or fresh (redrawn "
                          "where the hair is found, so that the edited code decides its "
                          "colour; the paste mask is then the face oval and that hair); "
                          "auto: fresh for hair attributes on a face that mostly faces the "
                          "camera.")] = DEFAULT_HAIR_NOISE,
    lenses: Annotated[Lenses, typer.Option(help="Eyeglasses as the decoder draws them are rims "
                      "plus a dark tint over the eyes, which reads as sunglasses: clear keeps "
                      "the rims and drops the tint (the edit's broad change), decoded keeps "
                      "it; auto: clear when adding eyeglasses.")] = DEFAULT_LENSES,
    device: Annotated[Device, typer.Option(help="Where the model (and FAN, BiSeNet) runs.")]
    = Device.auto,
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)]
    = DEFAULT_PRECISION_CHOICE,
    seed: Annotated[int, typer.Option(help=SEED_HELP)] = 0,
    weights: Annotated[Path | None, typer.Option(help="Weights folder (default: the bundled "
                                                 "weights/, or $S3EDIT_WEIGHTS).")] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Skip the autoencoder: track, "
                        "align and paste back only (checks the face stack).")] = False,
    crf: Annotated[int, typer.Option(min=0, max=51, help="x264/x265 quality (VP9's for "
                                     ".webm), lower is better.")] = DEFAULTS.crf,
    encoder: Annotated[str, typer.Option("--encoder", "--codec", help="ffmpeg video encoder; "
                                         "the default becomes libvpx-vp9 for .webm, which "
                                         "cannot hold H.264.")] = DEFAULTS.encoder,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Drop the audio track.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input on "
                                          "stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks on errors.")]
    = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check inputs and show what "
                                          "would be written, without editing.")] = False,
) -> None:
    """Edit one attribute of the tracked face in each input video.

    Example: s3edit apply in.mp4 -o out.mp4 --attr eyeglasses --scale 0.6
    """
    try:
        options = EditOptions(attr, scale, blend=blend.value, face_index=face_index,
                              batch_size=batch_size, keyframe_every=keyframe_every, crf=crf,
                              encoder=encoder, landmarks=landmarks.value, mask=mask.value,
                              hair_noise=hair_noise.value, lenses=lenses.value,
                              guidance=guidance, audio=not no_audio, overwrite=overwrite)
        if landmarks != DEFAULT_LANDMARKS or mask != DEFAULT_MASK:
            from s3edit.face.backends import check_backends  # imports torch: only when asked

            check_backends(options.landmarks, options.mask)
        jobs = plan_outputs(collect_inputs(inputs), output, out_dir, options.attr, scale)
        if output is not None and output.exists() and not overwrite:
            raise S3EditError(f"{output} exists; use --overwrite to replace it")
    except (S3EditError, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None
    jobs = process_share(jobs, overwrite, quiet)
    quiet = quiet or launched_process()[0] > 0  # one progress display: rank 0's

    from s3edit.video import probe

    # Probing is quick and needs no model: unreadable inputs are reported before any loading.
    runnable, codes, skipped = [], [], 0
    for src, dst in jobs:
        skip = dst.exists() and not overwrite
        try:
            info = probe(src)
        except (S3EditError, KeyboardInterrupt) as error:
            codes.append(fail(error, verbose))
            emit({"input": str(src), "output": str(dst), "status": "error",
                  "error": str(error), "exit_code": codes[-1]}, as_json)
            continue
        if dry_run:
            status = "would skip (exists)" if skip else "would write"
            emit({"input": str(src), "output": str(dst), "attr": options.attr, "scale": scale,
                  "status": status}, as_json)
        elif skip:
            skipped += 1
            emit({"input": str(src), "output": str(dst), "status": "skipped (exists)"}, as_json)
        else:
            runnable.append((info, dst))

    if runnable:
        load = {"editor": editor.value, "steps": steps, "refine": refine, "eta": eta,
                "seed": seed, "device": device.value, "precision": precision.value,
                "no_model": no_model}
        codes += run_jobs(runnable, options, weights, load, seed, as_json, quiet, verbose)
    failed = [c for c in codes if c]
    if launched_process()[1] > 1 and not dry_run:
        batch_summary(codes.count(0), skipped, len(failed), quiet)
    if failed:
        raise typer.Exit(failed[0] if len(jobs) == 1 else 1)


def batch_summary(written: int, skipped: int, failed: int, quiet: bool) -> None:
    """Under torchrun: every process's counts, added up and said once, by rank 0, on stderr.
    A gloo group of its own, opened only now: the edits themselves need none, and gloo
    works beside GPUs."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(minutes=10))
    try:
        counts = torch.tensor([written, skipped, failed])
        dist.all_reduce(counts)
    finally:
        dist.destroy_process_group()
    w, s, f = counts.tolist()
    if not quiet:  # rank 0's (the others are quiet)
        stderr.print(f"{w + s + f} inputs: {w} written, {s} skipped (exist), {f} failed, by "
                     f"{launched_process()[1]} processes", highlight=False)


def process_share(jobs: list[tuple[Path, Path]], overwrite: bool, quiet: bool
                  ) -> list[tuple[Path, Path]]:
    """The jobs of this process when torchrun or accelerate launch started several: every
    WORLD_SIZE-th from RANK. The full plan is the same in every process, so each output has
    one writer and needs no process group; rank 0 says how the batch is shared."""
    rank, world = launched_process()
    if world == 1:
        return jobs
    if rank == 0 and not quiet:
        done = sum(dst.exists() for _, dst in jobs) if not overwrite else 0
        stderr.print(f"{len(jobs)} inputs ({done} done already) shared by {world} processes",
                     highlight=False)
    return jobs[rank::world]


def run_jobs(jobs: list, options: EditOptions, weights: Path | None, load: dict, seed: int,
             as_json: bool, quiet: bool, verbose: bool) -> list[int]:
    """Load the models once and edit each (probed input, output); a failing input does not
    stop the others."""
    import torch

    from s3edit.pipeline import Pipeline

    torch.manual_seed(seed)
    if load["device"] != "cpu" and torch.cuda.is_available() and launched_process()[1] > 1:
        # One GPU a process on a machine of several, as torchrun numbers them.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    try:
        pipeline = Pipeline.from_weights(weights, **load)
        pipeline.check_edit(options)
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None
    codes = []
    for info, dst in jobs:
        try:
            with stage_progress(stderr, not quiet) as pipeline.progress:
                result = pipeline.run(info, dst, options)
            emit(asdict(result), as_json)
            codes.append(0)
        except KeyboardInterrupt as error:
            raise typer.Exit(fail(error, verbose)) from None
        except Exception as error:  # one bad input must not stop a batch
            codes.append(fail(error, verbose))
            emit({"input": str(info.path), "output": str(dst), "status": "error",
                  "error": str(error), "exit_code": codes[-1]}, as_json)
    return codes


def emit(record: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(record))
    elif record["status"] == "error":
        return  # already told on stderr
    elif record["status"] == "ok":
        typer.echo(f"wrote {record['output']} ({record['frames']} frames, "
                   f"{record['frames_with_face']} with a face, {record['seconds']:.1f} s)")
        if record.get("in_profile"):
            typer.echo(f"note: {record['input']}: the face is seen in profile (turn "
                       f"{record['head_turn']:.2f}); the model, trained on faces seen from the "
                       "front, draws little of an edit there", err=True)
    else:
        typer.echo(f"{record['status']}: {record['input']} -> {record['output']}")


@app.command()
def preview(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Video file.")],
    frame: Annotated[int, typer.Option(min=0, help="Frame number (from 0).")] = 0,
    attr: Annotated[str, typer.Option("--attr", "-a", help="CelebA attribute.")] = "Eyeglasses",
    scale: Annotated[float, typer.Option("--scale", "-s", help="Edit strength.")] = 0.5,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")]
    = Path("preview.png"),
    editor: Annotated[EditorName, typer.Option(help="As in apply.")] = DEFAULT_EDITOR_CHOICE,
    steps: Annotated[int, typer.Option(min=1, max=1000)] = DEFAULT_STEPS,
    refine: Annotated[int, typer.Option(min=0, max=20, help=REFINE_HELP)] = DEFAULT_REFINE,
    guidance: Annotated[str, typer.Option(metavar="auto|WEIGHT", help=GUIDANCE_HELP)]
    = DEFAULT_GUIDANCE,
    eta: Annotated[float, typer.Option(min=0, max=1, help=ETA_HELP)] = DEFAULT_ETA,
    seed: Annotated[int, typer.Option(help=SEED_HELP)] = 0,
    device: Annotated[Device, typer.Option()] = Device.auto,
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)]
    = DEFAULT_PRECISION_CHOICE,
    weights: Annotated[Path | None, typer.Option()] = None,
    no_model: Annotated[bool, typer.Option("--no-model")] = False,
    overwrite: Annotated[bool, typer.Option()] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """One frame side by side: the original (face box and landmarks drawn), its reconstruction
    and edit at the model's resolution, and the edited frame as apply writes it.

    Example: s3edit preview in.mp4 --frame 30 --attr smiling --scale 0.8 -o preview.png
    """
    from s3edit.pipeline import Pipeline
    from s3edit.preview import IMAGE_SUFFIXES, render_preview

    try:
        options = EditOptions(attr, scale, guidance=guidance)
        if output.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"{output}: a picture's name must end in one of "
                             f"{', '.join(IMAGE_SUFFIXES)}")
        if output.exists() and not overwrite:
            raise S3EditError(f"{output} exists; use --overwrite to replace it")
        if not output.parent.is_dir():
            raise S3EditError(f"output folder {output.parent} does not exist")
        pipeline = Pipeline.from_weights(weights, editor=editor.value, steps=steps,
                                         refine=refine, eta=eta, seed=seed,
                                         device=device.value, precision=precision.value,
                                         no_model=no_model)
        render_preview(input_path, frame, options, pipeline, output)
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None
    typer.echo(f"wrote {output}")


@app.command()
def info(
    weights: Annotated[Path | None, typer.Option(help="Weights folder to check.")] = None,
) -> None:
    """Versions, compute device, and the weights found with their checksums."""
    import platform

    import torch

    from s3edit import __version__
    from s3edit.video.binaries import ffmpeg_exe, ffprobe_exe
    from s3edit.weights import default_weights_dir, manifest, verify

    versions = {"s3edit": __version__, "python": platform.python_version(),
                "torch": torch.__version__}
    for module in ("diffusers", "mediapipe", "dlib", "cv2", "numpy", "safetensors"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            versions[module] = "not installed"
    for key, value in versions.items():
        typer.echo(f"{key:12s} {value}")
    typer.echo(f"{'ffmpeg':12s} {ffmpeg_exe()}")
    typer.echo(f"{'ffprobe':12s} {ffprobe_exe() or 'not found (probing falls back to ffmpeg)'}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    typer.echo(f"{'cuda':12s} {gpu}; {torch.get_num_threads()} CPU threads")
    folder = weights or default_weights_dir()
    typer.echo(f"{'weights':12s} {folder}")
    listed = manifest(folder).get("files", {})
    if not listed:
        typer.echo("  (no manifest.json: no weights listed)")
    for name, status in verify(folder).items():
        typer.echo(f"  {name}: {status} (sha256 {listed[name]['sha256'][:16]}...)")


@samples_app.command("list")
def samples_list() -> None:
    """The sample clips the manifest names."""
    from s3edit.samples import list_samples

    for sample in list_samples():
        typer.echo(f"{sample.name:28s} {sample.duration:5.1f} s {sample.width}x{sample.height} "
                   f"audio={'yes' if sample.audio else 'no'}  {sample.licence}")


@samples_app.command("fetch")
def samples_fetch(
    name: Annotated[str, typer.Argument(help="Sample name (see `s3edit samples list`).")],
    mirror: Annotated[Path | None, typer.Option(help="Local mirror folder to copy from "
                      "(default $S3EDIT_SAMPLES_DIR); otherwise the clip is downloaded.")]
    = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fetch one sample clip into the cache (checksum verified); prints its path."""
    from s3edit.samples import fetch_sample

    try:
        typer.echo(fetch_sample(name, mirror_dir=mirror))
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


@app.command("eval")
def evaluate(
    original: Annotated[Path | None, typer.Argument(help="Original video.")] = None,
    edited: Annotated[Path | None, typer.Argument(help="Edited video.")] = None,
    attr: Annotated[str | None, typer.Option("--attr", "-a", help="The attribute that was "
                                             "edited.")] = None,
    suite: Annotated[Path | None, typer.Option(help="Folder of NAME.mp4 originals and "
                     "NAME.ATTR+SCALE.mp4 edits (as apply --out-dir writes): one table.")]
    = None,
    every: Annotated[int, typer.Option(min=1, help="Measure every N-th frame.")] = 1,
    classifier: Annotated[Path | None, typer.Option(help="Image attribute classifier folder "
                          "(default: weights/image_classifier).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    face_index: Annotated[int | None, typer.Option(min=0)] = None,
    device: Annotated[Device, typer.Option()] = Device.auto,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Measure an edit: identity preservation, TL-ID/TG-ID, target and off-target attribute
    change (image-space classifier), and locality of the pixel change.

    Example: s3edit eval in.mp4 out.mp4 --attr eyeglasses --report report.html
    """
    from s3edit.edit.attributes import resolve_attribute
    from s3edit.metrics.evaluate import evaluate_pair, evaluate_suite
    from s3edit.metrics.report import format_table, write_report
    from s3edit.weights import resolve_device

    try:
        dev = str(resolve_device(device.value))
        with stage_progress(stderr, not quiet) as hook:
            if suite is not None:
                if original is not None or edited is not None:
                    raise UsageError("give either ORIGINAL EDITED or --suite DIR, not both")
                rows = evaluate_suite(suite, image_classifier_dir=classifier, every=every,
                                      face_index=face_index, device=dev, progress=hook)
                typer.echo(json.dumps(rows) if as_json else format_table(rows))
                return
            if original is None or edited is None or attr is None:
                raise UsageError("give ORIGINAL EDITED --attr A (or --suite DIR)")
            result = evaluate_pair(original, edited, resolve_attribute(attr),
                                   image_classifier_dir=classifier, every=every,
                                   face_index=face_index, device=dev, progress=hook)
        if result["frames_original"] != result["frames_edited"]:  # not an apply pair, likely
            typer.echo(f"note: {original} has {result['frames_original']} frames and {edited} "
                       f"{result['frames_edited']}: compared the first {result['frames']}",
                       err=True)
        if report is not None:
            write_report(result, original, edited, report)
        if as_json:
            typer.echo(json.dumps(result))
        else:
            summary = {k: v for k, v in result.items() if k != "per_frame"}
            typer.echo(format_table([summary]))
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (timeout, docker stop) unwinds like Ctrl-C, so partial outputs are removed.
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("interrupted", style="yellow", highlight=False)
        sys.exit(130)
