"""Data-parallel training and batch apply under torchrun: 2 CPU processes, gloo backend.

Run as a script, this file is the torchrun worker of the training test.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import cli_env
from helpers import FACE_CLIP, PCAVS_CLIP, celeba_subset, ffmpeg, shared_clip
from safetensors.torch import load_file, save_file

from s3edit.metrics.attributes import load_image_classifier
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.train import autoencoder
from s3edit.train.autoencoder import (
    AutoencoderTrainConfig,
    TrainingLoss,
    draw_step_batch,
    load_face_sources,
    train_autoencoder,
)


def torchrun(processes: int, *args: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N ARGS` (a free port of its own)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def faces(shared_data, tmp_path_factory):
    """Eight real faces, their preprocessing cache built here (the processes only read it)."""
    root = tmp_path_factory.mktemp("dp")
    folder = root / "faces"
    folder.mkdir()
    for i in range(8):
        shutil.copy(shared_data / "CelebAMask-HQ-128" / "CelebA-HQ-img" / f"{i}.jpg", folder)
    env = dict(os.environ, S3EDIT_CACHE=str(root / "cache"), OMP_NUM_THREADS="1")
    os.environ["S3EDIT_CACHE"] = env["S3EDIT_CACHE"]
    try:
        load_face_sources(config(folder, root / "unused", 1, 1))
    finally:
        del os.environ["S3EDIT_CACHE"]
    return folder, env


def config(data: Path, out: Path, steps: int, batch_size: int) -> AutoencoderTrainConfig:
    # fp32: bf16 rounding would hide a real mismatch behind the tolerance.
    return AutoencoderTrainConfig(data=data, out=out, resolution=16, block_out_channels=(8, 16),
                                  steps=steps, batch_size=batch_size, warmup=1, log_every=1,
                                  save_every=100, sample_every=2, bf16=False, device="cpu")


def checkpoint_model(out: Path) -> dict[str, torch.Tensor]:
    return DiffusionFaceAutoencoder.from_pretrained(out / "checkpoint" / "model").state_dict()


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_two_processes_train_one_model_as_one_process_with_twice_the_batch(
        faces, tmp_path, monkeypatch):
    data, env = faces
    monkeypatch.setenv("S3EDIT_CACHE", env["S3EDIT_CACHE"])
    single, double = tmp_path / "single", tmp_path / "double"
    train_autoencoder(config(data, single, steps=3, batch_size=4), progress=False)
    cfg = config(data, double, steps=3, batch_size=2)
    run = torchrun(2, __file__, json.dumps(asdict(cfg), default=str), env=env)

    ranks = [load_file(str(double / f"rank{r}.safetensors")) for r in range(2)]
    assert ranks[0].keys() == checkpoint_model(double).keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0]), \
        "the gradients were all-reduced: both processes hold the same weights"
    assert_same_training(checkpoint_model(double), checkpoint_model(single), data, steps=3)
    assert [e["step"] for e in log_lines(double)] == [1, 2, 3], "one line a step, one writer"
    for a, b in zip(log_lines(single), log_lines(double), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), "the loss of the whole batch"
    assert (double / "samples-0000002.png").exists()
    assert "Traceback" not in run.stderr and "destroy_process_group" not in run.stderr

    # Resumed by one process with the same global batch, the run goes on as if unbroken.
    train_autoencoder(config(data, double, steps=4, batch_size=4), progress=False)
    train_autoencoder(config(data, single, steps=4, batch_size=4), progress=False)
    assert [e["step"] for e in log_lines(double)] == [1, 2, 3, 4]
    assert_same_training(checkpoint_model(double), checkpoint_model(single), data, steps=4)


def null_gradient_parameters(data: Path) -> set[str]:
    """Parameters whose gradient is zero but for rounding (biases just before a GroupNorm,
    which removes them): Adam scales that noise up to steps of the learning rate's size, so
    how the batch is split moves them by up to lr a step. Found from step 0's gradient."""
    cfg = config(data, data, steps=1, batch_size=4)
    train, _ = load_face_sources(cfg)
    torch.manual_seed(cfg.seed)
    model = DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16))
    model.set_code_statistics(train.clip_code, train.landmarks)
    weights = train.sampling_weights(cfg.oversample, cfg.oversample_share)
    batch = draw_step_batch(train, weights, model.config.num_train_timesteps, cfg, 0,
                            slice(0, 4), 1, torch.device("cpu"))
    x0, code, lms, mask, _ = batch.tensors
    TrainingLoss(model, cfg)(x0, code, lms, mask, batch.t, batch.noise,
                             batch.mask_area)[0].backward()
    largest = max(p.grad.abs().max() for p in model.parameters())
    return {name for name, p in model.named_parameters() if p.grad.abs().max() < 1e-7 * largest}


