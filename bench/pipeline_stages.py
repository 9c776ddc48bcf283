"""Time every stage of an `s3edit apply` run, per frame, on a real clip.

Mirrors `s3edit.pipeline.Pipeline`: pass 1 decodes, detects, tracks and embeds the identity on
evenly spread frames; pass 2 decodes again, crops, runs the model in batches, masks, pastes back
and encodes. Each stage is timed on its own, so the per-stage numbers add up to the run.

    python bench/pipeline_stages.py --frames 60 --model random --steps 20 --batch 8

Prints the machine, one row per stage (total s, ms per video frame, share of the run), the
overall frames/s and the peak RSS. A benchmark, not a test: it never fails on slow numbers.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from common import DEFAULT_VIDEO, default_data_dir, resolve_video

from s3edit.face.align import align_crop, to_crop_coords
from s3edit.face.identity import IdentityEncoder
from s3edit.face.landmarks import FaceDetector, landmarks68
from s3edit.face.mask import face_mask
from s3edit.face.paste import paste_back
from s3edit.face.track import FaceTracker
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codec import DiffusionCodec, FaceCodec, PassThroughCodec
from s3edit.model.codes import identity_code, landmark_code
from s3edit.pipeline import EditOptions, to_uint8
from s3edit.video import VideoInfo, VideoWriter, probe, read_frames
from s3edit.weights import autoencoder_dir, default_weights_dir

T = TypeVar("T")




class Stages:
    """Accumulates wall time and call counts per stage, in first-seen order."""

    def __init__(self, device: torch.device):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.cuda = device.type == "cuda"

    def time(self, stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        if self.cuda:  # kernels run asynchronously; count them in the stage that queued them
            torch.cuda.synchronize()
        self.add(stage, time.perf_counter() - start)
        return out

    def add(self, stage: str, seconds: float, calls: int = 1) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.calls[stage] = self.calls.get(stage, 0) + calls

    def frames(self, stage: str, info: VideoInfo, limit: int) -> Iterator[np.ndarray]:
        """The clip's first `limit` frames, timing the wait for each one under `stage`.

        ffmpeg decodes in its own process, in parallel; what the pipeline pays is the wait.
        """
        it = read_frames(info)
        try:
            for _ in range(limit):
                frame = self.time(stage, next, it, None)
                if frame is None:
                    return
                yield frame
        finally:
            it.close()  # stops ffmpeg when fewer frames than the clip's are asked for


def build_codec(kind: str, weights: Path, steps: int, refine: int, device: torch.device,
                resolution: int) -> tuple[FaceCodec, str]:
    if kind == "none":
        return PassThroughCodec(), "none (PassThroughCodec: the face path only)"
    if kind == "weights":
        model_dir = autoencoder_dir(weights)
        if model_dir is None:
            sys.exit(f"error: no autoencoder in {weights}; use --model random or --model none")
        model = DiffusionFaceAutoencoder.from_pretrained(model_dir)
        label = f"weights {model_dir}"
    else:  # speed does not depend on the weights, only on the architecture and resolution
        model = DiffusionFaceAutoencoder(resolution=resolution)
        label = "random init"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    label += (f", {model.config.resolution}px, {params:.1f} M params, {steps} DDIM steps, "
              f"{refine} fixed-point iterations per inversion step")
    return DiffusionCodec(model, steps, refine, device), label


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--video", default=DEFAULT_VIDEO,
                   help="clip: a path, or one relative to DATA/videos")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="shared data folder (env S3EDIT_SHARED_DATA)")
    p.add_argument("--frames", type=int, default=0, help="first N frames only; 0 = whole clip")
    p.add_argument("--model", choices=["none", "weights", "random"], default="weights",
                   help="weights: bundled autoencoder (falls back to random when absent); "
                        "random: untrained DiffusionFaceAutoencoder; none: skip the model")
    p.add_argument("--weights", type=Path, default=default_weights_dir(),
                   help="weights folder for --model weights")
    p.add_argument("--resolution", type=int, default=64, help="crop size of --model random")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps for encode and decode")
    p.add_argument("--refine", type=int, default=3,
                   help="fixed-point iterations per inversion step (apply's --refine)")
    p.add_argument("--batch", type=int, default=8, help="frames per model batch")
    p.add_argument("--blend", choices=["residual", "plain"], default="residual",
                   help="residual decodes twice per batch (edit + reconstruction), as an edit "
                        "with scale != 0 does")
    p.add_argument("--identity-frames", type=int, default=EditOptions.identity_frames,
                   help="frames embedded by the identity encoder, as the pipeline samples them")
    p.add_argument("--attr", default="eyeglasses",
                   help="attribute for the mask (hair attributes widen it, slowing paste-back)")
    p.add_argument("--device", choices=["cpu", "cuda"],
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    p.add_argument("--audio", action="store_true",
                   help="also mux the clip's audio, as apply does (a one-off cost per clip)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA GPU")
    if args.model == "weights" and autoencoder_dir(args.weights) is None:
        print(f"note: no autoencoder in {args.weights}; timing a random-init model instead")
        args.model = "random"
    video = resolve_video(args.video, args.data)
    info = probe(video)
    n = min(args.frames, info.frame_count) if args.frames > 0 else info.frame_count

    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"clip:    {video} ({info.display_width}x{info.display_height}, {float(info.fps):g} "
          f"fps, {info.frame_count} frames; timing the first {n})")

    setup: dict[str, float] = {}
    start = time.perf_counter()
    codec, label = build_codec(args.model, args.weights, args.steps, args.refine, device,
                               args.resolution)
    setup["model"] = time.perf_counter() - start
    print(f"model:   {label}, batch {args.batch}"
          + (f", blend {args.blend}" if args.model != "none" else ""))
    start = time.perf_counter()
    detector = FaceDetector(video=True)
    setup["face detector"] = time.perf_counter() - start
    start = time.perf_counter()
    encoder = IdentityEncoder()
    setup["identity encoder"] = time.perf_counter() - start

    stages = Stages(device)
    # Rows in the order a frame meets them; the writer opens before pass 2 starts decoding.
    for name in ("decode (pass 1)", "detect + landmarks", "track", "identity embed",
                 "decode (pass 2)", "align crop", "model encode (invert)", "model decode (edit)",
                 "model decode (recon)", "mask", "paste back", "video encode"):
        stages.add(name, 0.0, calls=0)
    run_start = time.perf_counter()

    # Pass 1: as Pipeline.analyse, on the first n frames.
    stride = max(1, n // args.identity_frames)
    tracker = FaceTracker()
    embeddings = []
    with detector:
        for t, frame in enumerate(stages.frames("decode (pass 1)", info, n)):
            faces = stages.time("detect + landmarks", detector, frame)
            face = stages.time("track", tracker.update, faces)
            if face is not None and t % stride == 0:
                embeddings.append(stages.time("identity embed", encoder, [frame], [face.lm68]))
    track = stages.time("track", tracker.finish)  # gap filling and smoothing
    # As analyse: mean of the normalised embeddings, normalised again.
    if embeddings:
        codes = identity_code(torch.from_numpy(np.concatenate(embeddings)))
        identity = identity_code(codes.mean(0))
    else:  # no face on a sampled frame; any code times the same
        identity = identity_code(torch.randn(128))
    # Any code other than the clip's makes a residual blend decode twice, as a real edit does.
    edited = identity_code(identity + 0.1 * identity_code(torch.randn(128)))

    # Pass 2: as Pipeline.render/_flush, with the writer in a temporary folder.
    size = codec.resolution

    def render(writer: VideoWriter) -> None:
        def flush(pending: list[tuple[int, np.ndarray]]) -> None:
            todo = [(t, f) for t, f in pending if track.valid[t]]
            out: dict[int, np.ndarray] = {}
            if todo:
                start = time.perf_counter()
                crops = np.stack([align_crop(f, track.squares[t], size) for t, f in todo])
                lm = np.stack([to_crop_coords(landmarks68(track.mesh[t]), track.squares[t], size)
                               for t, _ in todo]) / size
                landmarks = landmark_code(torch.from_numpy(lm))
                x0 = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
                stages.add("align crop", time.perf_counter() - start)
                if args.model != "none":
                    latents = stages.time("model encode (invert)", codec.encode, x0, identity,
                                          landmarks)
                    decoded = stages.time("model decode (edit)", lambda: to_uint8(
                        codec.decode(latents, edited, landmarks)))
                    recon = stages.time("model decode (recon)", lambda: to_uint8(
                        codec.decode(latents, identity, landmarks))) \
                        if args.blend == "residual" else None
                else:
                    decoded, recon = to_uint8(x0), None
                for i, (t, frame) in enumerate(todo):
                    mask = stages.time("mask", face_mask, track.mesh[t], frame.shape[:2],
                                       attr=args.attr)
                    out[t] = stages.time(
                        "paste back", paste_back, frame, decoded[i], track.squares[t], mask,
                        reconstructed_crop=None if recon is None else recon[i])
            for t, frame in pending:
                stages.time("video encode", writer.write, out.get(t, frame))

        pending: list[tuple[int, np.ndarray]] = []
        for t, frame in enumerate(stages.frames("decode (pass 2)", info, n)):
            pending.append((t, frame))
            if sum(track.valid[i] for i, _ in pending) >= args.batch:
                flush(pending)
                pending = []
        flush(pending)

    with tempfile.TemporaryDirectory(prefix="s3edit-bench-") as tmp:
        writer = stages.time("video encode", VideoWriter, Path(tmp) / "out.mp4", info,
                             audio_from=info.path if args.audio else None)
        stages.time("video encode", writer.__enter__)
        try:
            render(writer)
        except BaseException:
            writer.__exit__(*sys.exc_info())  # kills ffmpeg; the temp folder goes anyway
            raise
        stages.time("video encode", writer.__exit__, None, None, None)  # flush + mux + rename
    wall = time.perf_counter() - run_start

    print()
    print("setup (not in the table): " + ", ".join(f"{k} {v:.2f} s" for k, v in setup.items()))
    print(f"track: {track.frames_with_face} of {track.frames} frames with a face, "
          f"{int(track.valid.sum())} edited; identity embedded on {len(embeddings)} frames")
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


if __name__ == "__main__":
    main()
