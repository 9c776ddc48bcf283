"""`s3edit train editor`: the latent attribute classifiers (the linear editor's directions),
the Latent Transformer and the S3Editor transforms; `s3edit train expression`: the landmark
directions of the expression attributes.

The editors move clip codes: dlib's L2-normalised identity code (128), followed, given an image
attribute encoder (`s3edit.face.attributes`), by its 40 attribute values of the aligned crop.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from s3edit.edit.attributes import ATTRIBUTES, resolve_attribute
from s3edit.edit.base import Editor
from s3edit.edit.classifier import LatentAttributeClassifier, fit_classifier, roc_auc
from s3edit.edit.expression import fit_expression_directions
from s3edit.edit.linear import LinearEditor
from s3edit.edit.lt import LatentMLPClassifier, LatentTransformer, LatentTransformerEditor
from s3edit.edit.routing import route_attributes
from s3edit.edit.s3 import S3Editor, S3Transform
from s3edit.edit.sparsity import GroupSparseOptimizer
from s3edit.errors import UsageError
from s3edit.model.codes import (
    ATTRIBUTE_DIM,
    IDENTITY_DIM,
    LANDMARK_DIM,
    clip_code,
    landmark_code,
    renormalise_clip_code,
)
from s3edit.progress import training_bar
from s3edit.storage import cache_root
from s3edit.train.cache import cached_split, load_shards
from s3edit.train.celeba import celeba_images, celeba_labels
from s3edit.train.config import HOLDOUT, LtTrainConfig, S3TrainConfig
from s3edit.train.editor_losses import (
    faithfulness_loss,
    fit_gaussian,
    identity_loss,
    label_correlation,
    lt_losses,
    manifold_loss,
)
from s3edit.train.parallel import (
    average_gradients,
    global_batch_share,
    is_main,
    main_process_first,
)
from s3edit.video import VIDEO_SUFFIXES

if TYPE_CHECKING:
    from accelerate import Accelerator

    from s3edit.face.attributes import AttributeEncoder
    from s3edit.train.decoded_faces import DecodedFaceJudge, InvertedFaces


@dataclass
class LabelledCodes:
    codes: torch.Tensor  # (N, D) clip codes: identity (128, L2-normalised), attributes (0 or 40)
    labels: torch.Tensor  # (N, 40) in {0, 1}
    landmarks: torch.Tensor  # (N, 102) landmark codes


def code_dim(attribute_encoder: AttributeEncoder | None) -> int:
    """Length of the clip codes made with (or without) an attribute encoder."""
    return IDENTITY_DIM + (0 if attribute_encoder is None else ATTRIBUTE_DIM)


def weights_key(model: torch.nn.Module) -> str:
    """sha256 of a model's weights (names, dtypes, shapes and bytes of its state dict): what
    its weights file holds, and defined for a model that was never saved too."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


ATTRIBUTE_BATCH = 256


def crop_attribute_codes(encoder: AttributeEncoder, crops: torch.Tensor,
                         batch: int = ATTRIBUTE_BATCH) -> torch.Tensor:
    """The encoder's attribute codes (N, 40) in [-1, 1] of aligned uint8 crops (N, S, S, 3),
    in batches on the encoder's device."""
    device = next(encoder.parameters()).device
    out = [torch.zeros(0, ATTRIBUTE_DIM)]
    for i in range(0, len(crops), batch):
        x = crops[i:i + batch].to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(encoder.codes(x).float().cpu())
    return torch.cat(out)


