"""`s3edit train autoencoder`: fit the diffusion face autoencoder on aligned face crops.

Loss (Diffusion Video Autoencoders): noise prediction for two independent noises of the same
image at the same timestep, plus a regulariser that makes their predicted x0 agree inside the
face, which pushes the face's content into z_face rather than into the noise.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.errors import UsageError
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import ATTRIBUTE_DIM, attribute_code, clip_code, landmark_code
from s3edit.model.inputs import to_uint8
from s3edit.progress import training_bar
from s3edit.train import celeba
from s3edit.train.cache import FaceShard, cached_split, load_cache
from s3edit.train.celeba import celeba_images, celeba_labels
from s3edit.train.checkpoint import load_optimizer, replace_dir, save_optimizer
from s3edit.train.config import HOLDOUT
from s3edit.train.pack import is_pack, read_pack
from s3edit.train.parallel import launched_accelerator, my_share


@dataclass
class AutoencoderTrainConfig:
    data: Path
    out: Path
    resolution: int = 64
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    steps: int = 100_000
    batch_size: int = 8
    lr: float = 2e-4
    # The fusion MLP must learn the conditioning from nothing while the UNet is already a
    # denoiser; at the base rate z_face's spread across people grew too slowly to be followed.
    fusion_lr_scale: float = 1.0
    # Steps of linear warm-up from a fresh optimizer: at the start of a run, and again when a
    # run restarts from weights without optimizer state (Adam's first steps are full-size).
    warmup: int = 500
    ema_decay: float = 0.999
    # Weight 1 (the reference's) let the regulariser dominate a short run: the noise loss rose
    # from 0.63 to 0.73 over 50 steps while the x0 agreement fell. 0.1 keeps it a regulariser.
    reg_weight: float = 0.1
    # A fresh run's UNet output and code template; a resumed run keeps its checkpoint's.
    prediction_type: str = "epsilon"
    template_resolution: int = 0
    # The 40 CelebA labels in the clip code (a fresh run's choice; a resumed run keeps its own).
    attribute_code: bool = False
    # Draw images with these (rare) attributes at least this share of the time each:
    # eyeglasses are 4.9% of CelebA-HQ, too few for a short run to learn to draw them.
    oversample: tuple[str, ...] = ("Eyeglasses",)
    oversample_share: float = 0.2
    # Eyeglasses in the clip code means clear spectacles: CelebA's label also counts
    # sunglasses (about a third of its eyeglasses faces), whose dark lenses a decoder then
    # draws as what eyeglasses look like. Those faces' label becomes undecided (see
    # train/celeba.py: clear_eyeglasses).
    clear_eyeglasses: bool = True
    # bf16 autocast on CPU (1.5x on AVX512-BF16) and on CUDA.
    bf16: bool = True
    # "plain": the MSE of the UNet's output (noise or v). "truncated-snr": the x0 error
    # weighted max(SNR, 1). The plain noise loss weights a timestep's x0 error by its SNR,
    # 0.002 at t = 800, so the high-noise steps, where only z_face tells faces apart, hardly
    # teach the UNet to read it: after 5,000 steps the x0 error was the same with a face's
    # own code and with a stranger's. v's plain loss weights it SNR + 1.
    loss_weighting: str = "plain"
    holdout: int = HOLDOUT
    limit: int | None = None  # use only the first N training images (small runs, tests)
    # Stop after this much wall-clock time (saving a checkpoint), whatever `steps` says: a GPU
    # lease or a session has a fixed budget.
    max_minutes: float | None = None
    # Updates with a non-finite gradient are skipped; this many in a row end the run.
    max_skipped_in_a_row: int = 20
    save_every: int = 250
    sample_every: int = 1000
    log_every: int = 10
    seed: int = 0
    device: str = "auto"


@dataclass
class FaceBatchSource:
    """Aligned faces at the training resolution, with codes, labels and face masks, in memory."""

    images: torch.Tensor  # (N, 3, R, R) in [-1, 1]
    clip_code: torch.Tensor  # (N, 128) identity, or (N, 168) identity and labels in [-1, 1]
    landmarks: torch.Tensor  # (N, 102)
    masks: torch.Tensor  # (N, 1, R, R)
    labels: torch.Tensor  # (N, 40) in {0, 1}

    @classmethod
    def from_shard(cls, shard: FaceShard, resolution: int, labels: dict[str, torch.Tensor],
                   attribute_dim: int = 0, clear_eyeglasses: bool = False) -> FaceBatchSource:
        crops = shard.crops.permute(0, 3, 1, 2).float() / 127.5 - 1
        if crops.shape[-1] != resolution:
            crops = F.interpolate(crops, size=resolution, mode="area")
        unknown = torch.full((len(ATTRIBUTES),), 0.5)  # an image without labels: undecided
        shard_labels = torch.stack([labels.get(n, unknown) for n in shard.names]) \
            if shard.names else torch.zeros(0, len(ATTRIBUTES))
        if clear_eyeglasses:
            shard_labels = celeba.clear_eyeglasses(shard_labels, shard.crops, shard.mesh)
        return cls.build(crops, shard.identity, landmark_code(shard.lm68),
                         hull_masks(shard.mesh.float(), resolution), shard_labels, attribute_dim)

    @classmethod
    def build(cls, images: torch.Tensor, identity: torch.Tensor, landmarks: torch.Tensor,
              masks: torch.Tensor, labels: torch.Tensor, attribute_dim: int = 0
              ) -> FaceBatchSource:
        """The source of faces with these codes; the clip code has the labels' attribute
        code when `attribute_dim` is set."""
        attributes = attribute_code(labels) if attribute_dim else None
        return cls(images, clip_code(identity, attributes), landmarks, masks, labels)

    def __len__(self) -> int:
        return len(self.images)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.images, self.clip_code, self.landmarks, self.masks, self.labels

    def subset(self, index: slice | torch.Tensor) -> FaceBatchSource:
        return FaceBatchSource(*(t[index] for t in self.tensors()))

    def sampling_weights(self, attributes: tuple[str, ...], share: float) -> torch.Tensor:
        """Per-image draw weights that give each attribute's positives at least `share`.

        An entry 'A+B' counts the images that have both, so that a rare combination (blond
        men are 2% of CelebA-HQ's men) can be drawn as often as a rare attribute."""
        weights = torch.ones(len(self))
        positives = [(self.labels[:, [ATTRIBUTES.index(a) for a in name.split("+")]] > 0.5)
                     .all(dim=1) for name in attributes]
        for _ in range(10):  # raising one attribute lowers the others: repeat until all hold
            for positive in positives:
                current = weights[positive].sum() / weights.sum()
                if 0 < current < share - 1e-6:
                    # Scaling the positives by k gives them k*c / (k*c + 1 - c) of the draws.
                    weights[positive] *= share * (1 - current) / (current * (1 - share))
        return weights


def hull_masks(mesh_unit: torch.Tensor, resolution: int) -> torch.Tensor:
    """Face region masks: the convex hull of the mesh, whose outline is the face oval."""
    masks = np.zeros((len(mesh_unit), 1, resolution, resolution), np.float32)
    for i, points in enumerate(mesh_unit.numpy() * resolution):
        hull = cv2.convexHull(points.astype(np.float32)).astype(np.int32)
        cv2.fillConvexPoly(masks[i, 0], hull, 1.0)
    return torch.from_numpy(masks)


LOSS_WEIGHTINGS = ("plain", "truncated-snr")


def diffusion_loss(model: DiffusionFaceAutoencoder, alphas_cumprod: torch.Tensor,
                   x0: torch.Tensor, z_face: torch.Tensor, mask: torch.Tensor,
                   reg_weight: float, weighting: str = "plain", t: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None, mask_area: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a batch and its parts (detached). Timesteps `t` (N,) and noises (2, N, ...)
    are drawn here unless given. The regulariser divides by the batch's face area, or by
    `mask_area`: under data parallelism, the global batch's area over the process count, so
    that the ranks' mean gradient is the global batch's."""
    n = len(x0)
    if t is None:
        t = torch.randint(0, len(alphas_cumprod), (n,), device=x0.device)
    if noise is None:
        noise = torch.randn(2, *x0.shape, device=x0.device)
    a = alphas_cumprod[t].view(n, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise  # (2, N, ...) two noisings of each image
    # float: under bf16 autocast the loss itself is still taken in full precision.
    output = model(x_t.flatten(0, 1), t.repeat(2), z_face.repeat(2, 1)).float().view_as(noise)
    per_image = (output - model.training_target(x0, noise, a)).pow(2).mean(dim=(0, 2, 3, 4))
    loss_plain = per_image.mean()
    x0_pred = model.predicted_x0(output, x_t, a)
    if weighting == "truncated-snr":
        # The x0 error weighted max(SNR, 1) (Salimans & Ho 2022): the plain noise loss weights
        # it by SNR, 0.002 at t = 800.
        snr = (a / (1 - a)).flatten()
        per_x0 = (x0_pred - x0).pow(2).mean(dim=(0, 2, 3, 4))
        loss_main = (snr.clamp(min=1) * per_x0).mean()
    elif weighting == "plain":
        loss_main = loss_plain
    else:
        raise ValueError(f"unknown loss weighting {weighting!r}: choose from {LOSS_WEIGHTINGS}")
    x0_pred = x0_pred.clamp(-1, 1)
    if mask_area is None:
        mask_area = (mask.sum() * 3).clamp(min=1)
    loss_reg = ((x0_pred[0] - x0_pred[1]).pow(2) * mask).sum() / mask_area
    loss = loss_main + reg_weight * loss_reg
    return loss, {"mse": loss_plain.detach(), "reg": loss_reg.detach()}


class TrainingLoss(torch.nn.Module):
    """The autoencoder with its training loss as `forward`: the module accelerate wraps
    (DistributedDataParallel under several processes) must run the whole computation, z_face
    included, for its hooks to all-reduce every gradient."""

    def __init__(self, model: DiffusionFaceAutoencoder, cfg: AutoencoderTrainConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self.register_buffer("alphas", model.schedulers()[0].alphas_cumprod, persistent=False)

    def forward(self, x0: torch.Tensor, code: torch.Tensor, landmarks: torch.Tensor,
                mask: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                mask_area: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z_face = self.model.z_face(code, landmarks)
        return diffusion_loss(self.model, self.alphas, x0, z_face, mask, self.cfg.reg_weight,
                              self.cfg.loss_weighting, t, noise, mask_area)


@dataclass
class StepBatch:
    """One process's share of a step's batch, with its timesteps and noises."""

    tensors: tuple[torch.Tensor, ...]  # images, clip codes, landmarks, masks, labels
    t: torch.Tensor
    noise: torch.Tensor  # (2, B, 3, R, R)
    mask_area: torch.Tensor  # the global batch's face area over the process count


def draw_step_batch(source: FaceBatchSource, weights: torch.Tensor, timesteps: int,
                    cfg: AutoencoderTrainConfig, step: int, mine: slice, world: int,
                    device: torch.device) -> StepBatch:
    """Draw step `step`'s global batch of `cfg.batch_size * world` faces and return the slice
    `mine`. Every draw is seeded by (seed, step), and each noise by its place in the global
    batch, so the run does not depend on how the batch is split over processes, nor on where
    it resumed."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    total = cfg.batch_size * world
    idx = torch.multinomial(weights, total, replacement=True, generator=gen)
    t = torch.randint(0, timesteps, (total,), generator=gen)
    noise_seeds = torch.randint(2**62, (total,), generator=gen)[mine]
    device_gen = torch.Generator(device)
    noise = torch.stack([torch.randn(2, 3, cfg.resolution, cfg.resolution, device=device,
                                     generator=device_gen.manual_seed(int(seed)))
                         for seed in noise_seeds], 1)
    area = (source.masks[idx].sum() * 3).clamp(min=1) / world
    return StepBatch(tuple(x[idx[mine]].to(device) for x in source.tensors()),
                     t[mine].to(device), noise, area.to(device))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1) / 4
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    images = to_uint8(images)
    rows = [np.hstack(list(images[i:i + columns])) for i in range(0, len(images), columns)]
    if len(rows) > 1 and rows[-1].shape != rows[0].shape:
        rows[-1] = np.pad(rows[-1], ((0, 0), (0, rows[0].shape[1] - rows[-1].shape[1]), (0, 0)))
    cv2.imwrite(str(path), np.vstack(rows)[:, :, ::-1])


def load_face_sources(cfg: AutoencoderTrainConfig, attribute_dim: int = 0
                      ) -> tuple[FaceBatchSource, FaceBatchSource]:
    """The training and held-out faces of `cfg.data`: a CelebAMask-HQ (or plain) folder,
    through the preprocessing cache, or a pack of one (`s3edit train pack`)."""
    if is_pack(cfg.data):
        train, held = read_pack(cfg.data, cfg.resolution, cfg.clear_eyeglasses, attribute_dim)
        return (train if cfg.limit is None else train.subset(slice(0, cfg.limit))), held
    paths = celeba_images(Path(cfg.data))
    try:
        labels = celeba_labels(Path(cfg.data))
    except UsageError:
        if attribute_dim:
            raise
        labels = {}  # a plain folder of faces trains a decoder without attributes
    split = cached_split(paths, cfg.holdout, cfg.limit)
    train = FaceBatchSource.from_shard(load_cache(split.folder, split.train), cfg.resolution,
                                       labels, attribute_dim, cfg.clear_eyeglasses)
    # A folder smaller than one shard has no held-out part; its samples then show training faces.
    held = (FaceBatchSource.from_shard(load_cache(split.folder, split.held), cfg.resolution,
                                       labels, attribute_dim, cfg.clear_eyeglasses)
            if split.held else train)
    if cfg.limit is not None:
        train = train.subset(slice(0, cfg.limit))
    return train, held


def checkpoint_resolution(ckpt: Path) -> int | None:
    """The resolution a run's checkpoint works at, None when there is no checkpoint."""
    model = Path(ckpt) / "model"
    return DiffusionFaceAutoencoder.load_config(model)["resolution"] if model.exists() else None


class TrainingDiverged(RuntimeError):
    """Every update for `max_skipped_in_a_row` steps had a non-finite gradient; the last
    checkpoint, written before raising, holds the finite weights of before."""


def train_autoencoder(cfg: AutoencoderTrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and return the folder holding the EMA weights.

    Under `torchrun` or `accelerate launch` every process trains the same model on its share
    of each step's batch (`cfg.batch_size` faces a process) and DDP averages the gradients;
    the main process alone writes the log, samples and checkpoints.
    """
    with launched_accelerator(cfg.device) as accelerator:
        return _train(accelerator, cfg, progress)


def _train(accelerator, cfg: AutoencoderTrainConfig, progress: bool) -> Path:
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    main = accelerator.is_main_process
    torch.manual_seed(cfg.seed)  # the same initial weights (and EMA copy) in every process
    out = Path(cfg.out)
    ckpt = out / "checkpoint"
    if (ckpt / "model").exists():
        attribute_dim = DiffusionFaceAutoencoder.load_config(ckpt / "model").get("attribute_dim", 0)
    else:
        attribute_dim = ATTRIBUTE_DIM if cfg.attribute_code else 0
    # One process of each machine builds the preprocessing cache; the others then read it.
    with accelerator.local_main_process_first():
        train, held = load_face_sources(cfg, attribute_dim)

    if (ckpt / "model").exists():
        model = DiffusionFaceAutoencoder.from_pretrained(ckpt / "model")
        ema = DiffusionFaceAutoencoder.from_pretrained(ckpt / "ema")
        state = json.loads((ckpt / "state.json").read_text())
        step = state["step"]
        for net in (model, ema):
            net.retarget(cfg.resolution)
    else:
        model = DiffusionFaceAutoencoder(resolution=cfg.resolution,
                                         block_out_channels=tuple(cfg.block_out_channels),
                                         prediction_type=cfg.prediction_type,
                                         template_resolution=cfg.template_resolution,
                                         attribute_dim=attribute_dim)
        model.set_code_statistics(train.clip_code, train.landmarks)
        if cfg.template_resolution:
            model.fit_code_template(train.clip_code, train.landmarks, train.images)
        ema, step, state = copy.deepcopy(model), 0, {}
    ema.requires_grad_(False)
    # The code template starts fitted, so it stays at the base rate with the UNet.
    rest = [p for name, p in model.named_parameters() if not name.startswith("fusion.")]
    optimizer = torch.optim.AdamW(
        [{"params": rest},
         {"params": model.fusion.parameters(), "lr": cfg.lr * cfg.fusion_lr_scale}],
        lr=cfg.lr, weight_decay=0.0)
    if (ckpt / "optimizer.safetensors").exists():
        load_optimizer(optimizer, ckpt / "optimizer.safetensors")
        warmup_from = state.get("warmup_from", 0)
    else:  # a fresh optimizer, also on weights restarted without one: warm up again
        warmup_from = step
    for group in optimizer.param_groups:  # a checkpoint without optimizer state resumes too
        group.setdefault("initial_lr", group["lr"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s - warmup_from + 1) / cfg.warmup), last_epoch=step - 1)
    training, optimizer = accelerator.prepare(TrainingLoss(model, cfg), optimizer)
    ema.to(accelerator.device)
    timesteps = model.config.num_train_timesteps
    # A fixed held-out batch for the sample grid, so grids of different steps compare.
    grid_ids = torch.arange(min(16, len(held)))
    draw_weights = train.sampling_weights(cfg.oversample, cfg.oversample_share)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), default=str, indent=1))
    if accelerator.device.type == "cuda":
        # A run on an H200 at batch 128 went NaN 300-400 steps into a restart, twice alike,
        # its loss healthy up to then: the mark of cuDNN's bf16 attention backward, which
        # others saw turn every gradient to NaN at larger batches (kyutai-labs/pocket-tts
        # #264). The flash and memory-efficient kernels take its place at no cost there.
        torch.backends.cuda.enable_cudnn_sdp(False)
    skipped = skipped_in_a_row = 0

    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TextColumn("{task.fields[stats]}"), TimeRemainingColumn()]
    with training_bar(*columns, enabled=progress and main) as bar:
        task = bar.add_task("train autoencoder", total=cfg.steps, completed=step, stats="")
        tic, log = time.perf_counter(), []
        deadline = math.inf if cfg.max_minutes is None else tic + 60 * cfg.max_minutes
        while step < cfg.steps:
            batch = draw_step_batch(train, draw_weights, timesteps, cfg, step,
                                    my_share(accelerator, cfg.batch_size),
                                    accelerator.num_processes, accelerator.device)
            x0, code, lms, mask, _ = batch.tensors
            training.train()
            with torch.autocast(accelerator.device.type, torch.bfloat16, enabled=cfg.bf16):
                loss, parts = training(x0, code, lms, mask, batch.t, batch.noise,
                                       batch.mask_area)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            # The norm of the all-reduced gradient, the same in every process: they all skip
            # a non-finite update together (one would turn every weight to NaN for good).
            grad_norm = accelerator.clip_grad_norm_(training.parameters(), 1.0)
            if torch.isfinite(grad_norm):
                optimizer.step()
                # Warm-up: a fixed 0.999 would keep a third of the random init for 1000 steps.
                update_ema(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
                skipped_in_a_row = 0
            else:
                skipped, skipped_in_a_row = skipped + 1, skipped_in_a_row + 1
            schedule.step()
            step += 1
            # One small all-reduce: the figures of the whole batch, and the deadline agreed on
            # (a process stopping alone would leave the others waiting for it).
            late = float(time.perf_counter() >= deadline)
            figures = torch.stack([loss.detach(), parts["mse"], parts["reg"],
                                   torch.tensor(late, device=loss.device)]).float()
            loss_all, mse, reg, late = accelerator.reduce(figures, "mean").tolist()
            out_of_time = late > 0
            if skipped_in_a_row == 0:  # a skipped step's loss says nothing of the weights
                log.append(loss_all)
            diverged = skipped_in_a_row >= cfg.max_skipped_in_a_row
            if step % cfg.log_every == 0:
                rate = cfg.log_every / (time.perf_counter() - tic)
                mean_loss = float(np.mean(log)) if log else math.nan
                stats = f"loss {mean_loss:.4f} mse {mse:.4f} {rate:.2f} it/s"
                bar.update(task, completed=step, stats=stats)
                if main:
                    with open(out / "log.jsonl", "a") as f:
                        f.write(json.dumps({"step": step, "loss": mean_loss, "mse": mse,
                                            "reg": reg, "lr": schedule.get_last_lr()[0],
                                            "skipped": skipped, "it_s": rate}) + "\n")
                tic, log = time.perf_counter(), []
            if main and (step % cfg.save_every == 0 or out_of_time or diverged
                         or step == cfg.steps):
                save_checkpoint(model, ema, optimizer, step, ckpt, warmup_from)
            if diverged:
                raise TrainingDiverged(
                    f"{skipped_in_a_row} updates in a row had a non-finite gradient (step "
                    f"{step}); the checkpoint keeps the weights of before")
            if main and step % cfg.sample_every == 0:
                z = ema.z_face(held.clip_code[grid_ids].to(accelerator.device),
                               held.landmarks[grid_ids].to(accelerator.device))
                noise = torch.randn(len(grid_ids), 3, cfg.resolution, cfg.resolution,
                                    generator=torch.Generator().manual_seed(0)).to(z.device)
                ema.eval()
                save_grid(ema.decode(noise, z, 20, clip_sample=True),
                          out / f"samples-{step:07d}.png")
            if out_of_time:
                break
    return ckpt / "ema"


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # One fused update for all tensors: a loop of a few hundred small lerps is launch-bound
    # on a GPU.
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()],
                         1 - decay)


def save_checkpoint(model: DiffusionFaceAutoencoder, ema: DiffusionFaceAutoencoder,
                    optimizer: torch.optim.Optimizer, step: int, ckpt: Path,
                    warmup_from: int = 0) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp / "model")
    ema.save_pretrained(tmp / "ema")
    save_optimizer(optimizer, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step, "warmup_from": warmup_from}))
    replace_dir(tmp, ckpt)
