"""The optional face backends: face-alignment's FAN for the 68 landmarks (`--landmarks fan`) and
facexlib's BiSeNet face parsing for the paste mask (`--mask bisenet`).

Neither package is in the default install (README: Optional face backends). Both download
their weights on first use; s3edit never lets them: it looks for each file where its package
keeps it and, when the file is absent, says in one line which file to put in which folder.
Both work on the face that mediapipe found and the tracker follows, so face-alignment's own
detector (SFD, with weights of its own) is not needed: FAN is given the box of that face's 68
mesh points, and BiSeNet the aligned crop of its square.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from s3edit.errors import S3EditError
from s3edit.face.landmarks import Face, landmarks68

INSTALL = ("pip install scikit-image numba && "
           "pip install --no-deps face-alignment==1.5.0 facexlib==0.3.0")
# A folder holding facexlib's weights, for when its package folder is not writable.
FACEXLIB_WEIGHTS_ENV = "S3EDIT_FACEXLIB_WEIGHTS"
BISENET_FILE = "parsing_bisenet.pth"
# Where facexlib 0.3.0's init_parsing_model downloads it from (named inside that function).
BISENET_URL = f"https://github.com/xinntao/facexlib/releases/download/v0.2.0/{BISENET_FILE}"
BISENET_CLASSES = 19
# BiSeNet's input: RGB in [0, 1] normalised with ImageNet's statistics (facexlib's
# inference_parsing.py).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_PARSING_PACKAGE = "_s3edit_facexlib_parsing"


def _not_importable(flag: str, package: str, error: ImportError) -> S3EditError:
    return S3EditError(f"{flag} needs the {package} package, which could not be imported "
                       f"({error}); install it with: {INSTALL}")


def fan_weights() -> Path:
    """FAN's weights file, in torch's hub checkpoints folder where face-alignment keeps it."""
    try:
        from face_alignment.api import models_urls
    except ImportError as error:
        raise _not_importable("--landmarks fan", "face-alignment", error) from None
    url = models_urls["2DFAN-4"]
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if not path.is_file():
        raise S3EditError(f"--landmarks fan needs FAN's weights {path.name} in {path.parent} "
                          f"($TORCH_HOME/hub/checkpoints); download it from {url}")
    return path


def bisenet_weights() -> Path:
    """BiSeNet's weights file: in $S3EDIT_FACEXLIB_WEIGHTS when set, else in facexlib's own
    weights folder, where its init_parsing_model keeps it."""
    folder = os.environ.get(FACEXLIB_WEIGHTS_ENV)
    where = f"${FACEXLIB_WEIGHTS_ENV}" if folder else f"or a folder set in ${FACEXLIB_WEIGHTS_ENV}"
    path = Path(folder or _facexlib_folder() / "weights") / BISENET_FILE
    if not path.is_file():
        raise S3EditError(f"--mask bisenet needs BiSeNet's weights {BISENET_FILE} in "
                          f"{path.parent} ({where}); download it from {BISENET_URL}")
    return path


def bisenet_present() -> bool:
    """Whether `--mask bisenet` would load: facexlib installed and its weights in place."""
    try:
        bisenet_weights()
    except S3EditError:
        return False
    return True


def check_backends(landmarks: str, mask: str) -> None:
    """Fail in one line, before any work, when a chosen backend's package or weights are
    missing ('mediapipe' and 'mesh' need nothing)."""
    if landmarks == "fan":
        fan_weights()
    if mask == "bisenet":
        bisenet_weights()


@contextmanager
def _loading(path: Path) -> Iterator[None]:
    """A weights file that does not load (truncated, another network's) as one line."""
    try:
        yield
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise S3EditError(f"{path} does not load: {type(error).__name__}: {first}") from None


class FanLandmarker:
    """FAN's 68 iBUG points for a face mediapipe found: `landmarker(frame, face)` gives the face
    with `points68` set, (68, 2) float32 in the frame's pixels. `frame` is (h, w, 3) uint8 RGB.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        path = fan_weights()
        import face_alignment

        with _loading(path):
            # The "folder" detector reads boxes from files and loads no weights: the boxes
            # come from mediapipe. No torch.compile: a minute's compilation for a short clip.
            # No flipped second pass: FAN is the slow part of tracking on a CPU.
            self.aligner = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=str(device), flip_input=False,
                face_detector="folder", compile=False)

    def __call__(self, frame: np.ndarray, face: Face) -> Face:
        points = landmarks68(face.mesh)
        box = np.concatenate([points.min(0), points.max(0)])  # like a detector's face box
        fitted = self.aligner.get_landmarks_from_image(frame, detected_faces=[box])[0]
        return dataclasses.replace(face, points68=np.asarray(fitted[:, :2], np.float32))


def bisenet_class() -> type[torch.nn.Module]:
    """facexlib's BiSeNet network class (its face parsing model)."""
    if _PARSING_PACKAGE not in sys.modules:
        # facexlib/__init__.py imports every part of facexlib, torchvision's detectors
        # included, and PyPI builds torchvision for one torch release; BiSeNet needs torch
        # alone, so its folder is imported as a package of its own, without that __init__.
        package = types.ModuleType(_PARSING_PACKAGE)
        package.__path__ = [str(_facexlib_folder() / "parsing")]
        sys.modules[_PARSING_PACKAGE] = package
    return importlib.import_module(f"{_PARSING_PACKAGE}.bisenet").BiSeNet


def _facexlib_folder() -> Path:
    """facexlib's package folder, found without importing it."""
    spec = importlib.util.find_spec("facexlib")
    if spec is None or not spec.submodule_search_locations:
        raise _not_importable("--mask bisenet", "facexlib",
                              ImportError("No module named 'facexlib'"))
    return Path(spec.submodule_search_locations[0])


class FaceParser:
    """facexlib's BiSeNet on aligned face crops: `parser(crops)` takes (N, size, size, 3) uint8
    RGB crops and gives their (N, size, size) uint8 classes (s3edit.face.mask lists them)."""

    size = 512  # the side BiSeNet was trained at
    batch_size = 8

    def __init__(self, device: str | torch.device = "cpu"):
        path = bisenet_weights()
        self.device = torch.device(device)
        net = bisenet_class()(num_class=BISENET_CLASSES)
        with _loading(path):
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net = net.to(self.device).eval()
        self.mean = torch.tensor(_IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(_IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"crops are {crops.shape}, expected (N, {self.size}, {self.size}, 3)")
        labels = []
        for start in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(crops[start:start + self.batch_size]).to(self.device)
            x = (x.permute(0, 3, 1, 2).float() / 255 - self.mean) / self.std
            logits = self.net(x)[0]  # the full-resolution head; the others guide training
            labels.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
        return np.concatenate(labels)