def labelled_codes(data: Path, holdout: int = HOLDOUT, limit: int | None = None,
                   attribute_encoder: AttributeEncoder | None = None
                   ) -> tuple[LabelledCodes, LabelledCodes]:
    """Clip codes, landmark codes and attribute labels of a CelebAMask-HQ folder, train and
    held-out.

    Without `attribute_encoder` the clip codes are the identity codes alone (N, 128); with it,
    they carry its 40 attribute values of each aligned 128 px crop (N, 168). Those values are
    cached per face-cache shard in $S3EDIT_CACHE/attribute-codes/, keyed by the sha256 of the
    encoder's weights, so a second run does not recompute them.
    """
    paths = celeba_images(data)
    labels = celeba_labels(data)
    split = cached_split(paths, holdout, limit)
    folder = split.folder
    key = None if attribute_encoder is None else weights_key(attribute_encoder)[:16]

    def gather(shards: range) -> LabelledCodes:
        codes = [torch.zeros(0, code_dim(attribute_encoder))]
        names: list[str] = []
        landmarks = [torch.zeros(0, LANDMARK_DIM)]
        for k in shards:
            shard = next(load_shards(folder, [k]), None)
            if shard is None:  # not in the cache: skipped, as load_cache does
                continue
            attributes = None
            if attribute_encoder is not None:
                attributes = _shard_attribute_codes(folder, k, shard.crops, attribute_encoder,
                                                    key)
            codes.append(clip_code(shard.identity, attributes))
            names += shard.names
            landmarks.append(landmark_code(shard.lm68))
        # (a folder of one shard or less has no held-out part)
        stacked = (torch.stack([labels[n] for n in names]) if names
                   else torch.zeros(0, len(ATTRIBUTES)))
        return LabelledCodes(torch.cat(codes), stacked, torch.cat(landmarks))

    return gather(split.train), gather(split.held)


def _shard_attribute_codes(folder: Path, index: int, crops: torch.Tensor,
                           encoder: AttributeEncoder, key: str) -> torch.Tensor:
    """One face-cache shard's attribute codes, from the cache or computed and cached."""
    from safetensors.torch import load_file, save_file

    path = cache_root() / "attribute-codes" / key / folder.name / f"shard-{index:05d}.safetensors"
    if path.exists():
        codes = load_file(str(path))["codes"]
        if len(codes) == len(crops):
            return codes
    codes = crop_attribute_codes(encoder, crops).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    save_file({"codes": codes}, str(tmp))
    os.replace(tmp, path)
    return codes


def _check_dims(classifier: LatentAttributeClassifier, codes: torch.Tensor) -> None:
    if classifier.config.dim != codes.shape[1]:
        raise UsageError(
            f"the latent classifiers were fitted on {classifier.config.dim}-d codes, but these "
            f"codes are {codes.shape[1]}-d: train the classifiers and the editor with the same "
            "--attribute-encoder (or none)")


def train_classifier(data: Path, out: Path, holdout: int = HOLDOUT, limit: int | None = None,
                     attribute_encoder: AttributeEncoder | None = None) -> Path:
    """Fit the classifiers on the clip codes (with `attribute_encoder`'s values, if given),
    save them to OUT/classifier with held-out ROC AUCs."""
    train, held = labelled_codes(data, holdout, limit, attribute_encoder)
    classifier = fit_classifier(train.codes, train.labels)
    folder = out / "classifier"
    classifier.save_pretrained(folder)
    metrics = {"train_images": len(train.codes), "held_out_images": len(held.codes),
               "code_dim": train.codes.shape[1]}
    if len(held.codes):
        with torch.no_grad():
            scores = classifier(held.codes)
        metrics["held_out_auc"] = {a: round(roc_auc(scores[:, i], held.labels[:, i]), 4)
                                   for i, a in enumerate(ATTRIBUTES)}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return folder


def train_expression(data: Path, out: Path, holdout: int = HOLDOUT, limit: int | None = None
                     ) -> Path:
    """Fit the expression directions and their limits, save them to OUT/expression with the
    limits and the held-out ROC AUCs of the landmark codes projected on each direction."""
    train, held = labelled_codes(data, holdout, limit)
    expressions = fit_expression_directions(train.landmarks, train.labels)
    folder = out / "expression"
    expressions.save_pretrained(folder)
    metrics: dict = {"train_images": len(train.codes), "held_out_images": len(held.codes),
                     "positives": {a: int(train.labels[:, ATTRIBUTES.index(a)].sum())
                                   for a in expressions.config.attributes},
                     "limits": {a: [round(v, 4) for v in limits.tolist()] for a, limits
                                in zip(expressions.config.attributes, expressions.limits,
                                       strict=True)}}
    if len(held.codes):
        metrics["held_out_auc"] = {
            a: round(roc_auc(held.landmarks @ d, held.labels[:, ATTRIBUTES.index(a)]), 4)
            for a, d in zip(expressions.config.attributes, expressions.directions, strict=True)}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return folder


