"""The image attribute encoder of the conditioning code and its training run."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import celeba_subset

from s3edit.errors import UsageError
from s3edit.face.attributes import AttributeEncoder
from s3edit.train.attribute_encoder import (
    AttributeEncoderTrainConfig,
    load_faces,
    train_attribute_encoder,
)


def crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: noise shrunk from 8x8, so they look like something."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def test_forward_takes_any_crop_size():
    torch.manual_seed(0)
    model = AttributeEncoder().eval()
    with torch.no_grad():
        small, large = model(crops(3, 64)), model(crops(2, 128))
    assert small.shape == (3, 40) and large.shape == (2, 40)
    assert torch.isfinite(small).all() and torch.isfinite(large).all()
    # A 128 px crop is area-shrunk to 64 px inside: the same as shrinking it beforehand.
    x = crops(2, 128, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(F.interpolate(x, size=64, mode="area")))


def test_trains_on_channels_last_crops():
    # Crops permuted from (N, S, S, 3) are channels-last; their backward once corrupted memory.
    torch.manual_seed(0)
    model = AttributeEncoder(widths=(8, 16, 24, 32))
    x = crops(8, 64).contiguous(memory_format=torch.channels_last)
    model(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_codes_are_in_range_and_flip_averaged():
    torch.manual_seed(0)
    model = AttributeEncoder().eval()
    x = crops(4, 96)
    codes = model.codes(x)
    assert codes.shape == (4, 40)
    assert codes.min() >= -1 and codes.max() <= 1
    torch.testing.assert_close(codes, model.codes(x.flip(-1)), atol=1e-6, rtol=0)
    with torch.no_grad():
        plain = 2 * torch.sigmoid(model(x)) - 1
        mirror = 2 * torch.sigmoid(model(x.flip(-1))) - 1
    torch.testing.assert_close(codes, (plain + mirror) / 2, atol=1e-6, rtol=0)
    assert not torch.allclose(plain, mirror), "an untrained net is not mirror-symmetric"

    # In training mode too, a crop's code is that of eval mode, whatever its batch, and the
    # BatchNorm statistics are left alone.
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.testing.assert_close(model.codes(x[:1]), codes[:1], atol=1e-6, rtol=0)
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_save_and_load_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = AttributeEncoder(widths=(8, 16, 24, 32))
    with torch.no_grad():  # move the head and the BatchNorm statistics off their init
        model.head.bias.normal_()
        model(crops(8, 64, seed=2))
    model.eval()
    model.save_pretrained(tmp_path / "enc")
    assert (tmp_path / "enc" / "diffusion_pytorch_model.safetensors").exists()
    loaded = AttributeEncoder.from_pretrained(tmp_path / "enc").eval()
    assert list(loaded.config.widths) == [8, 16, 24, 32]
    assert loaded.index("Eyeglasses") == 15
    x = crops(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    torch.testing.assert_close(loaded.codes(x), model.codes(x), atol=0, rtol=0)


# --- training on a few real faces -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_celeba(shared_data: Path, tmp_path_factory) -> Path:
    """16 CelebAMask-HQ faces with their labels."""
    celeba = shared_data / "CelebAMask-HQ-128"
    if not celeba.is_dir():
        pytest.skip(f"{celeba} not found")
    return celeba_subset(celeba, tmp_path_factory.mktemp("celeba"))


def tiny_config(data: Path, out: Path, **changes) -> AttributeEncoderTrainConfig:
    # Images 0-11 train, 12-15 are held out.
    cfg = AttributeEncoderTrainConfig(data=data, out=out, steps=3, batch_size=4, first=0,
                                      last=12, holdout=4, log_every=1, device="cpu")
    return replace(cfg, **changes)


def test_training_run_writes_a_loadable_encoder(tiny_celeba, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_celeba.parent / "cache"))
    out = train_attribute_encoder(tiny_config(tiny_celeba, tmp_path / "run"), progress=False)
    assert out == tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["batch_size"] == 4
    assert metrics["train_images"] + metrics["held_out_images"] <= 16
    assert metrics["train_images"] >= 10 and metrics["held_out_images"] >= 3
    assert set(metrics["held_out_auc"]) == set(AttributeEncoder().config.attributes)
    assert json.loads((out / "train_config.json").read_text())["last"] == 12
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
            ] == [1, 2, 3]
    encoder = AttributeEncoder.from_pretrained(out)
    assert encoder.codes(crops(2, 128)).shape == (2, 40)


def test_real_faces_split_by_index_and_loss_goes_down(tiny_celeba, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tiny_celeba.parent / "cache"))
    cfg = tiny_config(tiny_celeba, tmp_path)
    (train_x, train_y), (held_x, held_y) = load_faces(cfg, 64)
    assert train_x.dtype == torch.uint8 and train_x.shape[1:] == (3, 64, 64)
    assert len(train_x) == len(train_y) and len(held_x) == len(held_y)
    assert 10 <= len(train_x) <= 12 and 3 <= len(held_x) <= 4

    torch.manual_seed(0)
    model = AttributeEncoder(widths=(8, 16, 24, 32))
    x, y = train_x[:8].float() / 127.5 - 1, train_y[:8]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_refuses_overlap_with_held_out_and_an_empty_cache(tiny_celeba, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UsageError, match="held-out"):
        train_attribute_encoder(tiny_config(tiny_celeba, tmp_path, last=14), progress=False)
    with pytest.raises(UsageError, match="no cached faces"):
        train_attribute_encoder(tiny_config(tiny_celeba, tmp_path, available_only=True),
                                progress=False)
    assert not (tmp_path / "empty-cache" / "faces").exists() or not any(
        (tmp_path / "empty-cache" / "faces").rglob("*.safetensors")), "nothing was built"
