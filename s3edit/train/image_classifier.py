"""`s3edit train image-classifier`: the image-space attribute classifier that grades edits.

Training uses the preprocessing cache of CelebA-HQ (the same detector and FFHQ alignment as
`s3edit apply`), shrinks the 128 px crops to 64 px by area averaging, flips them at random and
weighs each attribute's positives and negatives equally (class-balanced BCE).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s3edit.edit.attributes import ATTRIBUTES, resolve_attribute
from s3edit.edit.classifier import roc_auc
from s3edit.metrics.attributes import ImageAttributeClassifier
from s3edit.progress import training_bar
from s3edit.train.cache import cached_split, load_cache
from s3edit.train.celeba import celeba_images, celeba_labels
from s3edit.train.config import HOLDOUT
from s3edit.train.parallel import launched_accelerator, my_share


def balanced_weights(labels: torch.Tensor, group: int | None = None, min_count: int = 30
                     ) -> torch.Tensor:
    """Per-image weights (N, 40) of each label that give positives and negatives the same total.

    With `group` (an attribute's index, say Male) the balance is kept within each of its two
    halves as well, for every attribute with at least `min_count` positives and negatives in
    both: otherwise a rare pairing (41 blond men among 1,499 blond women in the first 7,000
    images) is graded by the traits of the common one. Weights average to 1 over the data.
    """
    def even(y: torch.Tensor) -> torch.Tensor:
        positives = y.mean(0).clamp(1e-3, 1 - 1e-3)
        return y * (0.5 / positives) + (1 - y) * (0.5 / (1 - positives))

    weights = even(labels)
    if group is None:
        return weights
    halves_of_group = (labels[:, group] == 1, labels[:, group] == 0)
    balanced = torch.arange(labels.shape[1]) != group
    for half in halves_of_group:
        y = labels[half]
        balanced &= torch.minimum(y.sum(0), (1 - y).sum(0)) >= min_count
    for half in halves_of_group:
        weights[half] = torch.where(balanced, even(labels[half]), weights[half])
    return weights


def train_image_classifier(data: Path, out: Path, *, steps: int = 6000, batch_size: int = 64,
                           limit: int | None = 7000, holdout: int = HOLDOUT, lr: float = 2e-3,
                           resolution: int = 64, balance_by: str | None = None,
                           device: str | torch.device = "cpu", progress: bool = True,
                           seed: int = 0) -> Path:
    """Train on the first `limit` images of a CelebAMask-HQ folder, save to OUT/image_classifier.

    The last `holdout` images are never trained on; `metrics.json` beside the weights holds
    their ROC AUC per attribute. Crops come from the preprocessing cache, built as needed.
    `balance_by` (an attribute, say Male) balances each label within its two halves too.
    """
    if balance_by is not None:
        balance_by = resolve_attribute(balance_by)
    with launched_accelerator(str(device)) as accelerator:
        return _train(accelerator, data, out, steps, batch_size, limit, holdout, lr, resolution,
                      balance_by, progress, seed)


def _train(accelerator, data: Path, out: Path, steps: int, batch_size: int, limit: int | None,
           holdout: int, lr: float, resolution: int, balance_by: str | None, progress: bool,
           seed: int) -> Path:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    device, main = accelerator.device, accelerator.is_main_process
    generator = torch.Generator().manual_seed(seed)  # the same draws in every process
    torch.manual_seed(seed)
    labels = celeba_labels(data)
    # One process of each machine builds the preprocessing cache; the others then read it.
    with accelerator.local_main_process_first():
        split = cached_split(celeba_images(data), holdout, limit, progress and main)

    model = ImageAttributeClassifier(resolution=resolution).to(device)

    def gather(shards: range, count: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        shard = load_cache(split.folder, shards) if len(shards) else None
        if shard is None or not shard.names:
            size = model.config.resolution
            return torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, len(ATTRIBUTES))
        # Shrunk once up front: 7000 crops at 64 px take 86 MB as uint8.
        x = torch.cat([model.preprocess(shard.crops[i:i + 500]).cpu()
                       for i in range(0, len(shard.crops), 500)])
        x = ((x + 1) * 127.5).round().byte()
        y = torch.stack([labels[n] for n in shard.names])
        return x[:count], y[:count]

    train_x, train_y = gather(split.train, limit)
    held_x, held_y = gather(split.held, None)
    if not len(train_x):
        raise ValueError(f"{data}: no faces to train on")
    group = None if balance_by is None else ATTRIBUTES.index(balance_by)
    weights = balanced_weights(train_y, group)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    parallel, optimizer = accelerator.prepare(model, optimizer)
    parallel.train()
    world, mine = accelerator.num_processes, my_share(accelerator, batch_size)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[stats]}"))
    with training_bar(*columns, enabled=progress and main) as bar:
        task = bar.add_task("train image classifier", total=steps, stats="")
        for _ in range(steps):
            # The global batch's draws, then this process's slice of them.
            idx = torch.randint(len(train_x), (batch_size * world,), generator=generator)[mine]
            x = train_x[idx].to(device).float() / 127.5 - 1
            flip = (torch.rand(batch_size * world, generator=generator) < 0.5)[mine]
            x[flip.to(device)] = x[flip.to(device)].flip(-1)
            loss = F.binary_cross_entropy_with_logits(parallel(x), train_y[idx].to(device),
                                                      weight=weights[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            bar.update(task, advance=1, stats=f"loss {loss.item():.3f}")
    model.eval()

    folder = out / "image_classifier"
    if not main:
        return folder
    model.save_pretrained(folder)
    metrics: dict = {"train_images": len(train_x), "held_out_images": len(held_x),
                     "steps": steps, "batch_size": batch_size, "balance_by": balance_by}
    if len(held_x):
        with torch.no_grad():
            scores = torch.cat([model(held_x[i:i + 256].to(device).float() / 127.5 - 1).cpu()
                                for i in range(0, len(held_x), 256)])
        auc = {a: roc_auc(scores[:, i], held_y[:, i]) for i, a in enumerate(ATTRIBUTES)}
        finite = [v for v in auc.values() if math.isfinite(v)]
        metrics["held_out_mean_auc"] = round(float(np.mean(finite)), 4) if finite else None
        metrics["held_out_auc"] = {a: round(v, 4) if math.isfinite(v) else None
                                   for a, v in auc.items()}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return folder
