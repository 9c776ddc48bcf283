"""Measure a trained autoencoder and print the figures its manifest entry records.

    python scripts/validate_autoencoder.py --model runs/ae64/checkpoint/ema \
        --data ../shared/data/CelebAMask-HQ-128 --clip ../shared/data/videos/dpe/data/s.mp4 \
        --out runs/ae64/validation [--count 2000] [--steps 10 20 50] [--refine 0 3]

Writes validation.json (reconstruction PSNR, how much the decoder uses the identity code and,
for a decoder that reads attributes, how often setting one in the clip code draws it on
held-out faces without it, graded by the evaluation image classifier), identity-swap.png,
samples.png and edit.png into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.train.autoencoder import AutoencoderTrainConfig, load_face_sources
from s3edit.train.validate import (
    attribute_edit,
    clip_crops,
    code_use,
    identity_swap_strip,
    reconstruction_psnr,
    sample_grid,
)
from s3edit.weights import REPO_WEIGHTS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="CelebAMask-HQ folder")
    p.add_argument("--clip", type=Path, required=True, help="a real clip to reconstruct")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--count", type=int, default=2000, help="held-out crops at --main-steps")
    p.add_argument("--sweep-count", type=int, default=256, help="crops for the other steps")
    p.add_argument("--clip-frames", type=int, default=None, help="first N aligned frames only")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--refine", type=int, nargs="+", default=[0, 3],
                   help="fixed-point iterations per inversion step to compare")
    p.add_argument("--main-steps", type=int, default=10, help="apply's default --steps")
    p.add_argument("--main-refine", type=int, default=3, help="apply's default --refine")
    p.add_argument("--attribute-encoder", type=Path, default=REPO_WEIGHTS / "attribute_encoder",
                   help="for a model that reads attributes")
    p.add_argument("--edit", default="Eyeglasses",
                   help="attribute set to +1 in the clip codes of held-out faces without it")
    p.add_argument("--edit-count", type=int, default=64, help="held-out faces to edit")
    p.add_argument("--classifier", type=Path, default=REPO_WEIGHTS / "image_classifier",
                   help="the image classifier that grades the edit (s3edit eval's)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    model = DiffusionFaceAutoencoder.from_pretrained(args.model).eval()
    res = model.config.resolution
    _, held = load_face_sources(AutoencoderTrainConfig(data=args.data, out=args.out,
                                                       resolution=res, limit=1),
                                 model.config.attribute_dim)
    attributes = None
    if model.config.attribute_dim:  # the clip code then needs the clip's attributes measured
        from s3edit.face.attributes import AttributeEncoder

        attributes = AttributeEncoder.from_pretrained(args.attribute_encoder).eval().codes
    clip = clip_crops(args.clip, res, args.clip_frames, attributes)
    report: dict = {"model": str(args.model), "resolution": res, "held_out": {}, "clip": {}}
    report["code_use"] = code_use(model, held)
    for t, use in report["code_use"].items():
        print(f"t={t}: x0 error {use['own_error']:.3f} with own codes, "
              f"{use['swapped_error']:.3f} with another identity; response {use['response']:.3f}")
    for steps in args.steps:
        for refine in args.refine:
            main = (steps, refine) == (args.main_steps, args.main_refine)
            count = args.count if main else args.sweep_count
            frames = len(clip.images) if main else args.sweep_count
            start = time.perf_counter()
            scores = reconstruction_psnr(model, held.images[:count], held.clip_code[:count],
                                         held.landmarks[:count], steps, refine)
            clip_scores = reconstruction_psnr(model, clip.images[:frames], clip.clip_code,
                                              clip.landmarks[:frames], steps, refine)
            key = f"{steps} steps, refine {refine}"
            report["held_out"][key] = {"images": len(scores), "psnr_mean": scores.mean().item(),
                                       "psnr_min": scores.min().item()}
            report["clip"][key] = {"frames": len(clip_scores),
                                   "psnr_mean": clip_scores.mean().item(),
                                   "psnr_min": clip_scores.min().item()}
            print(f"{key}: held-out {scores.mean():.2f} dB (min {scores.min():.2f}, "
                  f"{len(scores)} crops), {args.clip.name} {clip_scores.mean():.2f} dB "
                  f"(min {clip_scores.min():.2f}, {len(clip_scores)} frames), "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    if model.config.attribute_dim:
        from s3edit.metrics.attributes import load_image_classifier

        edit = attribute_edit(model, held, args.edit, 1.0, load_image_classifier(args.classifier),
                              args.main_steps, args.main_refine, args.edit_count,
                              args.out / "edit.png")
        report["attribute_edit"] = {args.edit: edit}
        print(f"{args.edit} set to +1 on {edit['faces']} held-out faces without it: "
              f"probability {edit['before']:.3f} -> {edit['after']:.3f}, "
              f"success {edit['success_rate']:.2f}")
    others = held.clip_code[torch.tensor([3, 11])]
    identity_swap_strip(model, clip, others, args.main_steps, args.main_refine,
                        args.out / "identity-swap.png")
    sample_grid(model, held, args.main_steps, args.out / "samples.png")
    (args.out / "validation.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
