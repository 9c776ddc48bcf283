"""A packed training set (`s3edit train pack`) and the lent-GPU script (scripts/gpu_train.py),
on real faces, on CPU, with mediapipe and dlib unimportable as on the GPU machine."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from helpers import celeba_subset

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import ATTRIBUTE_DIM
from s3edit.train.autoencoder import AutoencoderTrainConfig, load_face_sources, psnr
from s3edit.train.pack import write_pack

REPO = Path(__file__).resolve().parents[1]
# What the GPU machine lacks: importing any of them there fails.
BLOCK = ("import sys\nfor m in ('mediapipe', 'dlib', 'imageio_ffmpeg', 'ffmpeg'):\n"
         "    sys.modules[m] = None\n")


def packed(shared_data, tmp_path, monkeypatch, resolution=16):
    monkeypatch.setenv("S3EDIT_CACHE", str(tmp_path / "cache"))
    data = celeba_subset(shared_data / "CelebAMask-HQ-128", tmp_path / "celeba", 16)
    folder = AutoencoderTrainConfig(data=data, out=tmp_path / "run", resolution=resolution)
    return folder, write_pack(folder, tmp_path / "faces.npz")


def test_pack_reproduces_the_folders_training_tensors(shared_data, tmp_path, monkeypatch):
    folder, pack = packed(shared_data, tmp_path, monkeypatch, resolution=64)
    for dim in (0, ATTRIBUTE_DIM):
        want, _ = load_face_sources(folder, dim)
        got, held = load_face_sources(AutoencoderTrainConfig(data=pack, out=folder.out), dim)
        assert len(got) == len(want) == 16 and len(held) == 16
        assert torch.allclose(got.clip_code, want.clip_code, atol=1e-3)
        assert torch.allclose(got.landmarks, want.landmarks, atol=2e-3)
        assert torch.equal(got.masks, want.masks)
        assert torch.equal(got.labels, want.labels)
        quality = psnr(got.images, want.images)
        assert quality.min() > 32, quality  # WebP at quality 90: about 38 dB at 64 px
    # 32 faces: a folder smaller than a shard has no held-out part, its 16 grid faces repeat.
    assert pack.stat().st_size < 32 * 2500, "about 2 KB a face at 64 px"


def test_gpu_script_trains_from_a_pack_and_writes_bf16_shards(shared_data, tmp_path,
                                                               monkeypatch):
    _, pack = packed(shared_data, tmp_path, monkeypatch)
    start = tmp_path / "start"
    torch.manual_seed(0)
    DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16),
                             attribute_dim=ATTRIBUTE_DIM).save_pretrained(start)
    out = tmp_path / "out"
    argv = [str(pack), str(out), "--start", str(start), "--step", "5", "--steps", "2",
            "--run", str(tmp_path / "gpu-run"), "--batch-size", "4", "--device", "cpu",
            "--max-shard-size", "600KB", "--log-every", "1", "--oversample", "eyeglasses",
            "blond_hair+male"]
    code = BLOCK + ("import runpy\nsys.argv = ['gpu_train.py', *sys.argv[1:]]\n"
                    "runpy.run_path('scripts/gpu_train.py', run_name='__main__')\n")
    subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, check=True)

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["start_step"], summary["end_step"]) == (5, 7)
    # As the committed weights were trained: no x0 regulariser, rare faces oversampled.
    assert summary["config"]["reg_weight"] == 0
    assert summary["config"]["oversample"] == ["Eyeglasses", "Blond_Hair+Male"]
    assert (out / "log.jsonl").is_file()
    shards = sorted((out / "ema").glob("*.safetensors"))
    assert len(shards) > 1, "sharding happened"
    assert all(s.stat().st_size <= 600_000 + 20_000 for s in shards), "header aside"
    ema = DiffusionFaceAutoencoder.from_pretrained(tmp_path / "gpu-run" / "checkpoint" / "ema")
    back = DiffusionFaceAutoencoder.from_pretrained(out / "ema")
    assert {p.dtype for p in back.parameters()} == {torch.float32}, "loads for CPU inference"
    for (name, p), q in zip(ema.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.allclose(p, q, rtol=1e-2, atol=1e-6), name  # bf16 keeps 8 bits
    assert torch.equal(ema.code_mean, back.code_mean), "buffers stay float32"


def test_gpu_tree_slims_the_weights_a_lease_carries_and_restores_them(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "PYTHONPATH": str(clone)}

    def tree(verb):
        return subprocess.run(["bash", "scripts/gpu_tree.sh", verb], cwd=clone, env=env,
                              check=True, capture_output=True, text=True).stdout

    weights = clone / "weights"
    # Copied: the loaded tensors map the file, which slim rewrites in place.
    committed = [p.detach().clone() for p in
                 DiffusionFaceAutoencoder.from_pretrained(weights / "autoencoder").parameters()]
    full = (weights / "autoencoder" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert "a lease would carry" in tree("slim")
    slim = DiffusionFaceAutoencoder.from_pretrained(weights / "autoencoder")
    assert (weights / "autoencoder" / "diffusion_pytorch_model.safetensors").stat().st_size \
        < 0.6 * full
    for p, q in zip(committed, slim.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-2, atol=1e-6)  # the start, to bf16's 8 bits
    others = [f for f in weights.rglob("*.safetensors") if f.parent.name != "autoencoder"]
    assert others and all(f.stat().st_size == 0 for f in others)

    tree("restore")
    status = subprocess.run(["git", "status", "--porcelain", "weights"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == ""