def load_classifier(folder: Path) -> LatentAttributeClassifier:
    return LatentAttributeClassifier.from_pretrained(folder).eval()


# --- Latent Transformer and S3Editor ----------------------------------------------------------

REPORTED_ATTRIBUTES = ("Eyeglasses", "Smiling", "Young")


def edit_metrics(editor: Editor, classifier: LatentAttributeClassifier, codes: torch.Tensor,
                 scale: float = 0.5, report: Sequence[str] = REPORTED_ATTRIBUTES) -> dict:
    """How an editor's edits at `scale` change held-out clip codes (N, D), graded by the
    classifier: per reported attribute and the mean over all of them, the target's logit and
    probability change, the mean |change| of the other attributes' probabilities, and the
    cosine of the identity part (the first 128 values) to the original's."""
    attributes = list(classifier.config.attributes)
    rows = {}
    with torch.no_grad():
        logits0 = classifier(codes)
        for i, attr in enumerate(attributes):
            edited = editor.edit(codes, attr, scale)
            logits1 = classifier(edited)
            change = logits1.sigmoid() - logits0.sigmoid()
            others = torch.ones(len(attributes), dtype=torch.bool)
            others[i] = False
            rows[attr] = {
                "target_logit_change": float((logits1 - logits0)[:, i].mean()),
                "target_prob_change": float(change[:, i].mean()),
                "others_prob_change": float(change[:, others].abs().mean()),
                "identity_cosine": float(F.cosine_similarity(
                    edited[..., :IDENTITY_DIM], codes[..., :IDENTITY_DIM], dim=-1).mean()),
            }
    out = {attr: rows[attr] for attr in report}
    keys = next(iter(rows.values()))
    out["mean"] = {key: sum(r[key] for r in rows.values()) / len(rows) for key in keys}
    return {name: {k: round(v, 4) for k, v in row.items()} for name, row in out.items()}


def fit_lt_classifier(codes: torch.Tensor, labels: torch.Tensor,
                      classifier: LatentAttributeClassifier, cfg: LtTrainConfig | None = None,
                      accelerator: Accelerator | None = None) -> LatentMLPClassifier:
    """The Latent Transformer's own MLP classifier on codes (N, D) standardised as
    `classifier` does, with labels (N, 40): plain BCE, Adam with weight decay (the official
    pretraining). Under torchrun each process takes its slice of every batch."""
    cfg = cfg or LtTrainConfig()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = LatentMLPClassifier(dim=codes.shape[1],
                                attributes=tuple(classifier.config.attributes))
    w_all, y_all = classifier.normalize(codes), labels.float()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.classifier_lr,
                                 weight_decay=cfg.weight_decay)
    total, mine = global_batch_share(accelerator, cfg.batch)
    for _ in range(cfg.classifier_steps):
        rows = torch.randint(len(w_all), (total,), generator=gen)[mine]
        loss = F.binary_cross_entropy_with_logits(model(w_all[rows]), y_all[rows])
        optimizer.zero_grad()
        loss.backward()
        average_gradients(accelerator, model)
        optimizer.step()
    return model.requires_grad_(False).eval()


