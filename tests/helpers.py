"""Small helpers the test modules share (pytest puts tests/ on sys.path)."""

import base64
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from s3edit.video import binaries

# Real clips of the shared data, under DATA/videos, that the tests cut from.
FACE_CLIP = ("videoretalking", "examples", "face", "1.mp4")  # 700x700, 30 fps VFR, audio
BOB_CLIP = ("videoretalking", "examples", "face", "4.mp4")  # a woman whose bob ends at the chin
PCAVS_CLIP = ("pcavs", "Input", "00010.mp4")  # 224x224, 25 fps, audio
PROFILE_CLIP = ("pcavs", "Input", "00002.mp4")  # the one face seen in profile
PORTRAIT_CLIP = ("liveportrait", "driving", "d13.mp4")  # 720x1280, 30 fps, no audio
LONG_CLIP = ("liveportrait", "driving", "d6.mp4")  # 480x480, 30 fps, 34 s


def shared_clip(shared_data: Path, parts: tuple[str, ...]) -> Path:
    """A clip of the shared data; skips the test when it is absent."""
    path = (shared_data / "videos").joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared clip {path} not found")
    return path


def ffmpeg(*args: object) -> None:
    """Run ffmpeg quietly, failing the test if it fails (used to make test clips)."""
    subprocess.run([binaries.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)],
                   check=True)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (or pixel sets) of the same shape."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


# A real mediapipe mesh (frame 0 of videoretalking 1.mp4): face tests need no shared data.
_MESH_B64 = (
    "eNoBvAND/HiuiI2BloFsiYOKdohYRUuKP4wyjwV4sne2drh2uXa9dsJ1x3TShZJ7kBggXFVTVUtUP01jVFU4XjpLOE"
    "M7NFJO3kJID0ooSVF/bqtttGKtWrBktF20Sr2Ai4GCNi9naWaGZYEzeoF2USVCKCgQeDRmP0SzBalsjHOQT7RRtT0h"
    "ZItjKGMgWQAyG14TLiojKG2wY7Fbsm2PULRVt1O1c4petWW2bbdo0GrFa8Bsu223XrVct1q5WbxUowB1g5RYtVe2dZ"
    "RlkXSSXG1McmKFPQVFFE4dUsR4JnUWcwBDUSdYaVI3Pm9jboMaXi9gPWVPZVxjZ19/WRlzLjuBkWdyBUhvW1+GPEdt"
    "fQCOaU94eSHDG88JdRS0GDdJ6ICTXXgdSk5OVVBTuBeIWPc56Cvejhtr+ltQYlBmTyU4YkhbRVVETUVIRg0ySU1/nl"
    "+ebYtznYhMLtI63VrwDr5nTHhnbvNI8QiLZbZjuWK8YcFby1e0VbNTskuqJo53XXJHa0hYtR+mfEhU1IlsgGOJYm91"
    "cOly3WPbQMBWjEjMQIhMlTSYXuZnejXHQdM6sxaZK7MLoEGhcGxxiGmKd4JtPGAzVDFIMj42M0gLXzpXRFtRXFxbZV"
    "lsVwJfZ4x5cHmJfI93i2mQfpB9kmxPclJ2VEVHPkCQbrlaipPSPaRfq2CyYbtenlyzRatFu0i/Tb9ljeO8WM9mx1+m"
    "ioKtf7eLspC3hriLupjFjo2RhMpGmXCcjZyIu4yReL04xj3QK5w7o0ifvbO8lJKOlJW+k73KOJqSsDazLrsRzjK3Ic"
    "1C0UGBs4i2jrmSk5S+kb+SvZOOibuEun65ftN/yH/Cf71+uYm7i72NwI7DnKzBj428j72Ll5WXjJagdqx/nI3KHMcn"
    "wTGRy6EupB6oCrdgxW2bWcRSlWmZicx3wXO4dqtyoW2aZ49byYvJUomSmHnLZZVhmo2/WZmDu6WbVpZ9q9Gl28mOtM"
    "XQUo3thpSegcxislusW5LBw518+ZLum+amWaBYnVfNUKJRqVCvULVSuVXQT7ZalqWVkIqgoNyX5H/yrM6dVJNriPXC"
    "ooS6hr2HwYjGic+PvJG7k7uftLyhkmGXTZtPjby3uJJLi9mQZZZ6f92eyp+WldOwl6Whs6eA6ZmAotGX26a/vq2uwb"
    "y1qK6VcpaNmZCWhp9ErUC4QMBExErCXM16vGm0aqtpomWcYZddxXqXk5Rzko2MkZGOlJWLkomUmFaUV5JZulbBUlZK"
    "X0tXQk5JVlGrVLJWrE2jU6lcohTVSQ=="
)

def real_mesh(scale: float = 1.0, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    raw = np.frombuffer(zlib.decompress(base64.b64decode(_MESH_B64)), np.uint8)
    return raw.reshape(478, 2).astype(np.float32) * scale + np.float32(offset)

def smooth_image(h: int, w: int) -> np.ndarray:
    """A colourful image with only low frequencies, so resampling loses almost nothing."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [128 + 90 * np.sin(x / 37 + k) * np.cos(y / 29 - k) for k in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def celeba_subset(celeba: Path, data: Path, count: int = 16) -> Path:
    """The first `count` faces of a CelebAMask-HQ folder with their labels, copied to `data`;
    skips the test when the folder or its labels are absent."""
    if not (celeba / "CelebAMask-HQ-attribute-anno.txt").is_file():
        pytest.skip(f"{celeba} (CelebAMask-HQ with its attribute labels) not found")
    (data / "CelebA-HQ-img").mkdir(parents=True, exist_ok=True)
    names = [f"{i}.jpg" for i in range(count)]
    for name in names:
        shutil.copy(celeba / "CelebA-HQ-img" / name, data / "CelebA-HQ-img" / name)
    lines = (celeba / "CelebAMask-HQ-attribute-anno.txt").read_text().splitlines()
    rows = [line for line in lines[2:] if line.split()[0] in names]
    (data / "CelebAMask-HQ-attribute-anno.txt").write_text(
        "\n".join([str(len(rows)), lines[1], *rows]) + "\n")
    return data
