"""Carry a trained autoencoder checkpoint over to a new conditioning, keeping what it has learnt.

Each change starts out leaving the decoder's function (nearly) as it was, so training resumes
from the same point rather than from scratch:
  --fresh-fusion            a new fusion MLP on the standardised codes; its last layer starts at
                            zero with the old mean z_face as bias, so the UNet first sees what
                            it saw before while z_face can now vary from the first step
  --prediction v_prediction the UNet's output becomes v (the weights are kept: at low noise v is
                            the noise; the high-noise steps relearn)
  --template-resolution R   a code template (see DiffusionFaceAutoencoder): the UNet's new input
                            channels start at zero and the template as the ridge fit on the codes
  --attributes              the 40 CelebA labels join the clip code: their fusion weights start
                            at zero and the template is refitted with them
The step count is kept, so `s3edit train autoencoder --out` on the new folder goes on from it;
the optimizer state is not (it belongs to the old parameters) and the EMA restarts.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import ATTRIBUTE_DIM
from s3edit.train.autoencoder import AutoencoderTrainConfig, load_face_sources
from s3edit.train.upgrade import upgrade


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a run's checkpoint folder")
    p.add_argument("--out", type=Path, required=True, help="the new run folder")
    p.add_argument("--data", type=Path, required=True, help="the run's CelebAMask-HQ folder")
    p.add_argument("--limit", type=int, default=None, help="the run's --limit")
    p.add_argument("--fresh-fusion", action="store_true")
    p.add_argument("--prediction", choices=["epsilon", "v_prediction"])
    p.add_argument("--template-resolution", type=int)
    p.add_argument("--attributes", action="store_true")
    args = p.parse_args()
    if (args.out / "checkpoint").exists():
        raise SystemExit(f"{args.out / 'checkpoint'} exists; not overwriting it")
    old = DiffusionFaceAutoencoder.from_pretrained(args.checkpoint / "model")
    attribute_dim = ATTRIBUTE_DIM if args.attributes else old.config.get("attribute_dim", 0)
    train, _ = load_face_sources(AutoencoderTrainConfig(data=args.data, out=args.out,
                                                        limit=args.limit), attribute_dim)
    torch.manual_seed(0)
    tmp = args.out / "checkpoint.tmp"
    new = upgrade(old, args.fresh_fusion, args.prediction, args.template_resolution, train,
                  attribute_dim)
    # The EMA restarts from the upgraded weights: an average across the change would mix two
    # conditionings (at decay 0.999, a third of it would still be the old one 1,000 steps on).
    for part in ("model", "ema"):
        new.save_pretrained(tmp / part)
    shutil.copy(args.checkpoint / "state.json", tmp / "state.json")
    tmp.rename(args.out / "checkpoint")
    print(args.out / "checkpoint")


if __name__ == "__main__":
    main()