def fit_lt(codes: torch.Tensor, labels: torch.Tensor, classifier: LatentAttributeClassifier,
           cfg: LtTrainConfig | None = None, progress: bool = True,
           accelerator: Accelerator | None = None
           ) -> tuple[LatentTransformer, LatentMLPClassifier]:
    """Train the Latent Transformer's MLP classifier, then every attribute's affine head at
    once, on clip codes (N, D) with labels (N, 40); codes are standardised as `classifier`
    does. Returns the heads and the MLP classifier that graded them.

    Loss cls + lambda_attr * attr + lambda_rec * rec (`lt_losses`), every term from the MLP
    classifier, so that the linear classifiers that score edits in metrics.json do not train
    the heads. Under torchrun each process takes its slice of every batch and the gradients
    are averaged; the class balance of `cls` is then per process, as the reference balances
    per batch.
    """
    cfg = cfg or LtTrainConfig()
    _check_dims(classifier, codes)
    judge = fit_lt_classifier(codes, labels, classifier, cfg, accelerator)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model = LatentTransformer(dim=codes.shape[1], attributes=tuple(classifier.config.attributes))
    correlation = label_correlation(labels)
    w_all = classifier.normalize(codes)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total, mine = global_batch_share(accelerator, cfg.batch)
    with training_bar(enabled=progress) as bar:
        task = bar.add_task("training the latent transformer", total=cfg.steps)
        for _ in range(cfg.steps):
            w = w_all[torch.randint(len(w_all), (total,), generator=gen)[mine]]
            with torch.no_grad():
                logits0 = judge(w)
            p0 = logits0.sigmoid()
            # As the reference: head k flips the class, alpha = target - p (the way to go).
            target = (p0 < 0.5).float()
            step = (target - p0).T[..., None] * model.all_heads(w)
            edited = renormalise_clip_code(classifier.denormalize(w + step))
            losses = lt_losses(logits0, judge(classifier.normalize(edited)), target, step,
                               correlation)
            loss = (losses["cls"] + cfg.lambda_attr * losses["attr"]
                    + cfg.lambda_rec * losses["rec"])
            optimizer.zero_grad()
            loss.backward()
            average_gradients(accelerator, model)
            optimizer.step()
            bar.update(task, advance=1)
    return model.eval(), judge


def train_lt(data: Path, out: Path, classifier_dir: Path, cfg: LtTrainConfig | None = None, *,
             limit: int | None = None, holdout: int = HOLDOUT, progress: bool = True,
             attribute_encoder: AttributeEncoder | None = None,
             accelerator: Accelerator | None = None) -> Path:
    """Train the Latent Transformer editor on a CelebAMask-HQ folder's clip codes (with
    `attribute_encoder`'s values, if given: as the classifiers were); save it to OUT/lt, its
    MLP classifier to OUT/lt-classifier (training only: apply does not need it), with
    held-out metrics beside the linear editor's. Under torchrun the main process alone
    writes."""
    classifier = load_classifier(classifier_dir)
    with main_process_first(accelerator):
        train, held = labelled_codes(data, holdout, limit, attribute_encoder)
    cfg = cfg or LtTrainConfig()
    model, judge = fit_lt(train.codes, train.labels, classifier, cfg, progress, accelerator)
    folder = out / "lt"
    if not is_main(accelerator):
        return folder
    model.save_pretrained(folder)
    judge.save_pretrained(out / "lt-classifier")
    settings = {**asdict(cfg), "lambda_cls": 1.0, "code_dim": train.codes.shape[1]}
    extra = {}
    if len(held.codes):
        with torch.no_grad():
            scores = judge(classifier.normalize(held.codes))
        extra["lt_classifier_held_out_auc"] = {
            attr: round(roc_auc(scores[:, i], held.labels[:, i]), 4)
            for i, attr in enumerate(classifier.config.attributes)
            if attr in REPORTED_ATTRIBUTES}
    _write_metrics(folder, LatentTransformerEditor(model, classifier), classifier, train, held,
                   settings, extra)
    return folder


