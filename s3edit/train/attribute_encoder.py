"""`s3edit train attribute-encoder`: fit the image attribute encoder of the conditioning code.

Data: the aligned 128 px crops of the preprocessing cache (the detector and alignment of
`s3edit apply`), shrunk to the encoder's resolution, with the CelebA labels. It trains on
images [first, last) = [7000, 28000), never on the evaluation classifier's 0-6999 nor on the
last `holdout` images, whose ROC AUC is written to OUT/metrics.json.

Loss: plain BCE, not the evaluation classifier's class-balanced BCE. The codes stand in for the
labels the decoder was trained on, so they should be calibrated probabilities (their expected
value is then the best guess of the label); balancing would put a doubtful face at 0.5 for
every attribute, e.g. announcing Bald for 1 face in 2 where it is 1 in 50. Nor did balancing
learn faster: 500 steps on 3,500 faces gave a held-out mean AUC of 0.83 with it, 0.85 without.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.classifier import roc_auc
from s3edit.errors import UsageError
from s3edit.face.attributes import AttributeEncoder, area_resize
from s3edit.metrics.attributes import CROP_SIZE
from s3edit.progress import training_bar
from s3edit.train.cache import SHARD_SIZE, build_image_cache, image_cache_dir, load_shards
from s3edit.train.celeba import celeba_images, celeba_labels
from s3edit.train.parallel import launched_accelerator, my_share


@dataclass
class AttributeEncoderTrainConfig:
    data: Path
    out: Path
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    first: int = 7000  # training images are indices [first, last) of the folder
    last: int = 28000
    holdout: int = 2000  # the last N images: never trained on, scored in metrics.json
    # Aligned faces wobble a little from frame to frame on video; small random shifts and
    # zooms keep the codes from depending on the exact crop.
    jitter_shift: float = 0.04  # fraction of the crop side
    jitter_scale: float = 0.05
    # Train on the cache shards that exist instead of building the missing ones (while other
    # processes are still building the cache).
    available_only: bool = False
    log_every: int = 100  # steps between lines of OUT/log.jsonl
    seed: int = 0
    device: str = "auto"


def load_faces(cfg: AttributeEncoderTrainConfig, resolution: int
               ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(crops, labels) of the training and held-out images: uint8 (N, 3, R, R), float (N, 40).

    Shard k of the cache holds images 500k..500k+499 of the folder minus the faces the
    detector missed, so images are placed by their file's position in the folder.
    """
    paths = celeba_images(cfg.data)
    labels = celeba_labels(cfg.data)
    held_from = len(paths) - cfg.holdout
    if cfg.last > held_from:
        raise UsageError(f"training images end at {cfg.last}, past the held-out ones "
                         f"({held_from}..{len(paths) - 1})")
    index = {p.name: i for i, p in enumerate(paths)}
    train_shards = range(cfg.first // SHARD_SIZE, math.ceil(cfg.last / SHARD_SIZE))
    held_shards = range(held_from // SHARD_SIZE, math.ceil(len(paths) / SHARD_SIZE))
    shards = sorted({*train_shards, *held_shards})
    if cfg.available_only:
        cache = image_cache_dir(paths, CROP_SIZE)
    else:
        cache = build_image_cache(paths, CROP_SIZE, shards=shards)

    parts: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {"train": ([], []),
                                                                       "held": ([], [])}
    for shard in load_shards(cache, shards):
        where = torch.tensor([index[n] for n in shard.names], dtype=torch.long)
        # Shrunk once up front: 21,000 crops at 64 px take 260 MB as uint8.
        x = area_resize(shard.crops.permute(0, 3, 1, 2).float(), resolution)
        x = x.round().byte().contiguous()  # (N, 3, R, R) laid out as such, not channels-last
        y = torch.stack([labels[n] for n in shard.names]) if shard.names else None
        for part, keep in (("train", (where >= cfg.first) & (where < cfg.last)),
                           ("held", where >= held_from)):
            if keep.any():
                parts[part][0].append(x[keep])
                parts[part][1].append(y[keep])

    def join(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = parts[part]
        if not xs:
            return (torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8),
                    torch.zeros(0, len(ATTRIBUTES)))
        return torch.cat(xs), torch.cat(ys)

    return join("train"), join("held")


def random_jitter(n: int, cfg: AttributeEncoderTrainConfig, generator: torch.Generator
                  ) -> torch.Tensor:
    """Affine maps (n, 2, 3) of random horizontal flips, shifts and zooms."""
    scale = 1 + cfg.jitter_scale * (2 * torch.rand(n, generator=generator) - 1)
    shift = 2 * cfg.jitter_shift * (2 * torch.rand(n, 2, generator=generator) - 1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = flip / scale, 1 / scale
    theta[:, :, 2] = shift
    return theta


def augment(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """A batch (N, 3, R, R) moved by its maps `random_jitter` drew, in one resampling."""
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def held_out_metrics(model: AttributeEncoder, x: torch.Tensor, y: torch.Tensor
                     ) -> dict[str, object]:
    """ROC AUC per attribute of the flip-averaged codes (what the decoder will be fed)."""
    device = model.device
    codes = torch.cat([model.codes(x[i:i + 256].to(device).float() / 127.5 - 1).cpu()
                       for i in range(0, len(x), 256)])
    auc = {a: roc_auc(codes[:, i], y[:, i]) for i, a in enumerate(model.config.attributes)}
    finite = [v for v in auc.values() if math.isfinite(v)]
    return {"held_out_mean_auc": round(float(np.mean(finite)), 4) if finite else None,
            "held_out_auc": {a: round(v, 4) if math.isfinite(v) else None
                             for a, v in auc.items()}}


def train_attribute_encoder(cfg: AttributeEncoderTrainConfig, progress: bool = True) -> Path:
    """Train from scratch; save the final weights to cfg.out and return that folder."""
    with launched_accelerator(cfg.device) as accelerator:
        return _train(accelerator, cfg, progress)


def _train(accelerator, cfg: AttributeEncoderTrainConfig, progress: bool) -> Path:
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    device, main = accelerator.device, accelerator.is_main_process
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)  # the same draws in every process
    model = AttributeEncoder().to(device)
    # One process of each machine builds the preprocessing cache; the others then read it.
    with accelerator.local_main_process_first():
        (train_x, train_y), (held_x, held_y) = load_faces(cfg, model.config.resolution)
    if not len(train_x):
        raise UsageError(f"{cfg.data}: no cached faces among images {cfg.first}..{cfg.last - 1}"
                         + (" (is the cache built?)" if cfg.available_only else ""))
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), default=str, indent=1))

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    parallel, optimizer = accelerator.prepare(model, optimizer)
    world, mine = accelerator.num_processes, my_share(accelerator, cfg.batch_size)
    losses: list[float] = []
    start = time.time()
    parallel.train()
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[stats]}"), TimeRemainingColumn())
    with (training_bar(*columns, enabled=progress and main) as bar,
          (out / "log.jsonl").open("w") if main else nullcontext() as log):
        task = bar.add_task("train attribute encoder", total=cfg.steps, stats="")
        for _ in range(cfg.steps):
            # The global batch's draws, then this process's slice of them.
            total = cfg.batch_size * world
            idx = torch.randint(len(train_x), (total,), generator=generator)[mine]
            theta = random_jitter(total, cfg, generator)[mine]
            x = augment(train_x[idx].to(device).float() / 127.5 - 1, theta)
            y = train_y[idx].to(device)
            # bf16 autocast: 1.5-2x faster on CPU; the loss itself is taken in float32.
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = parallel(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            losses.append(accelerator.reduce(loss.detach(), "mean").item())
            bar.update(task, advance=1, stats=f"loss {np.mean(losses[-50:]):.3f}")
            if main and (len(losses) % cfg.log_every == 0 or len(losses) == cfg.steps):
                recent = float(np.mean(losses[-cfg.log_every:]))
                print(json.dumps({"step": len(losses), "loss": round(recent, 4),
                                  "lr": scheduler.get_last_lr()[0],
                                  "seconds": round(time.time() - start, 1)}), file=log,
                      flush=True)
    model.eval()
    if not main:
        return out
    model.save_pretrained(out)
    metrics: dict[str, object] = {
        "train_images": len(train_x), "held_out_images": len(held_x), "steps": cfg.steps,
        "batch_size": cfg.batch_size, "train_seconds": round(time.time() - start),
        "first_loss": round(float(np.mean(losses[:20])), 4),
        "last_loss": round(float(np.mean(losses[-50:])), 4)}
    if len(held_x):
        metrics |= held_out_metrics(model, held_x, held_y)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return out
