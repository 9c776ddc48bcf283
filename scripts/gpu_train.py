"""Train the autoencoder for a fixed wall-clock budget on a lent GPU and write what comes back.

    python3 scripts/gpu_train.py PACK OUT [--minutes 9]

PACK is a training set packed by `s3edit train pack` (the machine has neither the data folder
nor mediapipe and dlib). The run restarts from --start (default the committed
weights/autoencoder: model and EMA both begin there, the step count from the manifest, a
fresh optimizer), or resumes RUN/checkpoint when it exists. It trains in bf16 autocast until
the budget, which counts from this script's start, leaves only time to write OUT:
  OUT/ema/          the EMA weights in bf16, safetensors files of at most --max-shard-size
                    (from_pretrained loads them in float32)
  OUT/log.jsonl     the training log; OUT/samples.png the last sample grid (held-out codes)
  OUT/summary.json  the configuration, steps, images seen, throughput and the device
Seven files in all: a lease brings back at most 8, each at most 16 MiB. README: "Training on
a lent GPU" has the whole call.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from s3edit.edit.attributes import resolve_combination
from s3edit.train.autoencoder import (
    AutoencoderTrainConfig,
    TrainingDiverged,
    checkpoint_resolution,
    train_autoencoder,
)
from s3edit.train.pack import save_bf16
from s3edit.weights import REPO_WEIGHTS, manifest

# The time the trainer needs before its clock starts (pack decoding, model, CUDA context) and
# after it stops (checkpoint, export), kept out of the training budget.
RESERVE_MINUTES = 0.75


def start_checkpoint(start: Path, ckpt: Path, step: int) -> None:
    """A run checkpoint whose model and EMA are the weights in `start`, at `step`, with no
    optimizer state (the trainer then starts a fresh one)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    for part in ("model", "ema"):
        shutil.copytree(start, tmp / part, dirs_exist_ok=True)
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    tmp.rename(ckpt)


def committed_step() -> int:
    """The committed autoencoder's training steps, as its manifest entry records them."""
    entry = manifest(REPO_WEIGHTS).get("models", {}).get("autoencoder", {})
    return int(entry.get("quality", {}).get("training_steps", 0))


def main() -> None:
    began = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pack", type=Path, help="a pack from `s3edit train pack`")
    p.add_argument("out", type=Path, help="where the bf16 weights, log and samples go")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of the script")
    p.add_argument("--run", type=Path, default=Path("/tmp/s3edit-gpu-run"),
                   help="run folder (full-precision checkpoint, optimizer state)")
    p.add_argument("--start", type=Path, default=REPO_WEIGHTS / "autoencoder",
                   help="weights a fresh run folder starts from")
    p.add_argument("--step", type=int, default=None,
                   help="the step count --start is at (default: the committed weights')")
    p.add_argument("--resolution", type=int, default=None,
                   help="the pack's resolution (default: the checkpoint's); another one than "
                        "the checkpoint's fine-tunes it there")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--fusion-lr-scale", type=float, default=10.0)
    p.add_argument("--reg-weight", type=float, default=0.0,
                   help="x0-agreement regulariser (the committed weights trained without it)")
    p.add_argument("--oversample", nargs="+", default=["Eyeglasses"],
                   help="attributes (or A+B combinations) drawn at least --oversample-share "
                        "of the time")
    p.add_argument("--oversample-share", type=float, default=0.2,
                   help="the least share of the draws each --oversample entry gets")
    p.add_argument("--limit", type=int, default=None, help="train on the pack's first N faces")
    p.add_argument("--steps", type=int, default=10**7,
                   help="stop after this many steps if the budget lasts (a smoke test)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--max-shard-size", default="16MB")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    # The batch shapes never change: let cuDNN pick its fastest convolutions once.
    torch.backends.cudnn.benchmark = True
    ckpt = args.run / "checkpoint"
    if not ckpt.exists():
        start_checkpoint(args.start, ckpt,
                         committed_step() if args.step is None else args.step)
    start = json.loads((ckpt / "state.json").read_text())["step"]
    resolution = args.resolution or checkpoint_resolution(ckpt)
    elapsed = (time.perf_counter() - began) / 60
    cfg = AutoencoderTrainConfig(
        data=args.pack, out=args.run, resolution=resolution, steps=start + args.steps,
        batch_size=args.batch_size, lr=args.lr, fusion_lr_scale=args.fusion_lr_scale,
        reg_weight=args.reg_weight,
        oversample=tuple(resolve_combination(name) for name in args.oversample),
        oversample_share=args.oversample_share,
        limit=args.limit, max_minutes=max(args.minutes - elapsed - RESERVE_MINUTES, 0.0),
        save_every=1000, sample_every=500, log_every=args.log_every, device=args.device)
    trained = time.perf_counter()
    try:
        ema, diverged = train_autoencoder(cfg, progress=False), None
    except TrainingDiverged as err:  # the lease still brings back the finite weights
        ema, diverged = ckpt / "ema", str(err)
    trained = time.perf_counter() - trained

    out = args.out
    save_bf16(ema, out / "ema", args.max_shard_size)
    if (args.run / "log.jsonl").exists():
        shutil.copy(args.run / "log.jsonl", out / "log.jsonl")
    samples = sorted(args.run.glob("samples-*.png"))
    if samples:
        shutil.copy(samples[-1], out / "samples.png")
    step = json.loads((ckpt / "state.json").read_text())["step"]
    log = (out / "log.jsonl").read_text().splitlines() if (out / "log.jsonl").exists() else []
    # training_steps: the key committed_step() reads once this is published as --quality.
    summary = {"start_step": start, "end_step": step, "training_steps": step,
               "images_seen": (step - start) * cfg.batch_size,
               "train_seconds": round(trained, 1),
               "script_seconds": round(time.perf_counter() - began, 1),
               "samples": samples[-1].name if samples else None,
               "skipped_steps": json.loads(log[-1]).get("skipped") if log else None,
               "diverged": diverged,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


if __name__ == "__main__":
    main()
