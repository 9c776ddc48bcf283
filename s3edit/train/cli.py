"""`s3edit train ...`: the commands that fit the models, each a thin layer over a trainer in
s3edit/train/ (imported when the command runs: see s3edit/cli.py)."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from s3edit.cli_shared import Device, EditorName, fail, stderr
from s3edit.errors import UsageError
from s3edit.train.config import HOLDOUT, S3TrainConfig

S3 = S3TrainConfig  # its field defaults are the s3 options' defaults

train_app = typer.Typer(help="Train the autoencoder and the attribute editors.")


def run_trainer(train: Callable[[], Path], data: Path, verbose: bool,
                pack_ok: bool = False) -> None:
    """Check the data folder (or pack, where `pack_ok`), train, print the folder written; an
    error becomes one line and its exit code."""
    from s3edit.train.pack import is_pack

    try:
        if not (data.is_dir() or (pack_ok and is_pack(data))):
            raise UsageError(f"--data {data}: no such folder" + (" or pack" if pack_ok else ""))
        typer.echo(train())
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


class LossWeighting(str, Enum):
    plain = "plain"
    truncated_snr = "truncated-snr"


class Prediction(str, Enum):
    epsilon = "epsilon"
    v = "v_prediction"


class SparseGroups(str, Enum):
    neurons = "neurons"
    regions = "regions"


class OverEditing(str, Enum):
    codes = "codes"
    decoded = "decoded"


@train_app.command("autoencoder")
def train_autoencoder_cmd(
    data: Annotated[Path, typer.Option(help="CelebAMask-HQ-style folder of face images, or "
                                       "a pack of one (`s3edit train pack`).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, samples, log.")],
    steps: Annotated[int, typer.Option(min=1)] = 100_000,
    resolution: Annotated[int | None, typer.Option(
        help="Training resolution (64 on CPU, 128 on a GPU). Default: the checkpoint's when "
             "resuming, else 64; another value fine-tunes the checkpoint at that resolution.",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float, typer.Option()] = 2e-4,
    fusion_lr_scale: Annotated[float, typer.Option(
        help="Learning rate of the code fusion MLP, as a multiple of --lr.")] = 1.0,
    reg_weight: Annotated[float, typer.Option(help="Weight of the x0-agreement regulariser "
                                              "inside the face mask.")] = 0.1,
    prediction: Annotated[Prediction, typer.Option(
        help="What the UNet predicts, for a fresh run (a resumed run keeps its own): the "
        "noise, or v, which is the face itself at high noise.")] = Prediction.epsilon,
    template_resolution: Annotated[int, typer.Option(
        min=0, help="Side of the coarse image drawn linearly from the codes and fed to the UNet "
        "beside the noisy image, for a fresh run (0: none).")] = 0,
    loss_weighting: Annotated[LossWeighting, typer.Option(
        help="plain: MSE of the UNet's output. truncated-snr: x0 error weighted max(SNR, 1), "
        "which stresses the high-noise steps where only the codes tell faces apart.")]
    = LossWeighting.plain,
    attributes: Annotated[bool, typer.Option(
        "--attributes/--no-attributes", help="Put the 40 CelebA labels in the clip code, for a "
        "fresh run (then apply needs weights/attribute_encoder/ to measure them).")] = True,
    oversample: Annotated[list[str] | None, typer.Option(
        help="Attribute whose images are drawn at least --oversample-share of the time "
        "(repeatable; default Eyeglasses). A+B draws the images that have both, e.g. "
        "blond_hair+male.")] = None,
    oversample_share: Annotated[float, typer.Option(min=0, max=1)] = 0.2,
    clear_eyeglasses: Annotated[bool, typer.Option(
        "--clear-eyeglasses/--any-eyeglasses", help="Eyeglasses means clear spectacles: "
        "faces whose lenses are much darker than their cheeks (sunglasses) lose the label.")]
    = True,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="bf16 autocast (1.5x on CPUs "
                                       "with AVX512-BF16).")] = True,
    holdout: Annotated[int, typer.Option(help="Last N images kept out for validation.")]
    = HOLDOUT,
    limit: Annotated[int | None, typer.Option(help="Train on the first N images only.")]
    = None,
    max_minutes: Annotated[float | None, typer.Option(
        min=0, help="Stop (with a checkpoint) after this many minutes.")] = None,
    save_every: Annotated[int, typer.Option(min=1)] = 250,
    sample_every: Annotated[int, typer.Option(min=1)] = 1000,
    device: Annotated[Device, typer.Option()] = Device.auto,
    seed: Annotated[int, typer.Option()] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the diffusion face autoencoder; resumes from OUT/checkpoint if present.

    Multi-GPU: accelerate launch -m s3edit train autoencoder --data ... --out ...
    """
    from s3edit.edit.attributes import resolve_combination
    from s3edit.train.autoencoder import (
        AutoencoderTrainConfig,
        checkpoint_resolution,
        train_autoencoder,
    )

    if resolution is None:
        resolution = checkpoint_resolution(out / "checkpoint") or 64

    def train() -> Path:
        oversampled = tuple(resolve_combination(name) for name in oversample or ["Eyeglasses"])
        cfg = AutoencoderTrainConfig(data=data, out=out, resolution=resolution, steps=steps,
                                     batch_size=batch_size, lr=lr, fusion_lr_scale=fusion_lr_scale,
                                     reg_weight=reg_weight, prediction_type=prediction.value,
                                     template_resolution=template_resolution,
                                     loss_weighting=loss_weighting.value,
                                     attribute_code=attributes, bf16=bf16,
                                     oversample=oversampled,
                                     oversample_share=oversample_share,
                                     clear_eyeglasses=clear_eyeglasses,
                                     holdout=holdout, limit=limit, max_minutes=max_minutes,
                                     save_every=save_every, sample_every=sample_every,
                                     seed=seed, device=device.value)
        return train_autoencoder(cfg, progress=stderr.is_terminal)

    run_trainer(train, data, verbose, pack_ok=True)