def fit_s3(codes: torch.Tensor, classifier: LatentAttributeClassifier,
           cfg: S3TrainConfig | None = None, progress: bool = True,
           accelerator: Accelerator | None = None,
           labels: torch.Tensor | None = None,
           probe: tuple[DecodedFaceJudge, InvertedFaces] | None = None
           ) -> tuple[S3Transform, float]:
    """Train the S3Editor transforms on clip codes (N, D); returns them and the group
    sparsity reached.

    Self-training: each step draws codes, a seen attribute a and gamma ~ U(-1, 1), and trains
    T on the pseudo-edit T(x + gamma*sqrt(d)*a) with
    lambda_id * L_id + lambda_faith * L_faith + lambda_gen * L_gen (editor_losses.py). The
    codes need no labels.
    With self_training=False (the ablation without pseudo-edits) T learns only the edits the
    CelebA `labels` (N, 40) define, as a supervised editor does: a face without a is edited
    toward having it (gamma = +1), one with it toward losing it (gamma = -1), under the same
    losses and for as many steps; no random attribute strength, no edit toward a state the
    face is already in.
    Lambdas (`S3TrainConfig`: id 200, faith 1, gen 1): L_faith sums probability changes over
    39 attributes (about 6 for a linear edit at scale 0.5) while L_id = 1 - cos is about 0.02
    for it, so L_id needs about 100 to weigh as much; lower trades identity for fewer
    collateral changes (mean over attributes on CelebA held-out codes after 1500 steps,
    identity cosine / others' |change|: 10: 0.957 / 0.045, 100: 0.974 / 0.065,
    1000: 0.981 / 0.114; the linear edit: 0.980 / 0.150). L_gen (Mahalanobis growth per dimension,
    about 0.3-0.6 for such an edit) at 1 keeps edits from drifting off the code distribution;
    at 10 it costs both identity and faithfulness.
    faith_correlation: weigh each other attribute in L_faith by 1 - |correlation| with the
    edited one (correlations of the classifier's probabilities on the codes, which need no
    labels), so that what comes with an attribute in real faces (bags under the eyes with
    age) may move with it; off, every other attribute counts fully, as in the paper.
    Sparsity: no groups are removed in the first 30% of steps (the transforms first learn),
    the target is reached in 5 periods by 80%, and the rest fine-tunes the survivors (a run of
    a few steps gets fewer periods, `GroupSparseOptimizer`).
    With region groups the schedule switches off first the groups that over-edit most: in
    the code (`S3Editor.over_editing`), or with `cfg.over_editing == "decoded"` on the faces of
    `probe` (a judge with its decoder, and inverted faces), decoded as apply decodes them.
    L_id compares the identity parts (the first 128 values) only: the attribute part is the
    faithfulness loss's business.
    Under torchrun each process takes its slice of every step's draws (codes, attributes,
    gammas) and the gradients are averaged, so N processes of batch B train as one of N * B.
    """
    cfg = cfg or S3TrainConfig()
    if cfg.over_editing not in ("codes", "decoded"):
        raise UsageError(f"over_editing {cfg.over_editing!r} is not 'codes' or 'decoded'")
    unknown = set(cfg.holdout_attrs) - set(classifier.config.attributes)
    if unknown:
        raise UsageError(f"unknown held-out attributes: {', '.join(sorted(unknown))}")
    _check_dims(classifier, codes)
    if not cfg.self_training and (labels is None or len(labels) != len(codes)):
        raise UsageError("training without self-training needs the labels of every code")
    classifier.requires_grad_(False)  # frozen: it grades the edits
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    attributes = list(classifier.config.attributes)
    model = S3Transform(dim=codes.shape[1], hidden=cfg.hidden, clusters=cfg.clusters,
                        attributes=tuple(attributes), groups=cfg.groups)
    directions = F.normalize(classifier.linear.weight.detach(), dim=-1)
    seen = torch.tensor([a not in cfg.holdout_attrs for a in attributes])
    model.cluster_of, model.centroids = route_attributes(directions, seen, cfg.clusters,
                                                         cfg.seed)
    editor = S3Editor(model, classifier)
    x_all = classifier.normalize(codes)
    mean, precision = fit_gaussian(x_all)
    faith_weight = None
    if cfg.faith_correlation:
        with torch.no_grad():
            faith_weight = 1 - label_correlation(classifier(codes).sigmoid()).abs()
        faith_weight.fill_diagonal_(0)
    seen_index = seen.nonzero().flatten()
    if labels is not None:  # columns in the classifier's attribute order
        labels = labels[:, [ATTRIBUTES.index(a) for a in attributes]].float()
    scores = None
    if cfg.groups == "regions" and cfg.over_editing == "decoded":
        if probe is None:
            raise UsageError("over-editing measured on decoded faces needs faces to decode")

        from s3edit.train.decoded_faces import decoded_over_editing

        def scores() -> torch.Tensor:
            return decoded_over_editing(editor, *probe, seen_index, cfg.seed)
    elif cfg.groups == "regions":
        # Region groups are ranked by the change they make where the edit should leave the
        # face alone, on fixed draws of pseudo-edits (`S3Editor.over_editing`).
        draws = torch.Generator().manual_seed(cfg.seed + 1)
        probe_codes = codes[torch.randint(len(codes), (4096,), generator=draws)]
        probe_attr = seen_index[torch.randint(len(seen_index), (4096,), generator=draws)]
        probe_gamma = torch.rand(4096, generator=draws) * 2 - 1

        def scores() -> torch.Tensor:
            with torch.no_grad():
                return editor.over_editing(probe_codes, probe_attr, probe_gamma)
    optimizer = GroupSparseOptimizer(torch.optim.Adam(model.parameters(), lr=cfg.lr),
                                     model.sparsity_members(), model.active, cfg.sparsity,
                                     start=int(0.3 * cfg.steps), stop=int(0.8 * cfg.steps),
                                     scores=scores)
    total, mine = global_batch_share(accelerator, cfg.batch)
    with training_bar(enabled=progress) as bar:
        task = bar.add_task("training the S3Editor transforms", total=cfg.steps)
        for _ in range(cfg.steps):
            rows = torch.randint(len(codes), (total,), generator=gen)[mine]
            z, x = codes[rows], x_all[rows]
            attr = seen_index[torch.randint(len(seen_index), (total,), generator=gen)[mine]]
            gamma = (torch.rand(total, generator=gen)[mine] * 2 - 1 if cfg.self_training
                     else 1 - 2 * labels[rows, attr])
            edited = editor.edit_batch(z, attr, gamma)
            with torch.no_grad():
                p0 = classifier(z).sigmoid()
            loss = (cfg.lambda_id * identity_loss(edited[:, :IDENTITY_DIM], z[:, :IDENTITY_DIM])
                    + cfg.lambda_faith * faithfulness_loss(p0, classifier(edited).sigmoid(),
                                                           attr, gamma, faith_weight)
                    + cfg.lambda_gen * manifold_loss(classifier.normalize(edited), x, mean,
                                                     precision))
            optimizer.zero_grad()
            loss.backward()
            average_gradients(accelerator, model)
            optimizer.step()
            bar.update(task, advance=1)
    return model.eval(), optimizer.sparsity


