"""The `s3edit` command line: options in, a Pipeline run, results out.

Results go to stdout (one line, or one JSON object, per input); progress and errors go to
stderr. Exit codes: 0 ok, 1 failure, 2 usage, 3 no face in the video, 130 interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from s3edit.errors import S3EditError, UsageError
from s3edit.video import VIDEO_SUFFIXES

app = typer.Typer(
    help="Edit face attributes in videos (add eyeglasses, a smile, age...) while keeping "
         "identity, motion and the rest of the frame.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
samples_app = typer.Typer(help="Public sample clips: list them, fetch one into the cache.",
                          no_args_is_help=True)
train_app = typer.Typer(help="Train the autoencoder and the attribute editors.")
app.add_typer(samples_app, name="samples")
app.add_typer(train_app, name="train")

stderr = Console(stderr=True, soft_wrap=True)

# 10 DDIM steps with 3 fixed-point iterations per inversion step: 60 network passes a frame
# (inversion 40, edit 10, reconstruction 10) for a 30+ dB round trip; plain inversion needs
# more than 50 steps for that (weights/manifest.json has the figures).
DEFAULT_STEPS = 10
DEFAULT_REFINE = 3
REFINE_HELP = ("Fixed-point iterations per inversion step: each costs one network pass a step "
               "and brings the reconstruction closer to exact (0: plain DDIM inversion).")
DEFAULT_GUIDANCE = 1.0
GUIDANCE_HELP = ("Edit guidance: each decoding step moves this many times as far as the edited "
                 "code asks from where the unedited code goes (1: none; above 1 costs a second "
                 "network pass a step).")


class Blend(str, Enum):
    residual = "residual"
    residual_decoded = "residual-decoded"
    plain = "plain"


class EditorName(str, Enum):
    linear = "linear"
    lt = "lt"
    s3 = "s3"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class LossWeighting(str, Enum):
    plain = "plain"
    truncated_snr = "truncated-snr"


class Prediction(str, Enum):
    epsilon = "epsilon"
    v = "v_prediction"


def fail(error: BaseException, verbose: bool) -> int:
    """Report an error in one line (with the traceback under -v) and give its exit code."""
    if isinstance(error, KeyboardInterrupt):
        stderr.print("interrupted", style="yellow", highlight=False)
        return 130
    if verbose:
        stderr.print(traceback.format_exc(), highlight=False, markup=False)
    if isinstance(error, S3EditError):
        stderr.print(f"error: {error}", style="red", highlight=False, markup=False)
        return error.exit_code
    stderr.print(f"error: {type(error).__name__}: {error}", style="red", highlight=False,
                 markup=False)
    return 1


@contextmanager
def stage_progress(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A progress hook for the pipeline: rich bars on a terminal, plain lines otherwise."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not enabled:
        yield lambda stage, total: (lambda n: None)
        return
    if not stderr.is_terminal:
        def plain(stage: str, total: int) -> Callable[[int], None]:
            start, done = time.perf_counter(), [0]

            def advance(n: int) -> None:
                done[0] += n
                if done[0] >= total:
                    took = time.perf_counter() - start
                    stderr.print(f"{stage}: {total} frames in {took:.1f} s", highlight=False)
            stderr.print(f"{stage}: {total} frames ...", highlight=False)
            return advance
        yield plain
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=stderr,
                  transient=False) as bar:
        def rich_stage(stage: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(stage, total=total)
            return lambda n: bar.advance(task, n)
        yield rich_stage


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
                                         "difference between faces with and without.")] = 0.5,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output video (one "
                                                "input).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Folder for outputs of "
                       "several inputs; existing outputs are skipped.")] = None,
    editor: Annotated[EditorName, typer.Option(help="How the identity code is moved: s3 "
                      "(S3Editor), linear (the attribute direction) or lt (Latent "
                      "Transformer). Not used for expressions, which move the landmarks.")]
    = EditorName.s3,
    steps: Annotated[int, typer.Option(min=1, max=1000, help="DDIM steps for inversion and "
                                       "decoding.")] = DEFAULT_STEPS,
    refine: Annotated[int, typer.Option(min=0, max=20, help=REFINE_HELP)] = DEFAULT_REFINE,
    guidance: Annotated[float, typer.Option(min=0, max=20, help=GUIDANCE_HELP)]
    = DEFAULT_GUIDANCE,
    blend: Annotated[Blend, typer.Option(help="residual: add the edit's change (edit minus "
                     "the input crop) onto the original face, keeping its detail; "
                     "residual-decoded: the change from the decoded reconstruction instead "
                     "(one more decode a frame); plain: paste the decoded face.")]
    = Blend.residual,
    face_index: Annotated[int | None, typer.Option(min=0, help="Face to edit, numbered left "
                          "to right on the first frame with faces (default: the largest).")]
    = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per model batch.")] = 8,
    device: Annotated[Device, typer.Option(help="Where the model runs.")] = Device.auto,
    seed: Annotated[int, typer.Option(help="Random seed (DDIM itself is deterministic).")] = 0,
    weights: Annotated[Path | None, typer.Option(help="Weights folder (default: the bundled "
                                                 "weights/, or $S3EDIT_WEIGHTS).")] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Skip the autoencoder: track, "
                        "align and paste back only (checks the face stack).")] = False,
    crf: Annotated[int, typer.Option(min=0, max=51, help="x264/x265 quality, lower is "
                                     "better.")] = 18,
    codec: Annotated[str, typer.Option(help="ffmpeg video encoder.")] = "libx264",
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
    from s3edit.edit.attributes import resolve_attribute

    try:
        attr = resolve_attribute(attr)
        jobs = plan_outputs(collect_inputs(inputs), output, out_dir, attr, scale)
        if output is not None and output.exists() and not overwrite:
            raise S3EditError(f"{output} exists; use --overwrite to replace it")
    except (S3EditError, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None

    from s3edit.video import probe

    # Probing is quick and needs no model: unreadable inputs are reported before any loading.
    runnable, codes = [], []
    for src, dst in jobs:
        skip = dst.exists() and not overwrite
        try:
            probe(src)
        except (S3EditError, KeyboardInterrupt) as error:
            codes.append(fail(error, verbose))
            emit({"input": str(src), "output": str(dst), "status": "error",
                  "error": str(error), "exit_code": codes[-1]}, as_json)
            continue
        if dry_run:
            status = "would skip (exists)" if skip else "would write"
            emit({"input": str(src), "output": str(dst), "attr": attr, "scale": scale,
                  "status": status}, as_json)
        elif skip:
            emit({"input": str(src), "output": str(dst), "status": "skipped (exists)"}, as_json)
        else:
            runnable.append((src, dst))

    if runnable:
        codes += run_jobs(runnable, as_json, quiet, verbose, weights=weights, device=device.value,
                          steps=steps, refine=refine, guidance=guidance, no_model=no_model,
                          editor=editor.value, seed=seed,
                          attr=attr, scale=scale, blend=blend.value, face_index=face_index,
                          batch_size=batch_size, crf=crf, codec=codec, audio=not no_audio,
                          overwrite=overwrite)
    failed = [c for c in codes if c]
    if failed:
        raise typer.Exit(failed[0] if len(jobs) == 1 else 1)


def run_jobs(jobs: list[tuple[Path, Path]], as_json: bool, quiet: bool, verbose: bool, *,
             weights: Path | None, device: str, steps: int, refine: int, guidance: float,
             no_model: bool, editor: str, seed: int, **options) -> list[int]:
    """Load the models once and edit each input; a failing input does not stop the others."""
    import torch

    from s3edit.edit.expression import edit_codes
    from s3edit.pipeline import EditOptions, Pipeline

    torch.manual_seed(seed)
    try:
        codec_, editor_, expressions = load_models(weights, device, steps, refine, no_model,
                                                   editor, guidance)
        # Fails fast, saying why, when the edit needs an editor without weights.
        edit_codes(editor_, expressions, torch.zeros(code_dim(codec_)), options["attr"],
                   options["scale"])
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None
    codes = []
    for src, dst in jobs:
        try:
            with stage_progress(not quiet) as hook:
                result = Pipeline(codec_, editor_, EditOptions(**options), progress=hook,
                                  expressions=expressions).run(src, dst)
            emit(asdict(result), as_json)
            codes.append(0)
        except KeyboardInterrupt as error:
            raise typer.Exit(fail(error, verbose)) from None
        except Exception as error:  # one bad input must not stop a batch
            codes.append(fail(error, verbose))
            emit({"input": str(src), "output": str(dst), "status": "error",
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
    else:
        typer.echo(f"{record['status']}: {record['input']} -> {record['output']}")


def load_models(weights: Path | None, device: str, steps: int, refine: int, no_model: bool,
                editor: str, guidance: float = 1.0):
    """The codec, the identity editor and the expression directions a run uses, from the
    weights folder."""
    from s3edit.edit.loading import load_editor, load_expressions
    from s3edit.model.autoencoder import DiffusionFaceAutoencoder
    from s3edit.model.codec import DiffusionCodec, PassThroughCodec
    from s3edit.weights import (
        attribute_encoder_dir,
        autoencoder_attribute_dim,
        autoencoder_dir,
        default_weights_dir,
        resolve_device,
    )

    folder = weights or default_weights_dir()
    if weights is not None and not weights.is_dir():
        raise S3EditError(f"weights folder {weights} does not exist")
    if no_model:
        return (PassThroughCodec(attribute_dim=autoencoder_attribute_dim(folder)),
                load_editor(folder, editor), load_expressions(folder))
    model_dir = autoencoder_dir(folder)
    if model_dir is None:
        raise S3EditError(f"no autoencoder in {folder} (expected {folder}/autoencoder/"
                          "config.json); train one with `s3edit train autoencoder` or use "
                          "--no-model")
    model = DiffusionFaceAutoencoder.from_pretrained(model_dir)
    encoder = None
    if model.config.attribute_dim:
        from s3edit.face.attributes import AttributeEncoder

        encoder_dir = attribute_encoder_dir(folder)
        if encoder_dir is None:
            raise S3EditError(f"the autoencoder in {model_dir} reads attributes, but there is "
                              f"no {folder}/attribute_encoder/config.json; train one with "
                              "`s3edit train attribute-encoder`")
        encoder = AttributeEncoder.from_pretrained(encoder_dir)
    codec_ = DiffusionCodec(model, steps, refine, resolve_device(device), encoder, guidance)
    return codec_, load_editor(folder, editor), load_expressions(folder)


def code_dim(codec_) -> int:
    """Length of the clip code the codec decodes from: identity, then any attributes."""
    from s3edit.model.codes import ATTRIBUTE_DIM, IDENTITY_DIM

    return IDENTITY_DIM + (ATTRIBUTE_DIM if codec_.attributes is not None else 0)


@app.command()
def preview(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Video file.")],
    frame: Annotated[int, typer.Option(min=0, help="Frame number (from 0).")] = 0,
    attr: Annotated[str, typer.Option("--attr", "-a", help="CelebA attribute.")] = "Eyeglasses",
    scale: Annotated[float, typer.Option("--scale", "-s", help="Edit strength.")] = 0.5,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")]
    = Path("preview.png"),
    editor: Annotated[EditorName, typer.Option(help="As in apply.")] = EditorName.s3,
    steps: Annotated[int, typer.Option(min=1, max=1000)] = DEFAULT_STEPS,
    refine: Annotated[int, typer.Option(min=0, max=20, help=REFINE_HELP)] = DEFAULT_REFINE,
    guidance: Annotated[float, typer.Option(min=0, max=20, help=GUIDANCE_HELP)]
    = DEFAULT_GUIDANCE,
    device: Annotated[Device, typer.Option()] = Device.auto,
    weights: Annotated[Path | None, typer.Option()] = None,
    no_model: Annotated[bool, typer.Option("--no-model")] = False,
    overwrite: Annotated[bool, typer.Option()] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Original, reconstruction and edit of one frame side by side, with the face box and
    landmarks drawn on the original.

    Example: s3edit preview in.mp4 --frame 30 --attr smiling --scale 0.8 -o preview.png
    """
    from s3edit.edit.attributes import resolve_attribute
    from s3edit.preview import render_preview

    try:
        attr = resolve_attribute(attr)
        if output.exists() and not overwrite:
            raise S3EditError(f"{output} exists; use --overwrite to replace it")
        if not output.parent.is_dir():
            raise S3EditError(f"output folder {output.parent} does not exist")
        codec_, editor_, expressions = load_models(weights, device.value, steps, refine,
                                                   no_model, editor.value, guidance)
        render_preview(input_path, frame, attr, scale, codec_, editor_, output, expressions)
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


