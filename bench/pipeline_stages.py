"""Time every stage of an `s3edit apply` run, per frame, on a real clip.

Runs `s3edit.pipeline.Pipeline` itself, timing its stages through its `timer` hook, so what is
measured is what apply runs: pass 1 decodes, detects, tracks and embeds the clip code on evenly
spread frames; pass 2 decodes again, crops, runs the model in batches, masks, pastes back and
encodes. The per-stage numbers add up to the run, with what no stage covers shown as glue.

    python bench/pipeline_stages.py --frames 60 --model random --steps 20 --batch 8

Prints the machine, one row per stage (total s, ms per video frame, share of the run), the
overall frames/s and the peak RSS. A benchmark, not a test: it never fails on slow numbers.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs
# s3edit sets torch's thread wait policy on import, which must precede torch's: time what apply runs
import s3edit  # noqa: E402, F401

# isort: split

import argparse
import resource
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from common import DEFAULT_VIDEO, add_machine_args, default_data_dir, resolve_video, setup_machine

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.face_model import DiffusionFaceModel
from s3edit.options import (
    BLENDS,
    DEFAULT_PRECISION,
    DEFAULT_REFINE,
    DEFAULT_STEPS,
    PRECISIONS,
    EditOptions,
)
from s3edit.pipeline import Pipeline
from s3edit.video import binaries, probe
from s3edit.weights import autoencoder_dir, default_weights_dir

# The pipeline's stages in the order a frame meets them (the writer opens before pass 2).
STAGES = ("load face detector", "decode (pass 1)", "detect + landmarks", "track",
          "identity embed", "clip code", "decode (pass 2)", "align crop",
          "model encode (invert)", "model decode (edit)", "model decode (recon)",
          "interpolate", "mask", "paste back", "video encode")


class Stages:
    """Wall time and calls per stage: `timer` is the pipeline's StageTimer."""

    def __init__(self, device: torch.device):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.calls = dict.fromkeys(STAGES, 0)
        self.cuda = device.type == "cuda"

    @contextmanager
    def timer(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self.cuda:  # kernels run asynchronously; count them in the stage that queued them
            torch.cuda.synchronize()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        self.calls[stage] = self.calls.get(stage, 0) + 1


class Nudge:
    """The edit on a random-init model, whose clip code the weights' editors do not fit: any
    change of the code costs what a real edit costs (an edit happens once a clip)."""

    name = "nudge"

    def edit(self, code: torch.Tensor, attr: str, scale: float) -> torch.Tensor:
        return code + 0.01 * scale


def load_pipeline(args: argparse.Namespace, device: torch.device) -> tuple[Pipeline, str]:
    if args.model == "random":  # speed depends on the architecture and resolution only
        model = DiffusionFaceAutoencoder(resolution=args.resolution)
        pipeline = Pipeline(DiffusionFaceModel(model, args.steps, args.refine, device,
                                               precision=args.precision), Nudge())
        label = "random init"
    else:
        pipeline = Pipeline.from_weights(args.weights, editor=args.editor, steps=args.steps,
                                         refine=args.refine, device=str(device),
                                         precision=args.precision,
                                         no_model=args.model == "none")
        if args.model == "none":
            return pipeline, "none (PassThroughModel: the face path only)"
        model, label = pipeline.model.model, f"weights {autoencoder_dir(args.weights)}"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    arithmetic = "bf16 autocast" if pipeline.model.bf16 else "fp32"
    return pipeline, (f"{label}, {model.config.resolution}px, {params:.1f} M params, "
                      f"{args.steps} DDIM steps, {args.refine} fixed-point iterations per "
                      f"inversion step, {arithmetic}")


def first_frames(video: Path, frames: int, folder: Path) -> Path:
    """The clip's first `frames` frames (and its audio), near-losslessly re-encoded."""
    out = folder / f"first-{frames}{video.suffix}"
    subprocess.run([binaries.ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-frames:v",
                    str(frames), "-c:v", "libx264", "-crf", "10", str(out)], check=True)
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--video", default=DEFAULT_VIDEO,
                   help="clip: a path, or one relative to DATA/videos")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="shared data folder (env S3EDIT_SHARED_DATA)")
    p.add_argument("--frames", type=int, default=0,
                   help="first N frames only (cut beforehand, untimed); 0 = whole clip")
    p.add_argument("--model", choices=["none", "weights", "random"], default="weights",
                   help="weights: bundled autoencoder (falls back to random when absent); "
                        "random: untrained DiffusionFaceAutoencoder; none: skip the model")
    p.add_argument("--weights", type=Path, default=default_weights_dir(),
                   help="weights folder for --model weights")
    p.add_argument("--resolution", type=int, default=64, help="crop size of --model random")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help="DDIM steps for encode and decode")
    p.add_argument("--refine", type=int, default=DEFAULT_REFINE,
                   help="fixed-point iterations per inversion step (apply's --refine)")
    defaults = EditOptions("Eyeglasses")
    p.add_argument("--batch", type=int, default=defaults.batch_size,
                   help="keyframes per batch")
    p.add_argument("--keyframe-every", type=int, default=defaults.keyframe_every,
                   help="model on every k-th tracked frame (1: every frame, the full "
                        "computation)")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="the UNet's arithmetic (apply's --precision)")
    p.add_argument("--blend", choices=BLENDS, default=defaults.blend,
                   help="residual-decoded decodes twice a batch (edit and reconstruction)")
    p.add_argument("--identity-frames", type=int, default=defaults.identity_frames,
                   help="frames whose clip code is sampled")
    p.add_argument("--attr", default="eyeglasses",
                   help="attribute edited (hair attributes widen the mask, slowing paste-back)")
    p.add_argument("--scale", type=float, default=0.6, help="edit strength")
    p.add_argument("--editor", default="s3", help="editor of --model weights or none")
    p.add_argument("--guidance", default=defaults.guidance,
                   help="apply's --guidance: auto or a weight (above 1: two network passes a "
                        "decoding step)")
    p.add_argument("--audio", action="store_true",
                   help="also mux the clip's audio, as apply does (a one-off cost per clip)")
    add_machine_args(p)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    device = setup_machine(args)
    if args.model == "weights" and autoencoder_dir(args.weights) is None:
        print(f"note: no autoencoder in {args.weights}; timing a random-init model instead")
        args.model = "random"
    video = resolve_video(args.video, args.data)
    with tempfile.TemporaryDirectory(prefix="s3edit-bench-") as tmp:
        info = probe(video)
        if 0 < args.frames < info.frame_count:
            info = probe(first_frames(video, args.frames, Path(tmp)))
        n = info.frame_count
        print(f"clip:    {video} ({info.display_width}x{info.display_height}, "
              f"{float(info.fps):g} fps; timing {n} frames)")
        start = time.perf_counter()
        pipeline, label = load_pipeline(args, device)
        setup = time.perf_counter() - start
        print(f"model:   {label}, batch {args.batch}, blend {args.blend}, keyframe every "
              f"{args.keyframe_every}")
        stages = Stages(device)
        pipeline.timer = stages.timer
        options = EditOptions(args.attr, args.scale, blend=args.blend, batch_size=args.batch,
                              keyframe_every=args.keyframe_every,
                              identity_frames=args.identity_frames, audio=args.audio,
                              guidance=args.guidance)
        run_start = time.perf_counter()
        result = pipeline.run(info, Path(tmp) / "out.mp4", options)
        wall = time.perf_counter() - run_start

    print()
    print(f"setup (not in the table): loading the models {setup:.2f} s")
    print(f"track: {result.frames_with_face} of {result.frames} frames with a face, "
          f"{result.frames - result.frames_passed_through} edited, guidance "
          f"{result.guidance:g}")
    print()
    rows = [(name, stages.calls[name], secs, 1000 * secs / n, secs / wall)
            for name, secs in stages.seconds.items() if stages.calls[name]]
    timed = sum(stages.seconds.values())
    rows.append(("other (glue)", 0, wall - timed, 1000 * (wall - timed) / n, (wall - timed) / wall))
    rows.append(("total", 0, wall, 1000 * wall / n, 1.0))
    print(f"{'stage':<24}{'calls':>7}{'total s':>10}{'ms/frame':>10}{'share':>8}")
    print("-" * 59)
    for name, calls, secs, ms, share in rows:
        if name == "total":
            print("-" * 59)
        print(f"{name:<24}{calls or '':>7}{secs:>10.2f}{ms:>10.1f}{share:>8.1%}")
    print()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"overall: {n} frames in {wall:.2f} s = {n / wall:.2f} frames/s; peak RSS {peak:.0f} MB"
          + (f", peak CUDA {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
             if device.type == "cuda" else ""))
    # What a user waits for: the run plus loading the models (a 5 s clip at 25 fps is
    # `--frames 125`).
    print(f"clip:    {n / float(info.fps):.2f} s of video edited in {setup + wall:.1f} s, "
          "model loading included")


if __name__ == "__main__":
    main()