@train_app.command("pack")
def train_pack_cmd(
    data: Annotated[Path, typer.Option(help="CelebAMask-HQ-style folder of face images.")],
    out: Annotated[Path, typer.Option(help="The pack file to write (.npz).")],
    resolution: Annotated[int, typer.Option(help="The training resolution.")] = 64,
    limit: Annotated[int | None, typer.Option(help="Pack the first N images only.")] = None,
    holdout: Annotated[int, typer.Option(help="Last N images kept out (16 of them travel, "
                                         "for the sample grids).")] = HOLDOUT,
    quality: Annotated[int, typer.Option(min=1, max=100, help="WebP quality of the faces.")]
    = 90,
    clear_eyeglasses: Annotated[bool, typer.Option("--clear-eyeglasses/--any-eyeglasses")]
    = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Pack the faces `train autoencoder` would train on into one small file, which
    `train autoencoder --data PACK` reads without the folder or the face stack (for a lent
    GPU: see scripts/gpu_train.py)."""
    from s3edit.train.autoencoder import AutoencoderTrainConfig
    from s3edit.train.pack import write_pack

    cfg = AutoencoderTrainConfig(data=data, out=out.parent, resolution=resolution, limit=limit,
                                 holdout=holdout, clear_eyeglasses=clear_eyeglasses)
    run_trainer(lambda: write_pack(cfg, out, quality), data, verbose)


@train_app.command("attribute-encoder")
def train_attribute_encoder_cmd(
    data: Annotated[Path, typer.Option(help="CelebAMask-HQ-style folder (images, labels).")],
    out: Annotated[Path, typer.Option(help="Output folder: weights, metrics.json, log.")],
    steps: Annotated[int, typer.Option(min=1)] = 3000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option()] = 2e-3,
    available_only: Annotated[bool, typer.Option(
        "--available-only", help="Train on the cache shards already built instead of "
        "building the missing ones.")] = False,
    device: Annotated[Device, typer.Option()] = Device.auto,
    seed: Annotated[int, typer.Option()] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the image attribute encoder whose 40 codes condition the autoencoder (images
    7000-27999; a different network and split from the evaluation classifier)."""
    from s3edit.train.attribute_encoder import (
        AttributeEncoderTrainConfig,
        train_attribute_encoder,
    )

    cfg = AttributeEncoderTrainConfig(data=data, out=out, steps=steps, batch_size=batch_size,
                                      lr=lr, available_only=available_only, seed=seed,
                                      device=device.value)
    run_trainer(lambda: train_attribute_encoder(cfg, progress=stderr.is_terminal), data,
                verbose)


@train_app.command("editor")
def train_editor_cmd(
    data: Annotated[list[str], typer.Option(help="A CelebAMask-HQ folder (labels), a folder "
                    "of videos, or a data set name (celebahq, voxceleb) under "
                    "$S3EDIT_DATA_ROOT; repeat to combine.")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/classifier, OUT/expression "
                   "and OUT/<editor>.")],
    editor: Annotated[EditorName, typer.Option(help="Which editor to train (the latent "
                      "classifiers, which linear uses as is, and the expression directions "
                      "are fitted first).")]
    = EditorName.s3,
    classifier: Annotated[Path | None, typer.Option(help="Reuse these latent classifiers "
                          "instead of training them.")] = None,
    clusters: Annotated[int, typer.Option(min=1, help="s3: attribute clusters, one transform "
                                          "each (1 = no routing).")] = S3.clusters,
    sparsity: Annotated[float, typer.Option(min=0, max=0.9, help="s3: target share of "
                                            "sparsity groups switched off.")]
    = S3.sparsity,
    sparse_groups: Annotated[SparseGroups, typer.Option(help="s3: what a sparsity group is: "
                             "a block of hidden neurons (neurons), or what a cluster's "
                             "transform writes into one region of the clip code: identity, "
                             "eyes, mouth, face, hair (regions; those that change most where "
                             "the cluster's attributes should not are switched off first).")]
    = SparseGroups.neurons,
    over_editing: Annotated[OverEditing, typer.Option(help="s3 with region groups: how a "
                            "group's over-editing is measured: the change it writes into code "
                            "regions the attribute does not live in (codes), or the locality "
                            "its switching off gains on decoded training faces (decoded; "
                            "decodes with --decoder).")]
    = OverEditing.codes,
    decoder: Annotated[Path | None, typer.Option(help="The autoencoder --over-editing decoded "
                       "decodes with. Default: the default weights'.")] = None,
    self_training: Annotated[bool, typer.Option(help="s3: learn from pseudo-edits (random "
                             "attribute and strength); off, only from the edits the CelebA "
                             "labels define.")]
    = S3.self_training,
    holdout_attrs: Annotated[list[str] | None, typer.Option(help="s3: attributes left out of "
                             "training (edited through their nearest cluster).")] = None,
    faith_correlation: Annotated[bool, typer.Option(help="s3: in the faithfulness loss, weigh "
                                 "each other attribute by 1 - |correlation| with the edited "
                                 "one, so what comes with it in real faces may move.")]
    = S3.faith_correlation,
    steps: Annotated[int, typer.Option(min=1)] = S3.steps,
    holdout: Annotated[int, typer.Option(help="Last N images kept out for validation.")]
    = HOLDOUT,
    limit: Annotated[int | None, typer.Option(help="Use the first N images only.")] = None,
    attribute_encoder: Annotated[Path | None, typer.Option(help="An image attribute encoder's "
                                 "folder (`s3edit train attribute-encoder`): the editors then "
                                 "move clip codes of 168 values, the identity code and its 40 "
                                 "attribute values of each face. Default: the 128-d identity "
                                 "codes alone.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the attribute editors on clip codes of faces.

    linear: class-balanced logistic regressions of the 40 attributes (their directions are the
    edit). lt: Latent Transformer heads. s3: S3Editor transforms (self-trained, routed by
    attribute cluster, group-sparse). Example:
    s3edit train editor --data celebahq --data voxceleb --out runs/editors --editor s3
    """
    from s3edit.train.config import LtTrainConfig
    from s3edit.train.datasets import editor_data
    from s3edit.train.editors import train_classifier, train_expression, train_lt, train_s3
    from s3edit.train.parallel import launched_accelerator

    try:
        sources = editor_data(data)
        if editor is EditorName.s3 and not self_training and sources.videos:
            raise UsageError("--no-self-training learns the labelled edits of CelebA faces "
                             "alone; the clips' codes have no labels (drop the video --data)")
        if over_editing is OverEditing.decoded and (editor is not EditorName.s3
                                                    or sparse_groups is not SparseGroups.regions
                                                    or attribute_encoder is None):
            raise UsageError("--over-editing decoded ranks the region groups of s3 on decoded "
                             "faces: it needs --editor s3 --sparse-groups regions and "
                             "--attribute-encoder")
        split = {"holdout": holdout, "limit": limit}
        encoder = None if attribute_encoder is None else load_attribute_encoder(attribute_encoder)
        with launched_accelerator("cpu") as accelerator:
            # The main process fits the classifiers (and fills the code caches) before the
            # others read them.
            with accelerator.main_process_first():
                if classifier is None:
                    classifier = out / "classifier"
                    if accelerator.is_main_process:
                        typer.echo(train_classifier(sources.faces, out, **split,
                                                    attribute_encoder=encoder))
                        typer.echo(train_expression(sources.faces, out, **split))
            run = {**split, "progress": stderr.is_terminal and accelerator.is_main_process,
                   "attribute_encoder": encoder, "accelerator": accelerator}
            if editor is EditorName.lt:
                folder = train_lt(sources.faces, out, classifier, LtTrainConfig(steps=steps),
                                  **run)
            elif editor is EditorName.s3:
                cfg = S3TrainConfig(clusters=clusters, sparsity=sparsity,
                                    groups=sparse_groups.value,
                                    over_editing=over_editing.value,
                                    self_training=self_training,
                                    holdout_attrs=tuple(holdout_attrs or ()),
                                    faith_correlation=faith_correlation, steps=steps)
                videos = sources.videos[0] if sources.videos else None
                folder = train_s3(sources.faces, out, classifier, cfg, videos=videos,
                                  decoder=decoder, **run)
            else:
                folder = None
            if folder is not None and accelerator.is_main_process:
                typer.echo(folder)
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


def load_attribute_encoder(folder: Path):
    from s3edit.face.attributes import AttributeEncoder
    from s3edit.weights import resolve_device

    if not (folder / "config.json").is_file():
        raise UsageError(f"--attribute-encoder {folder}: no config.json there (train one with "
                         "`s3edit train attribute-encoder`)")
    return AttributeEncoder.from_pretrained(folder).to(resolve_device("auto")).eval()


@train_app.command("expression")
def train_expression_cmd(
    data: Annotated[str, typer.Option(help="A CelebAMask-HQ folder (labels and landmarks), or "
                    "celebahq under $S3EDIT_DATA_ROOT.")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/expression.")],
    holdout: Annotated[int, typer.Option(help="Last N images kept out for validation.")]
    = HOLDOUT,
    limit: Annotated[int | None, typer.Option(help="Use the first N images only.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit the landmark directions that expression attributes (smiling, mouth_slightly_open,
    high_cheekbones, narrow_eyes) are edited along: the mean landmark code of the faces with
    the attribute minus that of the faces without. Example:
    s3edit train expression --data celebahq --out runs/editors
    """
    from s3edit.train.datasets import is_labelled_faces, resolve_data
    from s3edit.train.editors import train_expression

    try:
        folder = resolve_data(data)
        if not is_labelled_faces(folder):
            raise UsageError(f"--data {data} ({folder}): not a CelebAMask-HQ layout (no "
                             "attribute labels)")
        typer.echo(train_expression(folder, out, holdout, limit))
    except (Exception, KeyboardInterrupt) as error:
        raise typer.Exit(fail(error, verbose)) from None


@train_app.callback(invoke_without_command=True)
def train_default(
    ctx: typer.Context,
    data: Annotated[list[str] | None, typer.Option(help="Data for the editors (as in `train "
                    "editor`): `s3edit train --data voxceleb` trains the S3Editor transforms.")]
    = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/editors"),
    attribute_encoder: Annotated[Path | None, typer.Option(help="As in `train editor`.")]
    = None,
) -> None:
    """Train the autoencoder and the attribute editors."""
    if ctx.invoked_subcommand is not None:
        return
    if not data:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    train_editor_cmd(data=data, out=out, attribute_encoder=attribute_encoder)


@train_app.command("image-classifier")
def train_image_classifier_cmd(
    data: Annotated[Path, typer.Option(help="CelebAMask-HQ-style folder.")],
    out: Annotated[Path, typer.Option(help="Output folder (OUT/image_classifier).")],
    limit: Annotated[int | None, typer.Option(help="Use the first N images only.")] = 7000,
    holdout: Annotated[int, typer.Option()] = HOLDOUT,
    steps: Annotated[int, typer.Option(min=1)] = 6000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    resolution: Annotated[int, typer.Option(min=16, max=128,
                                            help="Side of the crops it looks at.")] = 64,
    balance_by: Annotated[str | None, typer.Option(
        help="Balance each attribute's positives and negatives within both halves of this "
             "attribute too (Male: blond men weigh as much as blond women).")] = None,
    device: Annotated[Device, typer.Option()] = Device.auto,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the image-space attribute classifier that `s3edit eval` grades edits with (a
    small CNN on aligned 64 px crops, so edits are not graded in the space that made them)."""
    from s3edit.train.image_classifier import train_image_classifier
    from s3edit.weights import resolve_device

    run_trainer(lambda: train_image_classifier(
        data, out, steps=steps, batch_size=batch_size, limit=limit, holdout=holdout,
        resolution=resolution, balance_by=balance_by, device=str(resolve_device(device.value)),
        progress=stderr.is_terminal), data, verbose)