def assert_same_training(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor],
                         data: Path, steps: int) -> None:
    null = null_gradient_parameters(data)
    assert len(null) < 20, "only a few biases"
    lr = AutoencoderTrainConfig.lr
    for key in want:
        if key in null:
            assert (got[key] - want[key]).abs().max() <= lr * steps, key
        else:
            # Summing the gradient in another order rounds it otherwise, and Adam carries
            # that into the weights: up to 1.5e-5 after 3 steps with torch 2.13 (a step moves
            # a weight by up to lr, 2e-4). A batch split wrongly moves them by about a step.
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=lr / 4, msg=key)


def test_torchrun_trains_the_image_classifier(shared_data, tmp_path):
    data = celeba_subset(shared_data / "CelebAMask-HQ-128", tmp_path / "celeba")
    env = dict(cli_env(), OMP_NUM_THREADS="1", S3EDIT_CACHE=str(tmp_path / "cache"))
    run = torchrun(2, "-m", "s3edit", "train", "image-classifier", "--data", data, "--out",
                   tmp_path / "out", "--steps", 2, "--batch-size", 2, "--device", "cpu",
                   env=env)
    folder = tmp_path / "out" / "image_classifier"
    assert run.stdout.splitlines() == [str(folder)] * 2
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["train_images"] == 16 and metrics["steps"] == 2
    assert load_image_classifier(folder).config.resolution == 64


@pytest.fixture(scope="module")
def clips(shared_data, tmp_path_factory) -> Path:
    """Three short clips of real faces (an odd count: the processes get 2 and 1)."""
    folder = tmp_path_factory.mktemp("clips")
    face, pcavs = shared_clip(shared_data, FACE_CLIP), shared_clip(shared_data, PCAVS_CLIP)
    for name, src, start in (("a", pcavs, 0), ("b", face, 0), ("c", face, 1)):
        ffmpeg("-ss", start, "-i", src, "-frames:v", 6, "-vf", "scale=160:160", "-an",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", folder / f"{name}.mp4")
    return folder


def test_torchrun_apply_shares_a_folder_between_processes(clips, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(cli_env(), OMP_NUM_THREADS="1")
    args = ("-m", "s3edit", "apply", clips, "--out-dir", out, "--attr", "eyeglasses",
            "--scale", "0", "--no-model", "--json")
    run = torchrun(2, *args, env=env)
    records = [json.loads(line) for line in run.stdout.splitlines()]
    inputs = sorted(clips.glob("*.mp4"))
    assert sorted(r["input"] for r in records) == [str(p) for p in inputs], "one line an input"
    assert {r["status"] for r in records} == {"ok"}
    assert sorted(p.name for p in out.iterdir()) == [f"{p.stem}.eyeglasses+0.mp4"
                                                     for p in inputs], "no temporary left"
    assert run.stderr.count("3 inputs (0 done already) shared by 2 processes") == 1
    assert run.stderr.count("3 inputs: 3 written, 0 skipped (exist), 0 failed, by 2 processes") == 1

    # A crash lost one output: the rerun writes it and leaves the others as they are.
    written = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    lost = out / "b.eyeglasses+0.mp4"
    lost.unlink()
    run = torchrun(2, *args, env=env)
    records = {Path(r["input"]).name: r["status"] for r in map(json.loads, run.stdout.splitlines())}
    assert records == {"a.mp4": "skipped (exists)", "b.mp4": "ok", "c.mp4": "skipped (exists)"}
    assert all(p.stat().st_mtime_ns == t for p, t in written.items() if p != lost)
    assert lost.exists()
    assert run.stderr.count("shared by 2 processes") == 1
    assert run.stderr.count("3 inputs: 1 written, 2 skipped (exist), 0 failed, by 2 processes") == 1


def worker(cfg: AutoencoderTrainConfig) -> None:
    """Train under torchrun, then save this process's final weights as OUT/rankR."""
    trained = {}
    update_ema = autoencoder.update_ema

    def keep_model(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
        trained["model"] = model
        update_ema(ema, model, decay)

    autoencoder.update_ema = keep_model
    train_autoencoder(cfg, progress=False)
    state = {k: v.contiguous() for k, v in trained["model"].state_dict().items()}
    save_file(state, str(cfg.out / f"rank{os.environ['RANK']}.safetensors"))


if __name__ == "__main__":
    fields = json.loads(sys.argv[1])
    base = AutoencoderTrainConfig(data=Path(fields.pop("data")), out=Path(fields.pop("out")))
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    worker(replace(base, **fields))