@train_app.command("autoencoder")
def train_autoencoder_cmd(
    data: Annotated[Path, typer.Option(help="CelebAMask-HQ-style folder of face images.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, samples, log.")],
    steps: Annotated[int, typer.Option(min=1)] = 100_000,
    resolution: Annotated[int, typer.Option(help="Training resolution (64 on CPU, 128 on "
                                            "a GPU).")] = 64,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float, typer.Option()] = 2e-4,
    fusion_lr_scale: Annotated[float, typer.Option(
        help="Learning rate of the code fusion MLP, as a multiple of --lr.")] = 1.0,
    reg_weight: Annotated[float, typer.Option(help="Weight of the x0-agreement regulariser "
                                              "inside the face mask.")] = 0.1,
    prediction: Annotated[Prediction, typer.Option(
        help="What the UNet predicts, for a fresh run (a resumed run keeps its own): the "
        "noise, or v, which is the face itself at high noise.")] = Prediction.epsilon,
    template_resolution: Annotated[int, typer.Option(
        min=0, help="Side of the coarse image drawn linearly from the codes and fed to the UNet "
        "beside the noisy image, for a fresh run (0: none).")] = 0,
    loss_weighting: Annotated[LossWeighting, typer.Option(
        help="plain: MSE of the UNet's output. truncated-snr: x0 error weighted max(SNR, 1), "
        "which stresses the high-noise steps where only the codes tell faces apart.")]
    = LossWeighting.plain,
    attributes: Annotated[bool, typer.Option(
        "--attributes/--no-attributes", help="Put the 40 CelebA labels in the clip code, for a "
        "fresh run (then apply needs weights/attribute_encoder/ to measure them).")] = True,
    oversample: Annotated[list[str] | None, typer.Option(
        help="Attribute whose images are drawn at least --oversample-share of the time "
        "(repeatable; default Eyeglasses).")] = None,
    oversample_share: Annotated[float, typer.Option(min=0, max=1)] = 0.2,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="bf16 autocast (1.5x on CPUs "
                                       "with AVX512-BF16).")] = True,
    holdout: Annotated[int, typer.Option(help="Last N images kept out for validation.")]
    = 2000,
    limit: Annotated[int | None, typer.Option(help="Train on the first N images only.")]
    = None,
    max_minutes: Annotated[float | None, typer.Option(
        min=0, help="Stop (with a checkpoint) after this many minutes.")] = None,
    save_every: Annotated[int, typer.Option(min=1)] = 250,
    sample_every: Annotated[int, typer.Option(min=1)] = 1000,
    device: Annotated[Device, typer.Option()] = Device.auto,
    seed: Annotated[int, typer.Option()] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the diffusion face autoencoder; resumes from OUT/checkpoint if present.

    Multi-GPU: accelerate launch -m s3edit train autoencoder --data ... --out ...
    """
    from s3edit.edit.attributes import resolve_attribute
    from s3edit.train.autoencoder import AutoencoderTrainConfig, train_autoencoder

    try:
        cfg = AutoencoderTrainConfig(data=data, out=out, resolution=resolution, steps=steps,
                                     batch_size=batch_size, lr=lr, fusion_lr_scale=fusion_lr_scale,
                                     reg_weight=reg_weight, prediction_type=prediction.value,
                                     template_resolution=template_resolution,
                                     loss_weighting=loss_weighting.value,
                                     attribute_code=attributes, bf16=bf16,
                                     oversample=tuple(resolve_attribute(a) for a in
                                                      oversample or ["Eyeglasses"]),
                                     oversample_share=oversample_share,
                                     holdout=holdout, limit=limit, max_minutes=max_minutes,
                                     save_every=save_every, sample_every=sample_every,
                                     seed=seed, device=device.value)
        if not data.is_dir():
            raise UsageError(f"--data {data}: no such folder")
        typer.echo(train_autoencoder(cfg, progress=stderr.is_terminal))
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


@train_app.command("attribute-encoder")
def train_attribute_encoder_cmd(
    data: Annotated[Path, typer.Option(help="CelebAMask-HQ-style folder (images, labels).")],
    out: Annotated[Path, typer.Option(help="Output folder: weights, metrics.json, log.")],
    steps: Annotated[int, typer.Option(min=1)] = 3000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option()] = 2e-3,
    available_only: Annotated[bool, typer.Option(
        "--available-only", help="Train on the cache shards already built instead of "
        "building the missing ones.")] = False,
    device: Annotated[Device, typer.Option()] = Device.auto,
    seed: Annotated[int, typer.Option()] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the image attribute encoder whose 40 codes condition the autoencoder (images
    7000-27999; a different network and split from the evaluation classifier)."""
    from s3edit.train.attribute_encoder import (
        AttributeEncoderTrainConfig,
        train_attribute_encoder,
    )

    cfg = AttributeEncoderTrainConfig(data=data, out=out, steps=steps, batch_size=batch_size,
                                      lr=lr, available_only=available_only, seed=seed,
                                      device=device.value)
    try:
        if not data.is_dir():
            raise UsageError(f"--data {data}: no such folder")
        typer.echo(train_attribute_encoder(cfg, progress=stderr.is_terminal))
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