def train_s3(data: Path, out: Path, classifier_dir: Path, cfg: S3TrainConfig | None = None, *,
             videos: Path | None = None, limit: int | None = None, holdout: int = HOLDOUT,
             progress: bool = True, attribute_encoder: AttributeEncoder | None = None,
             accelerator: Accelerator | None = None, decoder: Path | None = None) -> Path:
    """Train the S3Editor transforms on a CelebAMask-HQ folder's clip codes (and, given
    `videos`, codes of frames of the clips under it: unlabelled, which self-training allows),
    with `attribute_encoder`'s values if given (as the classifiers were); save them to OUT/s3
    with held-out metrics beside the linear editor's. Over-editing measured on decoded faces
    decodes with the autoencoder in `decoder` (default: the default weights'). Under torchrun
    the main process alone writes."""
    cfg = cfg or S3TrainConfig()
    cfg = replace(cfg, holdout_attrs=tuple(resolve_attribute(a) for a in cfg.holdout_attrs))
    classifier = load_classifier(classifier_dir)
    with main_process_first(accelerator):
        train, held = labelled_codes(data, holdout, limit, attribute_encoder)
        video = (torch.zeros(0, train.codes.shape[1]) if videos is None
                 else video_identity_codes(videos, attribute_encoder=attribute_encoder))
    pool = torch.cat([train.codes, video])  # the labelled codes alone without --videos
    probe = None
    if cfg.groups == "regions" and cfg.over_editing == "decoded":
        from s3edit.train.decoded_faces import probe_faces
        from s3edit.weights import default_weights_dir

        probe = probe_faces(data, decoder or default_weights_dir() / "autoencoder",
                            attribute_encoder, cfg.probe_faces, holdout, limit)
    model, reached = fit_s3(pool, classifier, cfg, progress, accelerator,
                            None if cfg.self_training else train.labels, probe)
    folder = out / "s3"
    if not is_main(accelerator):
        return folder
    model.save_pretrained(folder)
    settings = {**asdict(cfg), "video_codes": len(video), "code_dim": train.codes.shape[1]}
    attributes = list(classifier.config.attributes)
    clusters_of = {attr: int(k) for attr, k in zip(attributes, model.cluster_of, strict=True)}
    extra = {"group_sparsity": round(reached, 4), "cluster_of": clusters_of}
    if cfg.groups == "regions":
        extra["kept_regions"] = dict(enumerate(model.kept_regions()))
    _write_metrics(folder, S3Editor(model, classifier), classifier, train, held, settings,
                   extra, report=(*REPORTED_ATTRIBUTES, *cfg.holdout_attrs))
    return folder


