"""Per-frame speed and peak memory of the model stages: identity embedding, DDIM inversion and
DDIM decoding, over a grid of step counts and batch sizes.

    python bench/model_speed.py --steps 10 20 50 --batch 1 8 32 --device cpu

Each (steps, batch) cell times ONE encode call and ONE decode call of the pipeline's face model
(`s3edit.model.face_model`, as `Pipeline.from_weights` loads it; `--repeat N` keeps the best of
N), i.e. batch x steps UNet passes each; pick a smaller grid on a slow machine. The model is
untrained unless `--weights` is given: speed depends on the architecture and the resolution
only. A benchmark, not a test.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs
# s3edit sets torch's thread wait policy on import, which must precede torch's: time what apply runs
import s3edit  # noqa: E402, F401

# isort: split

import argparse
import re
import resource
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from common import DEFAULT_VIDEO, add_machine_args, default_data_dir, setup_machine

from s3edit.face.identity import IdentityEncoder
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import IDENTITY_DIM, LANDMARK_DIM
from s3edit.model.face_model import DiffusionFaceModel, load_face_model
from s3edit.options import DEFAULT_REFINE

T = TypeVar("T")



def _vm_kb(field: str) -> int | None:
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found[1]) if found else None


class PeakMemory:
    """Peak memory of one grid cell: CUDA allocator peak, or the process's RSS high-water mark.

    On Linux, writing 5 to /proc/self/clear_refs resets VmHWM, so each cell gets its own peak;
    where that is refused the peak is the process's so far (it can only grow along the grid).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.per_cell = device.type == "cuda" or self._reset_rss()

    @staticmethod
    def _reset_rss() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return _vm_kb("VmHWM") is not None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.per_cell:
            self._reset_rss()

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.per_cell:
            return (_vm_kb("VmHWM") or 0) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def best_time(fn: Callable[[], T], repeat: int, device: torch.device) -> tuple[float, T]:
    """Best wall time of `repeat` calls (the least disturbed by other load), and the result."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":  # kernels run asynchronously
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def face_sample(video: str, data: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """A real frame and its 68 landmarks; a noise image with a made-up box if none is at hand.

    dlib's cost does not depend on the content, but a real face is what the pipeline feeds it.
    """
    path = next((p for p in (Path(video), data / "videos" / video) if p.is_file()), None)
    if path is not None:
        from s3edit.face.landmarks import FaceDetector
        from s3edit.video import probe, read_frames

        frames = read_frames(probe(path))
        frame = next(frames)
        frames.close()
        with FaceDetector(video=False) as detect:
            faces = detect(frame)
        if faces:
            face = max(faces, key=lambda f: f.area)
            return frame, face.lm68, f"first frame of {path}"
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    lm68 = rng.uniform(156, 356, (68, 2)).astype(np.float32)
    return frame, lm68, "noise image (no clip found)"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50], help="DDIM steps")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes")
    add_machine_args(p)
    p.add_argument("--repeat", type=int, default=1, help="calls per cell; the best is kept")
    p.add_argument("--refine", type=int, default=DEFAULT_REFINE,
                   help="fixed-point iterations per inversion step (apply's --refine)")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights folder with autoencoder/ (default: a random-init model)")
    p.add_argument("--resolution", type=int, default=64, help="crop size of the random model")
    p.add_argument("--id-repeat", type=int, default=10,
                   help="identity embeddings to time (one face per call); 0 skips them")
    p.add_argument("--video", default=DEFAULT_VIDEO,
                   help="clip whose first face the identity encoder embeds")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="shared data folder (env S3EDIT_SHARED_DATA)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    device = setup_machine(args)
    if args.weights is not None:
        face_model = load_face_model(args.weights, steps=1, refine=args.refine, device=device)
        label = f"weights {args.weights}"
    else:
        face_model = DiffusionFaceModel(DiffusionFaceAutoencoder(resolution=args.resolution),
                                        1, args.refine, device)
        label = "random init"
    model = face_model.model
    res = model.config.resolution
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model:   {label}, {res}px, {params:.1f} M params; inversion with {args.refine} "
          "fixed-point iterations a step")

    if args.id_repeat > 0:
        frame, lm68, where = face_sample(args.video, args.data)
        encoder = IdentityEncoder()
        encoder([frame], [lm68])  # first call loads dlib's nets into the caches
        times = []
        for _ in range(args.id_repeat):
            start = time.perf_counter()
            encoder([frame], [lm68])
            times.append(time.perf_counter() - start)
        print(f"identity (dlib, one face per call, {where}, {frame.shape[1]}x{frame.shape[0]}): "
              f"best {1000 * min(times):.1f} ms, median {1000 * float(np.median(times)):.1f} ms "
              f"over {len(times)} calls")

    peak = PeakMemory(device)
    if device.type == "cpu":
        print(f"RSS after loading: {(_vm_kb('VmRSS') or 0) / 1024:.0f} MB; peak MB is "
              + ("per cell (VmHWM reset before each)" if peak.per_cell
                 else "the process's so far (VmHWM reset refused)"))

    code_dim = IDENTITY_DIM + model.config.attribute_dim

    def inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crops, a clip code and landmark codes as the pipeline hands them over (on the CPU)."""
        return (torch.rand(batch, 3, res, res) * 2 - 1, torch.randn(code_dim),
                torch.rand(batch, LANDMARK_DIM) * 2 - 1)

    face_model.encode(*inputs(1))  # warm-up: kernels, allocator, thread pool

    print()
    header = (f"{'steps':>6}{'batch':>7}{'invert ms/frame':>17}{'decode ms/frame':>17}"
              f"{'total ms/frame':>16}{'frames/s':>10}{'peak MB':>9}")
    print(header)
    print("-" * len(header))
    for steps in args.steps:
        for batch in args.batch:
            x0, code, landmarks = inputs(batch)
            face_model.steps = steps
            peak.reset()
            t_inv, latents = best_time(partial(face_model.encode, x0, code, landmarks),
                                       args.repeat, device)
            t_dec, _ = best_time(partial(face_model.decode, latents, code, landmarks),
                                 args.repeat, device)
            inv, dec = 1000 * t_inv / batch, 1000 * t_dec / batch
            print(f"{steps:>6}{batch:>7}{inv:>17.1f}{dec:>17.1f}{inv + dec:>16.1f}"
                  f"{1000 / (inv + dec):>10.2f}{peak.peak_mb():>9.0f}", flush=True)
    print()
    print("total = one inversion + one decode per frame; --blend residual-decoded decodes "
          "twice (edit and reconstruction).")


if __name__ == "__main__":
    main()
