"""Finding and loading the weights folder: the autoencoder and the editors, with a manifest.

Layout (each part optional):
    weights/manifest.json           sha256, command, data and quality of every file
    weights/autoencoder/            config.json + diffusion_pytorch_model.safetensors
    weights/editors/<name>/         config.json + safetensors of one editor
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from s3edit.errors import S3EditError
from s3edit.storage import sha256

REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def default_weights_dir() -> Path:
    return Path(os.environ.get("S3EDIT_WEIGHTS", REPO_WEIGHTS))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise S3EditError("--device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(device)


def manifest(weights_dir: Path) -> dict:
    path = weights_dir / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"files": {}}


def verify(weights_dir: Path) -> dict[str, str]:
    """Each file the manifest lists -> 'ok', 'missing' or 'checksum mismatch'."""
    status = {}
    for name, entry in manifest(weights_dir).get("files", {}).items():
        path = weights_dir / name
        if not path.exists():
            status[name] = "missing"
        else:
            status[name] = "ok" if sha256(path) == entry["sha256"] else "checksum mismatch"
    return status


def autoencoder_dir(weights_dir: Path) -> Path | None:
    folder = weights_dir / "autoencoder"
    return folder if (folder / "config.json").exists() else None


def autoencoder_attribute_dim(weights_dir: Path) -> int:
    """How many attribute values the autoencoder's clip code holds (0 without one)."""
    folder = autoencoder_dir(weights_dir)
    if folder is None:
        return 0
    return json.loads((folder / "config.json").read_text()).get("attribute_dim", 0)


def attribute_encoder_dir(weights_dir: Path) -> Path | None:
    folder = weights_dir / "attribute_encoder"
    return folder if (folder / "config.json").exists() else None


def publish(source: Path, weights_dir: Path, name: str, *, command: str, data: str,
            quality: dict, notes: str = "") -> None:
    """Copy a trained folder into weights_dir/name and record it in the manifest.

    Only config JSON and safetensors are copied: nothing that would load through pickle.
    """
    import shutil

    target = weights_dir / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.suffix in {".json", ".safetensors"}:
            shutil.copy2(path, target / path.name)
    doc = manifest(weights_dir)
    doc["files"] = {k: v for k, v in doc.get("files", {}).items()
                    if not k.startswith(f"{name}/")}
    for path in sorted(target.iterdir()):
        doc["files"][f"{name}/{path.name}"] = {"sha256": sha256(path),
                                               "bytes": path.stat().st_size}
    doc.setdefault("models", {})[name] = {"command": command, "data": data, "quality": quality,
                                          "notes": notes}
    (weights_dir / "manifest.json").write_text(json.dumps(doc, indent=1) + "\n")