def _write_metrics(folder: Path, editor: Editor, classifier: LatentAttributeClassifier,
                   train: LabelledCodes, held: LabelledCodes, settings: dict,
                   extra: dict | None = None,
                   report: Sequence[str] = REPORTED_ATTRIBUTES) -> None:
    """metrics.json: held-out edit metrics at scale 0.5 of the editor and the linear one."""
    metrics: dict = {"train_codes": len(train.codes), "held_out_codes": len(held.codes),
                     "scale": 0.5, "settings": settings, **(extra or {})}
    if len(held.codes):
        report = list(dict.fromkeys(report))
        metrics["held_out"] = {
            editor.name: edit_metrics(editor, classifier, held.codes, 0.5, report),
            "linear": edit_metrics(LinearEditor(classifier), classifier, held.codes, 0.5, report),
        }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))


def video_identity_codes(videos_folder: Path, frames_per_clip: int = 8,
                         attribute_encoder: AttributeEncoder | None = None) -> torch.Tensor:
    """Clip codes (N, D) of `frames_per_clip` evenly spaced frames of every clip under a folder
    (the largest face of each frame; frames without a face are skipped): the L2-normalised
    identity code (N, 128), followed, given `attribute_encoder`, by its attribute values of the
    aligned 128 px crop (N, 168).

    Cached in $S3EDIT_CACHE/video-codes/, keyed by the clips' paths, sizes and times (and the
    sha256 of the encoder's weights).
    """
    import numpy as np
    from safetensors.torch import load_file, save_file

    from s3edit.face.align import align_crop, square_from_landmarks
    from s3edit.face.identity import IdentityEncoder
    from s3edit.face.landmarks import FaceDetector
    from s3edit.video import probe, read_frames

    clips = sorted(p for p in Path(videos_folder).rglob("*")
                   if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in clips]
    keyed: list = [frames_per_clip, stats]
    if attribute_encoder is not None:
        keyed.append(weights_key(attribute_encoder))
    key = hashlib.sha256(json.dumps(keyed).encode()).hexdigest()[:16]
    path = cache_root() / "video-codes" / f"{key}.safetensors"
    if path.exists():
        return load_file(str(path))["codes"]
    embeddings = [torch.zeros(0, IDENTITY_DIM)]
    attributes = [torch.zeros(0, ATTRIBUTE_DIM)]
    with FaceDetector(video=False) as detector:
        encoder = IdentityEncoder()
        for clip in clips:
            info = probe(clip)
            wanted = set(np.linspace(0, max(info.frame_count - 1, 0), frames_per_clip)
                         .round().astype(int).tolist())
            images, lm68s = [], []
            with closing(read_frames(info)) as frames:
                for i, frame in enumerate(frames):
                    if i in wanted and (faces := detector(frame)):
                        images.append(frame)
                        lm68s.append(max(faces, key=lambda f: f.area).lm68)
                    if i >= max(wanted):
                        break
            embeddings.append(torch.from_numpy(encoder(images, lm68s)))
            if attribute_encoder is not None and images:
                crops = np.stack([align_crop(image, square_from_landmarks(lm68), 128)
                                  for image, lm68 in zip(images, lm68s, strict=True)])
                attributes.append(crop_attribute_codes(attribute_encoder,
                                                       torch.from_numpy(crops)))
    codes = clip_code(torch.cat(embeddings), None if attribute_encoder is None
                      else torch.cat(attributes)).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    save_file({"codes": codes}, str(tmp))
    os.replace(tmp, path)
    return codes
