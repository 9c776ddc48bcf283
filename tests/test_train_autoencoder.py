"""`s3edit train autoencoder` on a tiny real folder: runs, checkpoints, resumes, learns."""

import json
import math
import shutil

import pytest
import torch

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.errors import UsageError
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import ATTRIBUTE_DIM, IDENTITY_DIM, LANDMARK_DIM
from s3edit.train import autoencoder
from s3edit.train.autoencoder import (
    AutoencoderTrainConfig,
    FaceBatchSource,
    TrainingDiverged,
    checkpoint_resolution,
    diffusion_loss,
    load_face_sources,
    train_autoencoder,
)
from s3edit.train.celeba import ANNOTATION_FILE


@pytest.fixture(scope="module")
def tiny_faces(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    for i in range(16):
        shutil.copy(shared_data / "CelebAMask-HQ-128" / "CelebA-HQ-img" / f"{i}.jpg", folder)
    return folder


@pytest.fixture(scope="module")
def tiny_labelled_faces(tiny_faces, shared_data, tmp_path_factory):
    """The same 16 faces (links to them: the image cache is shared) with the CelebA labels of
    the first 12: the last 4 have none."""
    folder = tmp_path_factory.mktemp("labelled")
    for image in tiny_faces.iterdir():
        (folder / image.name).symlink_to(image)
    lines = (shared_data / "CelebAMask-HQ-128" / ANNOTATION_FILE).read_text().splitlines()
    names = {p.name for p in tiny_faces.iterdir()}
    kept = [line for line in lines[2:] if line.split()[0] in names][:12]
    assert [line.split()[0] for line in kept] == [f"{i}.jpg" for i in range(12)]
    (folder / ANNOTATION_FILE).write_text("\n".join([str(len(kept)), lines[1], *kept]) + "\n")
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


def test_a_run_resumed_at_another_resolution_fine_tunes_there(tiny_faces, tmp_path,
                                                              monkeypatch, run_s3edit):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    out = tmp_path / "run"
    train_autoencoder(config(tiny_faces, out, steps=2), progress=False)
    assert checkpoint_resolution(out / "checkpoint") == 16
    before = DiffusionFaceAutoencoder.from_pretrained(out / "checkpoint" / "model").state_dict()

    cfg = config(tiny_faces, out, steps=4)
    cfg.resolution = 32
    ema_dir = train_autoencoder(cfg, progress=False)
    assert checkpoint_resolution(out / "checkpoint") == 32
    for part in (ema_dir, out / "checkpoint" / "model"):
        model = DiffusionFaceAutoencoder.from_pretrained(part)
        assert model.config.resolution == model.unet.config.sample_size == 32
    after = model.state_dict()
    assert before.keys() == after.keys(), "the same weights, trained on"
    assert any(not torch.equal(before[k], after[k]) for k in before)
    x = torch.zeros(1, 3, 32, 32)
    z = model.z_face(torch.zeros(1, IDENTITY_DIM), torch.zeros(1, LANDMARK_DIM))
    assert model(x, torch.tensor([500]), z).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        model.retarget(21)

    # The command line resumes at the checkpoint's resolution unless told otherwise.
    proc = run_s3edit("train", "autoencoder", "--data", tiny_faces, "--out", out, "--steps", 5,
                      "--batch-size", 4, "--no-attributes", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 5
    assert checkpoint_resolution(out / "checkpoint") == 32


def test_training_standardises_codes_and_resumes_without_optimizer_state(
        tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    out = tmp_path / "run"
    ema_dir = train_autoencoder(config(tiny_faces, out, steps=1), progress=False)
    train, _ = load_face_sources(config(tiny_faces, out, steps=1))
    ema = DiffusionFaceAutoencoder.from_pretrained(ema_dir)
    codes = torch.cat([train.clip_code, train.landmarks], 1)
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
        z = model.z_face(batch.clip_code, batch.landmarks)
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
        codes = model.z_face(train.clip_code, train.landmarks)[:, -230:]
        template = model.code_template(codes).view_as(coarse)
    own = (template - coarse).abs().mean()
    assert own < 0.8 * (coarse - coarse.mean(0)).abs().mean(), "better than the mean face"
    assert own < 0.8 * (template - coarse.roll(1, 0)).abs().mean(), "closer to its own face"


def test_max_minutes_stops_after_one_step_with_a_checkpoint(tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    out = tmp_path / "run"
    cfg = config(tiny_faces, out, steps=5)
    cfg.max_minutes, cfg.save_every, cfg.sample_every = 0, 100, 100
    ema_dir = train_autoencoder(cfg, progress=False)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 1
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1]
    assert DiffusionFaceAutoencoder.from_pretrained(ema_dir).config.resolution == 16


def nan_loss_on(monkeypatch, calls):
    """Make the training loss NaN on the given (1-based) calls, as a kernel that returns NaN
    gradients would."""
    loss_fn, seen = autoencoder.diffusion_loss, []

    def flaky(*args, **kwargs):
        seen.append(1)
        loss, parts = loss_fn(*args, **kwargs)
        return (loss * float("nan"), parts) if len(seen) in calls else (loss, parts)

    monkeypatch.setattr(autoencoder, "diffusion_loss", flaky)


def all_finite(folder):
    return all(torch.isfinite(t).all() for t in
               DiffusionFaceAutoencoder.from_pretrained(folder).state_dict().values())


def test_an_update_with_a_non_finite_gradient_is_skipped(tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    nan_loss_on(monkeypatch, {2})
    out = tmp_path / "run"
    ema_dir = train_autoencoder(config(tiny_faces, out, steps=3), progress=False)
    assert all_finite(ema_dir) and all_finite(out / "checkpoint" / "model")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["skipped"] for entry in log] == [0, 1, 1]
    assert all(math.isfinite(entry["loss"]) for entry in log if entry["step"] != 2)


def test_non_finite_gradients_in_a_row_end_the_run_with_finite_weights(
        tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    nan_loss_on(monkeypatch, set(range(2, 10)))
    out = tmp_path / "run"
    cfg = config(tiny_faces, out, steps=8)
    cfg.max_skipped_in_a_row, cfg.save_every = 3, 100
    with pytest.raises(TrainingDiverged):
        train_autoencoder(cfg, progress=False)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 4
    assert all_finite(out / "checkpoint" / "model") and all_finite(out / "checkpoint" / "ema")


def test_a_restart_without_optimizer_state_warms_up_again(tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    out = tmp_path / "run"
    cfg = config(tiny_faces, out, steps=2)
    cfg.warmup = 4
    train_autoencoder(cfg, progress=False)
    (out / "checkpoint" / "optimizer.safetensors").unlink()  # as committed weights are
    cfg.steps = 4
    train_autoencoder(cfg, progress=False)
    rates = [json.loads(line)["lr"] / cfg.lr
             for line in (out / "log.jsonl").read_text().splitlines()]
    # The rate each logged step leaves for the next one: 2/4, 3/4, then the same again.
    assert rates == pytest.approx([0.5, 0.75, 0.5, 0.75])


def annotation_labels(folder, count):
    """The first `count` rows of the folder's annotation file as (count, 40) {0, 1} labels,
    read here independently of s3edit's parser."""
    lines = (folder / ANNOTATION_FILE).read_text().splitlines()
    names = lines[1].split()
    rows = [line.split()[1:] for line in lines[2:2 + count]]
    return torch.tensor([[float(row[names.index(a)]) > 0 for a in ATTRIBUTES] for row in rows]
                        ).float()


def test_attribute_code_run_conditions_on_the_labels(tiny_labelled_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_labelled_faces.parent / "cache"))
    out = tmp_path / "run"
    cfg = config(tiny_labelled_faces, out, steps=1)
    cfg.attribute_code = True
    model = DiffusionFaceAutoencoder.from_pretrained(train_autoencoder(cfg, progress=False))
    width = IDENTITY_DIM + ATTRIBUTE_DIM + LANDMARK_DIM
    assert model.config.attribute_dim == ATTRIBUTE_DIM
    assert model.clip_code_dim == IDENTITY_DIM + ATTRIBUTE_DIM
    assert model.code_mean.shape == model.code_std.shape == (width,)
    assert model.fusion[0].in_features == width

    train, _ = load_face_sources(cfg, ATTRIBUTE_DIM)
    assert len(train) == 16, "every tiny face is found (the rows below follow the file order)"
    labels = annotation_labels(tiny_labelled_faces, 12)
    torch.testing.assert_close(train.labels[:12], labels)
    torch.testing.assert_close(train.clip_code[:12, IDENTITY_DIM:], labels * 2 - 1)
    # Faces without labels are undecided: 0 in the code.
    torch.testing.assert_close(train.clip_code[12:, IDENTITY_DIM:], torch.zeros(4, ATTRIBUTE_DIM))
    torch.testing.assert_close(train.clip_code[:, :IDENTITY_DIM].norm(dim=1), torch.ones(16))
    codes = torch.cat([train.clip_code, train.landmarks], 1)
    torch.testing.assert_close(model.code_mean, codes.mean(0))

    # A resumed run keeps its checkpoint's code, whatever the new config says.
    cfg = config(tiny_labelled_faces, out, steps=2)
    resumed = DiffusionFaceAutoencoder.from_pretrained(train_autoencoder(cfg, progress=False))
    assert resumed.config.attribute_dim == ATTRIBUTE_DIM
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 2


def test_attribute_code_needs_labels(tiny_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_faces.parent / "cache"))
    cfg = config(tiny_faces, tmp_path / "run", steps=1)
    cfg.attribute_code = True
    with pytest.raises(UsageError, match="attribute labels"):
        train_autoencoder(cfg, progress=False)
    # Without attributes a plain folder of faces is enough: its labels are undecided.
    train, _ = load_face_sources(cfg)
    assert train.clip_code.shape == (16, IDENTITY_DIM)
    torch.testing.assert_close(train.labels, torch.full((16, ATTRIBUTE_DIM), 0.5))


def labelled_source(labels: torch.Tensor) -> FaceBatchSource:
    n = len(labels)
    return FaceBatchSource(torch.zeros(n, 3, 2, 2), torch.zeros(n, IDENTITY_DIM),
                           torch.zeros(n, LANDMARK_DIM), torch.ones(n, 1, 2, 2), labels)


def test_oversampling_gives_a_rare_attribute_its_share():
    n, gen = 1000, torch.Generator().manual_seed(0)
    eyeglasses, smiling = ATTRIBUTES.index("Eyeglasses"), ATTRIBUTES.index("Smiling")
    labels = torch.zeros(n, ATTRIBUTE_DIM)
    labels[torch.randperm(n, generator=gen)[:50], eyeglasses] = 1  # 5%
    labels[torch.randperm(n, generator=gen)[:500], smiling] = 1  # 50%
    source = labelled_source(labels)
    weights = source.sampling_weights(("Eyeglasses",), 0.2)
    positive = labels[:, eyeglasses] > 0.5
    assert abs(weights[positive].sum() / weights.sum() - 0.2) < 1e-4
    assert weights[positive].unique().numel() == 1 and weights[~positive].unique().numel() == 1
    draws = torch.multinomial(weights, 200_000, replacement=True,
                              generator=torch.Generator().manual_seed(1))
    assert abs(positive[draws].float().mean().item() - 0.2) < 0.005

    ones = torch.ones(n)
    # Attributes already drawn at least that often are left alone...
    torch.testing.assert_close(source.sampling_weights(("Smiling",), 0.2), ones)
    torch.testing.assert_close(source.sampling_weights(("Eyeglasses",), 0.04), ones)
    torch.testing.assert_close(source.sampling_weights(("Eyeglasses", "Smiling"), 0.2), weights)
    # ...and so is one no image has.
    torch.testing.assert_close(source.sampling_weights(("Bald",), 0.2), ones)
    torch.testing.assert_close(source.sampling_weights((), 0.2), ones)

    # 'A+B' draws the images with both: here the smiling half of the eyeglasses images.
    both = positive & (labels[:, smiling] > 0.5)
    weights = source.sampling_weights(("Eyeglasses+Smiling",), 0.2)
    assert 0 < both.sum() < positive.sum()
    assert abs(weights[both].sum() / weights.sum() - 0.2) < 1e-4
    assert weights[positive & ~both].unique().tolist() == [1.0]
