"""S3Editor fine-tuned with losses on decoded faces (issue 16), against the shipped s3 and
linear, on decoded held-out CelebA-HQ faces.

Inverts --train faces of the first training shard and --held faces of the held-out shards
(apply's 10 steps, refinement 3), fine-tunes a copy of the weights' s3 transforms on decoded
faces (`s3edit.train.decoded_faces`), then decodes each editor's edit of every held-out face
at --scale (10 steps, as apply) and prints, per attribute: the evaluation image classifier's
target change and the others' mean |change| (neither judge of training), and the identity
cosine of dlib's descriptors to the unedited decode. Saves the transforms to OUT/s3.

    python bench/decoded_s3.py --out runs/decoded --steps 150
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs
# s3edit sets torch's thread wait policy on import, which must precede torch's
import s3edit  # noqa: E402, F401

# isort: split

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import decoded_face_judge, default_data_dir, inverted_celeba

from s3edit.edit.loading import load_editor
from s3edit.edit.s3 import S3Transform
from s3edit.metrics.attributes import load_image_classifier
from s3edit.model.inputs import to_uint8
from s3edit.train.decoded_faces import (
    DecodedFaceJudge,
    DecodedTrainConfig,
    finetune_s3,
)
from s3edit.train.editors import labelled_codes
from s3edit.weights import REPO_WEIGHTS

ATTRS = ("Eyeglasses", "Blond_Hair", "Young", "Smiling")


@torch.no_grad()
def unedited(faces, full: DecodedFaceJudge, classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation classifier's probabilities and the dlib descriptors of the faces'
    unedited decodes: what every edit is measured against."""
    before = full.decode(faces, faces.codes)
    return (torch.from_numpy(classifier.probabilities(to_uint8(before))),
            full.embeddings(before, faces.chip_maps))


@torch.no_grad()
def measure(editor, faces, full: DecodedFaceJudge, classifier, scale: float,
            reference: tuple[torch.Tensor, torch.Tensor]) -> dict:
    rows = {}
    p0, e0 = reference
    for attr in ATTRS:
        edited = full.decode(faces, editor.edit(faces.codes, attr, scale))
        p1 = torch.from_numpy(classifier.probabilities(to_uint8(edited)))
        i = classifier.index(attr)
        change = (p1 - p0).abs()
        others = torch.cat([change[:, :i], change[:, i + 1:]], 1).mean()
        cos = torch.nn.functional.cosine_similarity(full.embeddings(edited, faces.chip_maps),
                                                    e0, dim=-1).mean()
        rows[attr] = {"target": round(float((p1 - p0)[:, i].mean()), 4),
                      "off_target": round(float(others), 4), "identity": round(float(cos), 4)}
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--weights", type=Path, default=REPO_WEIGHTS)
    p.add_argument("--data", type=Path, default=default_data_dir() / "CelebAMask-HQ-128")
    p.add_argument("--train", type=int, default=48)
    p.add_argument("--held", type=int, default=32)
    p.add_argument("--steps", type=int, default=DecodedTrainConfig.steps)
    p.add_argument("--batch", type=int, default=DecodedTrainConfig.batch)
    p.add_argument("--lambda-id", type=float, default=DecodedTrainConfig.lambda_id)
    p.add_argument("--decode-steps", type=int, default=5)
    p.add_argument("--scale", type=float, nargs="+", default=[0.6])
    p.add_argument("--tuned", type=Path, help="Measure these fine-tuned transforms (a folder "
                   "OUT/s3 of an earlier run) instead of fine-tuning.")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    w = args.weights
    judge = decoded_face_judge(w, args.decode_steps)
    encoder = judge.attribute_encoder
    start = time.perf_counter()
    held = inverted_celeba(judge, args.data, args.held)
    print(f"inverted {len(held)} held-out faces in {time.perf_counter() - start:.0f} s",
          flush=True)

    shipped = load_editor(w, "s3")
    tuned = copy.deepcopy(shipped)
    if args.tuned:
        tuned.transform = S3Transform.from_pretrained(args.tuned).eval()
    else:
        train = inverted_celeba(judge, args.data, args.train, held=False)
        codes, _ = labelled_codes(args.data, 2000, 16000, encoder)
        cfg = DecodedTrainConfig(steps=args.steps, batch=args.batch, lambda_id=args.lambda_id)
        start = time.perf_counter()
        finetune_s3(tuned, train, judge, codes.codes, cfg)
        print(f"fine-tuned {cfg.steps} steps in {time.perf_counter() - start:.0f} s",
              flush=True)
        tuned.transform.save_pretrained(args.out / "s3")

    classifier = load_image_classifier(w / "image_classifier")
    editors = {"linear": load_editor(w, "linear"), "s3": shipped, "s3 decoded": tuned}
    full = copy.copy(judge)
    full.decode_steps = 10  # as apply decodes
    reference = unedited(held, full, classifier)
    results = {name: {scale: measure(editor, held, full, classifier, scale, reference)
                      for scale in args.scale} for name, editor in editors.items()}
    (args.out / "results.json").write_text(json.dumps(
        {"settings": {**vars(args), "out": str(args.out), "weights": str(w),
                      "data": str(args.data)}, "results": results}, indent=1, default=str))
    print("| editor | scale | " + " | ".join(f"{a} target / off / id" for a in ATTRS) + " |")
    print("|---|---|" + "---|" * len(ATTRS))
    for name, by_scale in results.items():
        for scale, rows in by_scale.items():
            print(f"| {name} | {scale} | " + " | ".join(
                f"{r['target']:+.3f} / {r['off_target']:.3f} / {r['identity']:.3f}"
                for r in rows.values()) + " |")
    if len(args.scale) > 1:
        print_equal_target(results)


def print_equal_target(results: dict) -> None:
    """Each editor's off-target change and identity, interpolated along its own scales at the
    target change linear reaches at each scale ('-' where an editor never reaches it)."""
    print("\nAt linear's target change:\n")
    print("| attr | target (linear's scale) | " + " | ".join(
        f"{n} off / id" for n in results) + " |")
    print("|---|---|" + "---|" * len(results))
    for attr in ATTRS:
        for scale, row in results["linear"].items():
            goal = row[attr]["target"]
            cells = []
            for by_scale in results.values():
                rows = sorted((r[attr] for r in by_scale.values()), key=lambda r: r["target"])
                targets = [r["target"] for r in rows]
                if not targets[0] <= goal <= targets[-1]:
                    cells.append("-")
                    continue
                off = np.interp(goal, targets, [r["off_target"] for r in rows])
                ident = np.interp(goal, targets, [r["identity"] for r in rows])
                cells.append(f"{off:.3f} / {ident:.3f}")
            print(f"| {attr} | {goal:+.3f} ({scale}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
