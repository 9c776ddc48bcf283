"""How image classifiers (the graders of `s3edit eval`) score an attribute in each half of a group.

On CelebA-HQ faces none of them trained on (images 7,000-15,999 and the held-out 28,000-29,999;
the graders train on 0-6,999), per attribute and grader: each half's ROC AUC, and the mean
probability and share over 0.5 of its positives and negatives. A grader that calls half of the
real blond men blond cannot show a blond edit of a man as +0.4.

    python bench/grader_groups.py weights/image_classifier runs/other/image_classifier \
        --attrs Blond_Hair Gray_Hair Eyeglasses --by Male
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import default_data_dir

from s3edit.edit.attributes import ATTRIBUTES, resolve_attribute
from s3edit.edit.classifier import roc_auc
from s3edit.metrics.attributes import load_image_classifier
from s3edit.train.cache import SHARD_SIZE, cached_split, load_cache
from s3edit.train.celeba import celeba_images, celeba_labels
from s3edit.train.config import HOLDOUT

FIRST_UNSEEN, LAST_CACHED = 7000, 16000  # graders train on 0-6,999; the cache holds 0-15,999


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("graders", type=Path, nargs="+", help="image classifier folders")
    p.add_argument("--attrs", nargs="+", default=["Blond_Hair", "Gray_Hair", "Eyeglasses"])
    p.add_argument("--by", default="Male", help="the attribute whose halves are compared")
    p.add_argument("--data", type=Path, default=default_data_dir())
    args = p.parse_args()
    attrs, by = [resolve_attribute(a) for a in args.attrs], resolve_attribute(args.by)

    celeba = args.data / "CelebAMask-HQ-128"
    labels = celeba_labels(celeba)
    split = cached_split(celeba_images(celeba), HOLDOUT, LAST_CACHED, progress=True)
    shard = load_cache(split.folder, [*range(FIRST_UNSEEN // SHARD_SIZE, split.train.stop),
                                      *split.held])
    y = torch.stack([labels[n] for n in shard.names]).numpy()
    group = y[:, ATTRIBUTES.index(by)] == 1
    print(f"{len(y)} faces none of the graders trained on\n")
    print(f"| grader | mean AUC | attribute | {by} | AUC | positives: n / P / > 0.5 | "
          "negatives: n / P / > 0.5 |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.graders:
        p_all = load_image_classifier(folder).probabilities(shard.crops)
        mean_auc = np.nanmean([roc_auc(torch.tensor(p_all[:, i]), torch.tensor(y[:, i]))
                               for i in range(len(ATTRIBUTES))])
        for attr in attrs:
            i = ATTRIBUTES.index(attr)
            for half, name in ((group, "yes"), (~group, "no")):
                cells = []
                for positive in (True, False):
                    scores = p_all[half & ((y[:, i] == 1) == positive), i]
                    cells.append(f"{len(scores)} / {scores.mean():.3f} / "
                                 f"{(scores > 0.5).mean():.2f}" if len(scores) else "0")
                auc = roc_auc(torch.tensor(p_all[half, i]), torch.tensor(y[half, i]))
                print(f"| {folder} | {mean_auc:.4f} | {attr} | {name} | {auc:.3f} | "
                      f"{cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
