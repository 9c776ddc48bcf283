"""What the bench scripts share: where the real clips are and how a --video is looked up."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from s3edit.edit.base import Editor
    from s3edit.train.decoded_faces import DecodedFaceJudge, InvertedFaces

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VIDEO = "videoretalking/examples/face/1.mp4"
# The five dev clips the editors and the edits are compared on (issues 4, 12 and 16).
DEV_CLIPS = ("videoretalking/examples/face/1.mp4", "dpe/data/s.mp4", "pcavs/Input/00002.mp4",
             "megaportrait_vox/junk/-1eKufUP5XQ_4.mp4", "liveportrait/driving/d0.mp4")


def default_data_dir() -> Path:
    return Path(os.environ.get("S3EDIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def resolve_video(video: str, data: Path) -> Path:
    """A path as given if it exists, else relative to the shared data's videos/ folder."""
    for candidate in (Path(video), data / "videos" / video):
        if candidate.is_file():
            return candidate
    sys.exit(f"error: {video}: not found (looked here and under {data / 'videos'}; "
             "set --data or S3EDIT_SHARED_DATA)")


def cut(src: Path, frames: int, dst: Path) -> None:
    """The first `frames` frames of a clip, near-losslessly re-encoded: the original an edit
    of them is compared with."""
    if not dst.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-frames:v", str(frames),
                        "-an", "-c:v", "libx264", "-crf", "10", str(dst)], check=True)


def add_machine_args(parser: argparse.ArgumentParser) -> None:
    import torch

    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads; 0 = torch's default")


def setup_machine(args: argparse.Namespace) -> torch.device:
    """Apply --threads and --device, and print the machine line every table starts with."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA GPU")
    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    return device


def load_editor_spec(spec: str, weights: Path) -> tuple[str, Editor]:
    """An editor from LABEL=NAME[:FOLDER] (NAME linear, lt or s3; FOLDER defaults to
    WEIGHTS/editors/NAME) and the label its rows carry."""
    from s3edit.edit.classifier import LatentAttributeClassifier
    from s3edit.edit.linear import LinearEditor
    from s3edit.edit.lt import LatentTransformer, LatentTransformerEditor
    from s3edit.edit.s3 import S3Editor, S3Transform

    label, _, rest = spec.rpartition("=")
    name, _, folder = rest.partition(":")
    label = label or name
    classifier = LatentAttributeClassifier.from_pretrained(weights / "editors" / "classifier")
    if name == "linear":
        return label, LinearEditor(classifier)
    path = Path(folder) if folder else weights / "editors" / name
    if name == "lt":
        return label, LatentTransformerEditor(LatentTransformer.from_pretrained(path), classifier)
    if name == "s3":
        return label, S3Editor(S3Transform.from_pretrained(path), classifier)
    raise SystemExit(f"error: unknown editor {name!r} in {spec!r}")


def decoded_face_judge(weights: Path, decode_steps: int = 5) -> DecodedFaceJudge:
    """The weights' autoencoder and attribute encoder with dlib's network, decoding in bf16."""
    from s3edit.face.attributes import AttributeEncoder
    from s3edit.face.identity_torch import DlibFaceNet
    from s3edit.model.autoencoder import DiffusionFaceAutoencoder
    from s3edit.train.decoded_faces import DecodedFaceJudge

    return DecodedFaceJudge(DiffusionFaceAutoencoder.from_pretrained(weights / "autoencoder"),
                            AttributeEncoder.from_pretrained(weights / "attribute_encoder"),
                            DlibFaceNet.from_dat(), decode_steps, bf16=True)


def inverted_celeba(judge: DecodedFaceJudge, data: Path, count: int, held: bool = True
                    ) -> InvertedFaces:
    """The first `count` held-out (else training) faces of a CelebAMask-HQ folder, as the
    trainers split it (the last 2,000 held out, the first 16,000 trained on), inverted."""
    from s3edit.train import decoded_faces

    return decoded_faces.inverted_celeba(judge, data, count, 2000, 16000, held)
