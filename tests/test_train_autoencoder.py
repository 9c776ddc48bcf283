"""`s3edit train autoencoder` on a tiny real folder: runs, checkpoints, resumes, learns."""

import json
import shutil

import pytest
import torch

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.train.autoencoder import (
    AutoencoderTrainConfig,
    FaceBatchSource,
    diffusion_loss,
    load_face_sources,
    train_autoencoder,
)


@pytest.fixture(scope="module")
def tiny_faces(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    for i in range(16):
        shutil.copy(shared_data / "CelebAMask-HQ-128" / "CelebA-HQ-img" / f"{i}.jpg", folder)
    return folder


def config(data, out, steps):
    return AutoencoderTrainConfig(data=data, out=out, resolution=16, steps=steps,
                                  block_out_channels=(8, 16), batch_size=4, save_every=2,
                                  sample_every=2, log_every=1, warmup=1, device="cpu")


def test_train_resumes_from_checkpoint(tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    out = tmp_path / "run"
    ema_dir = train_autoencoder(config(tiny_faces, out, steps=2), progress=False)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 2
    assert (out / "samples-0000002.png").exists()
    first = DiffusionFaceAutoencoder.from_pretrained(ema_dir).state_dict()

    train_autoencoder(config(tiny_faces, out, steps=4), progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4], "resume continues the count"
    resumed = DiffusionFaceAutoencoder.from_pretrained(ema_dir).state_dict()
    assert any(not torch.equal(first[k], resumed[k]) for k in first)
    assert (tiny_faces.parent / "cache" / "faces").is_dir(), "preprocessing is cached"


def test_training_standardises_codes_and_resumes_without_optimizer_state(
        tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    out = tmp_path / "run"
    ema_dir = train_autoencoder(config(tiny_faces, out, steps=1), progress=False)
    train, _ = load_face_sources(config(tiny_faces, out, steps=1))
    ema = DiffusionFaceAutoencoder.from_pretrained(ema_dir)
    codes = torch.cat([train.identity, train.landmarks], 1)
    torch.testing.assert_close(ema.code_mean, codes.mean(0))
    torch.testing.assert_close(ema.code_std, codes.std(0).clamp(min=1e-4))

    # Committed weights carry no optimizer state; training must still resume from them.
    (out / "checkpoint" / "optimizer.safetensors").unlink()
    train_autoencoder(config(tiny_faces, out, steps=2), progress=False)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 2


def test_loss_goes_down_on_a_fixed_batch(tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    train, _ = load_face_sources(config(tiny_faces, tmp_path, steps=1))
    batch = FaceBatchSource(*(t[:4] for t in train.tensors()))
    torch.manual_seed(0)
    model = DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16))
    alphas = model.schedulers()[0].alphas_cumprod
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss_now():
        torch.manual_seed(1)  # the same timesteps and noise every time: a fixed batch
        z = model.z_face(batch.identity, batch.landmarks)
        return diffusion_loss(model, alphas, batch.images, z, batch.masks, 1.0)[0]

    start = loss_now().item()
    for _ in range(30):
        optimizer.zero_grad()
        loss_now().backward()
        optimizer.step()
    assert loss_now().item() < 0.7 * start


def test_fusion_learning_rate_is_its_own(tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    cfg = config(tiny_faces, tmp_path / "run", steps=1)
    cfg.fusion_lr_scale, cfg.ema_decay = 0.0, 0.0  # the EMA copy then equals the trained model
    ema_dir = train_autoencoder(cfg, progress=False)
    torch.manual_seed(cfg.seed)  # the same initial weights as the run
    initial = DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16)).state_dict()
    trained = DiffusionFaceAutoencoder.from_pretrained(ema_dir).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert any(k.startswith("unet.") for k in changed), "the UNet trains"
    assert not any(k.startswith("fusion.") for k in changed), "a zero rate keeps the fusion"



def test_fresh_run_fits_its_code_template(tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    cfg = config(tiny_faces, tmp_path / "run", steps=1)
    cfg.template_resolution, cfg.ema_decay = 4, 0.0
    model = DiffusionFaceAutoencoder.from_pretrained(train_autoencoder(cfg, progress=False))
    train, _ = load_face_sources(cfg)
    coarse = torch.nn.functional.interpolate(train.images, size=4, mode="area")
    with torch.no_grad():
        codes = model.z_face(train.identity, train.landmarks)[:, -230:]
        template = model.code_template(codes).view_as(coarse)
    own = (template - coarse).abs().mean()
    assert own < 0.8 * (coarse - coarse.mean(0)).abs().mean(), "better than the mean face"
    assert own < 0.8 * (template - coarse.roll(1, 0)).abs().mean(), "closer to its own face"
