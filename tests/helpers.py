"""Small helpers the test modules share (pytest puts tests/ on sys.path)."""

import subprocess

import numpy as np

from s3edit.video import binaries


def ffmpeg(*args: object) -> None:
    """Run ffmpeg quietly, failing the test if it fails (used to make test clips)."""
    subprocess.run([binaries.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)],
                   check=True)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (or pixel sets) of the same shape."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))