@train_app.command("editor")
def train_editor_cmd(
    data: Annotated[list[str], typer.Option(help="A CelebAMask-HQ folder (labels), a folder "
                    "of videos, or a data set name (celebahq, voxceleb) under "
                    "$S3EDIT_DATA_ROOT; repeat to combine.")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/classifier, OUT/expression "
                   "and OUT/<editor>.")],
    editor: Annotated[EditorName, typer.Option(help="Which editor to train (the latent "
                      "classifiers, which linear uses as is, and the expression directions "
                      "are fitted first).")]
    = EditorName.s3,
    classifier: Annotated[Path | None, typer.Option(help="Reuse these latent classifiers "
                          "instead of training them.")] = None,
    clusters: Annotated[int, typer.Option(min=1, help="s3: attribute clusters, one transform "
                                          "each (1 = no routing).")] = 5,
    sparsity: Annotated[float, typer.Option(min=0, max=0.9, help="s3: target share of "
                                            "hidden-neuron groups switched off.")] = 0.1,
    self_training: Annotated[bool, typer.Option(help="s3: learn from pseudo-edited pairs.")]
    = True,
    holdout_attrs: Annotated[list[str] | None, typer.Option(help="s3: attributes left out of "
                             "training (edited through their nearest cluster).")] = None,
    faith_correlation: Annotated[bool, typer.Option(help="s3: in the faithfulness loss, weigh "
                                 "each other attribute by 1 - |correlation| with the edited "
                                 "one, so what comes with it in real faces may move.")]
    = False,
    steps: Annotated[int, typer.Option(min=1)] = 1500,
    holdout: Annotated[int, typer.Option(help="Last N images kept out for validation.")]
    = 2000,
    limit: Annotated[int | None, typer.Option(help="Use the first N images only.")] = None,
    attribute_encoder: Annotated[Path | None, typer.Option(help="An image attribute encoder's "
                                 "folder (`s3edit train attribute-encoder`): the editors then "
                                 "move clip codes of 168 values, the identity code and its 40 "
                                 "attribute values of each face. Default: the 128-d identity "
                                 "codes alone.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the attribute editors on clip codes of faces.

    linear: class-balanced logistic regressions of the 40 attributes (their directions are the
    edit). lt: Latent Transformer heads. s3: S3Editor transforms (self-trained, routed by
    attribute cluster, group-sparse). Example:
    s3edit train editor --data celebahq --data voxceleb --out runs/editors --editor s3
    """
    from s3edit.edit.attributes import resolve_attribute
    from s3edit.train.datasets import editor_data
    from s3edit.train.editors import train_classifier, train_expression, train_lt, train_s3

    try:
        sources = editor_data(data)
        held_out = [resolve_attribute(a) for a in holdout_attrs or []]
        progress = stderr.is_terminal
        encoder = None
        if attribute_encoder is not None:
            from s3edit.face.attributes import AttributeEncoder
            from s3edit.weights import resolve_device

            if not (attribute_encoder / "config.json").is_file():
                raise UsageError(f"--attribute-encoder {attribute_encoder}: no config.json "
                                 "there (train one with `s3edit train attribute-encoder`)")
            encoder = AttributeEncoder.from_pretrained(attribute_encoder).to(
                resolve_device("auto")).eval()
        if classifier is None:
            classifier = train_classifier(sources.faces, out, holdout, limit,
                                          attribute_encoder=encoder)
            typer.echo(classifier)
            typer.echo(train_expression(sources.faces, out, holdout, limit))
        if editor is EditorName.lt:
            typer.echo(train_lt(sources.faces, out, classifier, steps=steps, limit=limit,
                                holdout=holdout, progress=progress, attribute_encoder=encoder))
        elif editor is EditorName.s3:
            videos = sources.videos[0] if sources.videos else None
            typer.echo(train_s3(sources.faces, out, classifier, clusters=clusters,
                                sparsity=sparsity, self_training=self_training,
                                holdout_attrs=held_out, faith_correlation=faith_correlation,
                                videos=videos, steps=steps, limit=limit, holdout=holdout,
                                progress=progress, attribute_encoder=encoder))
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


@train_app.command("expression")
def train_expression_cmd(
    data: Annotated[str, typer.Option(help="A CelebAMask-HQ folder (labels and landmarks), or "
                    "celebahq under $S3EDIT_DATA_ROOT.")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/expression.")],
    holdout: Annotated[int, typer.Option(help="Last N images kept out for validation.")]
    = 2000,
    limit: Annotated[int | None, typer.Option(help="Use the first N images only.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit the landmark directions that expression attributes (smiling, mouth_slightly_open,
    high_cheekbones, narrow_eyes) are edited along: the mean landmark code of the faces with
    the attribute minus that of the faces without. Example:
    s3edit train expression --data celebahq --out runs/editors
    """
    from s3edit.train.datasets import is_labelled_faces, resolve_data
    from s3edit.train.editors import train_expression

    try:
        folder = resolve_data(data)
        if not is_labelled_faces(folder):
            raise UsageError(f"--data {data} ({folder}): not a CelebAMask-HQ layout (no "
                             "attribute labels)")
        typer.echo(train_expression(folder, out, holdout, limit))
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


@train_app.callback(invoke_without_command=True)
def train_default(
    ctx: typer.Context,
    data: Annotated[list[str] | None, typer.Option(help="Data for the editors (as in `train "
                    "editor`): `s3edit train --data voxceleb` trains the S3Editor transforms.")]
    = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/editors"),
    attribute_encoder: Annotated[Path | None, typer.Option(help="As in `train editor`.")]
    = None,
) -> None:
    """Train the autoencoder and the attribute editors."""
    if ctx.invoked_subcommand is not None:
        return
    if not data:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    train_editor_cmd(data=data, out=out, editor=EditorName.s3, classifier=None, clusters=5,
                     sparsity=0.1, self_training=True, holdout_attrs=None,
                     faith_correlation=False, steps=1500,
                     holdout=2000, limit=None, attribute_encoder=attribute_encoder,
                     verbose=False)


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
    from s3edit.metrics.evaluate import evaluate_pair, evaluate_suite, format_table, write_report
    from s3edit.weights import resolve_device

    try:
        dev = str(resolve_device(device.value))
        with stage_progress(not quiet) as hook:
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
        if report is not None:
            write_report(result, original, edited, report)
        if as_json:
            typer.echo(json.dumps(result))
        else:
            summary = {k: v for k, v in result.items() if k != "per_frame"}
            typer.echo(format_table([summary]))
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


@train_app.command("image-classifier")
def train_image_classifier_cmd(
    data: Annotated[Path, typer.Option(help="CelebAMask-HQ-style folder.")],
    out: Annotated[Path, typer.Option(help="Output folder (OUT/image_classifier).")],
    steps: Annotated[int, typer.Option(min=1)] = 6000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    limit: Annotated[int | None, typer.Option(help="Use the first N images only.")] = 7000,
    holdout: Annotated[int, typer.Option()] = 2000,
    device: Annotated[Device, typer.Option()] = Device.auto,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the image-space attribute classifier that `s3edit eval` grades edits with (a
    small CNN on aligned 64 px crops, so edits are not graded in the space that made them)."""
    from s3edit.metrics.attributes import train_image_classifier
    from s3edit.weights import resolve_device

    try:
        if not data.is_dir():
            raise UsageError(f"--data {data}: no such folder")
        typer.echo(train_image_classifier(data, out, steps=steps, batch_size=batch_size,
                                          limit=limit, holdout=holdout,
                                          device=str(resolve_device(device.value)),
                                          progress=stderr.is_terminal))
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
