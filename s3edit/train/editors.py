"""`s3edit train editor`: the latent attribute classifiers (the linear editor's directions)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.classifier import LatentAttributeClassifier, fit_classifier, roc_auc
from s3edit.model.codes import identity_code
from s3edit.train.autoencoder import split_shards
from s3edit.train.cache import SHARD_SIZE, build_image_cache, load_cache
from s3edit.train.celeba import celeba_images, celeba_labels


@dataclass
class LabelledCodes:
    codes: torch.Tensor  # (N, 128) L2-normalised identity codes
    labels: torch.Tensor  # (N, 40) in {0, 1}


def labelled_codes(data: Path, holdout: int = 2000, limit: int | None = None
                   ) -> tuple[LabelledCodes, LabelledCodes]:
    """Identity codes and attribute labels of a CelebAMask-HQ folder, train and held-out."""
    paths = celeba_images(data)
    labels = celeba_labels(data)
    train_shards, held_shards = split_shards(len(paths), holdout)
    if limit is not None:
        train_shards = range(0, min(len(train_shards), math.ceil(limit / SHARD_SIZE)))
    folder = build_image_cache(paths, 128, shards=[*train_shards, *held_shards])

    def gather(shards: range) -> LabelledCodes:
        shard = load_cache(folder, shards)
        return LabelledCodes(identity_code(shard.identity),
                             torch.stack([labels[n] for n in shard.names]))

    return gather(train_shards), gather(held_shards)


def train_classifier(data: Path, out: Path, holdout: int = 2000, limit: int | None = None
                     ) -> Path:
    """Fit the classifiers, save them to OUT/classifier with held-out ROC AUCs."""
    train, held = labelled_codes(data, holdout, limit)
    classifier = fit_classifier(train.codes, train.labels)
    folder = out / "classifier"
    classifier.save_pretrained(folder)
    metrics = {"train_images": len(train.codes), "held_out_images": len(held.codes)}
    if len(held.codes):
        with torch.no_grad():
            scores = classifier(held.codes)
        metrics["held_out_auc"] = {a: round(roc_auc(scores[:, i], held.labels[:, i]), 4)
                                   for i, a in enumerate(ATTRIBUTES)}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return folder


def load_classifier(folder: Path) -> LatentAttributeClassifier:
    return LatentAttributeClassifier.from_pretrained(folder).eval()
