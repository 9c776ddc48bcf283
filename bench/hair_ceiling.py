"""What `s3edit eval` can see of a hair colour: the ceiling of a hair edit on real clips.

No model runs. Each clip is cut to its first --frames frames (as `editor_ablation.py` cuts
them), and on every frame the hair under the mask a hair edit is pasted through
(`s3edit.face.hair`) is recoloured by hand: its Lab colours are shifted and scaled to a
target hair colour's mean and spread (Reinhard transfer), which keeps the hair's texture and
shading. The clip is then graded as an edit is (`evaluate_pair`, what `s3edit eval` runs).
What the grader gives such a hand edit is about as much as any edit pasted through that mask
can get from it. The recoloured clips stay in --out, to be looked at. A benchmark, not a test.

    python bench/hair_ceiling.py --out /tmp/ceiling
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from common import DEV_CLIPS, cut, default_data_dir, resolve_video

from s3edit.face.hair import HairSegmenter
from s3edit.face.landmarks import FaceDetector
from s3edit.metrics.evaluate import evaluate_pair
from s3edit.video import VideoWriter, probe, read_frames

# Lab (OpenCV's 0-255 scale) mean and spread of the target colours. "blond": light blond,
# which reads as blond by eye on every dev clip; "celeba-blond": the mean over the hair of
# CelebA-HQ's 167 blond faces among held-out images 28,000-28,999, darker roots included.
COLOURS = {"blond": ((170.0, 134.0, 152.0), (30.0, 4.0, 6.0)),
           "celeba-blond": ((120.4, 136.3, 146.9), (41.2, 4.3, 6.5))}
ATTRIBUTE = "Blond_Hair"  # what both colours are graded on
# The hair's own spread is scaled up at most this much: dark hair has little of it, and its
# noise would grow into speckles.
MAX_GAIN = 2.5


def recolour_hair(frame: np.ndarray, hair: np.ndarray, mean: np.ndarray, spread: np.ndarray
                  ) -> np.ndarray:
    """`frame` (RGB uint8) with the pixels of the 0/1 `hair` mask moved to the Lab `mean` and
    `spread`, blended in over a feathered edge."""
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).astype(np.float32)
    pixels = lab[hair > 0.5]
    if len(pixels) < 50:  # no hair found (a bald head, a lost face): nothing to recolour
        return frame
    gain = np.minimum(spread / (pixels.std(0) + 1e-3), MAX_GAIN)
    moved = (lab - pixels.mean(0)) * gain + mean
    soft = cv2.GaussianBlur(hair.astype(np.float32), (0, 0), 2.0)[..., None]
    out = np.clip(lab * (1 - soft) + moved * soft, 0, 255).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)


def recolour_clip(src: Path, dst: Path, colour: str) -> None:
    mean, spread = (np.array(v) for v in COLOURS[colour])
    info = probe(src)
    with FaceDetector(max_faces=1) as detect, HairSegmenter() as segment, \
            VideoWriter(dst, info, crf=10, overwrite=True) as writer:
        for frame in read_frames(info):
            faces = detect(frame)
            writer.write(recolour_hair(frame, segment(frame, faces[0].mesh), mean, spread)
                         if faces else frame)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the cut and the recoloured clips")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="shared data folder (env S3EDIT_SHARED_DATA)")
    p.add_argument("--clips", nargs="+", default=list(DEV_CLIPS), help="relative to DATA/videos")
    p.add_argument("--colour", nargs="+", default=["blond"], choices=list(COLOURS))
    p.add_argument("--frames", type=int, default=24, help="first N frames of each clip")
    p.add_argument("--every", type=int, default=3, help="measure every N-th frame")
    p.add_argument("--classifier", type=Path,
                   help="the image classifier that grades (default: s3edit eval's)")
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    print("| clip | colour | target before | after | change | identity |")
    print("|---|---|---|---|---|---|")
    changes: dict[str, list[float]] = {c: [] for c in args.colour}
    for clip in args.clips:
        original = args.out / (clip.replace("/", "_").rsplit(".", 1)[0] + ".mp4")
        cut(resolve_video(clip, args.data), args.frames, original)
        for colour in args.colour:
            recoloured = original.with_suffix(f".{colour}.mp4")
            recolour_clip(original, recoloured, colour)
            result = evaluate_pair(original, recoloured, ATTRIBUTE,
                                   image_classifier_dir=args.classifier, every=args.every)
            before, after = (np.nanmean([np.nan if v is None else v
                                         for v in result["per_frame"][key]])
                             for key in ("target_original", "target_edited"))
            changes[colour].append(result["target_change"])
            print(f"| {clip} | {colour} | {before:.3f} | {after:.3f} "
                  f"| {result['target_change']:+.3f} | {result['identity']:.3f} |", flush=True)
            with open(args.out / "rows.jsonl", "a") as f:
                f.write(json.dumps({"clip": clip, "colour": colour,
                                    **{k: result[k] for k in ("target_change", "identity",
                                                              "tl_id", "locality")}}) + "\n")
    for colour, values in changes.items():
        print(f"{colour}: mean change {np.mean(values):+.3f} over {len(values)} clips")


if __name__ == "__main__":
    main()
