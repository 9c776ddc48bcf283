"""Losses on decoded faces for the S3Editor transforms (issue 16), as the paper computes them.

An edited clip code is decoded into a face, with gradients, and judged there: identity by
dlib's face-recognition network in PyTorch (the network that made the identity code, so L_id
asks the decoded face to stay the same person), the attributes by the attribute encoder, an
image classifier that is neither the latent classifiers whose weights are the edit directions
nor the evaluation classifier of `s3edit eval`.

Decoding is made affordable on a CPU: each face's noise map is DDIM-inverted once (as apply
inverts) and kept; an edit is decoded from it in `decode_steps` DDIM steps. At 5 steps the
image classifier's eyeglasses call agrees with the 10-step decode on 90% of held-out faces
(correlation 0.93; the 1-step predicted x0 agrees on 58-65%, bench/README.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s3edit.edit.expression import within_value_limits
from s3edit.edit.s3 import CODE_REGIONS, S3Editor
from s3edit.edit.sparsity import GroupSparseOptimizer
from s3edit.errors import UsageError
from s3edit.face.attributes import AttributeEncoder
from s3edit.face.identity import IdentityEncoder
from s3edit.face.identity_torch import DlibFaceNet, chip_matrix, warp_to_chip
from s3edit.face.mask import attribute_region, face_mask, region_mask
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import clip_code, landmark_code
from s3edit.model.face_model import uses_bf16
from s3edit.progress import training_bar
from s3edit.train.cache import FaceShard, cached_split, first_faces, load_shards
from s3edit.train.celeba import celeba_images
from s3edit.train.editor_losses import faithfulness_loss, fit_gaussian, manifold_loss


@dataclass
class InvertedFaces:
    """Faces ready to decode edits of: per face (N rows) its clip code, landmark code,
    inverted noise map, dlib chip map, face mesh, and what the judges say of its unedited
    decode."""

    codes: torch.Tensor  # (N, D) clip codes, attribute part from the attribute encoder
    landmarks: torch.Tensor  # (N, 102)
    noise: torch.Tensor  # (N, 3, R, R) DDIM-inverted noise maps
    chip_maps: torch.Tensor  # (N, 2, 3) model-resolution pixels -> dlib chip pixels
    meshes: torch.Tensor  # (N, 478, 2) face meshes in model-resolution pixels
    embeddings: torch.Tensor  # (N, 128) dlib descriptors of the unedited decodes
    probabilities: torch.Tensor  # (N, 40) attribute-encoder probabilities of those decodes

    def __len__(self) -> int:
        return len(self.codes)

    def rows(self, index: torch.Tensor) -> InvertedFaces:
        return InvertedFaces(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


class DecodedFaceJudge:
    """Decodes edited clip codes from the faces' noise maps and judges the faces."""

    def __init__(self, model: DiffusionFaceAutoencoder, attribute_encoder: AttributeEncoder,
                 face_net: DlibFaceNet, decode_steps: int = 5, bf16: bool = False):
        self.model = model.requires_grad_(False).eval()
        self.attribute_encoder = attribute_encoder.requires_grad_(False).eval()
        self.face_net = face_net.requires_grad_(False).eval()
        self.decode_steps = decode_steps
        self.bf16 = bf16

    def decode(self, faces: InvertedFaces, codes: torch.Tensor) -> torch.Tensor:
        """Faces (N, 3, R, R) in [-1, 1] decoded from the noise maps under `codes` (N, D)."""
        z = self.model.z_face(codes, faces.landmarks)
        return self.model.sample(faces.noise, z, self.decode_steps, bf16=self.bf16)

    def embeddings(self, images: torch.Tensor, chip_maps: torch.Tensor) -> torch.Tensor:
        """dlib descriptors (N, 128) of faces in [-1, 1], through their chip maps."""
        return self.face_net(warp_to_chip((images + 1) * 127.5, chip_maps))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Attribute-encoder probabilities (N, 40) of faces in [-1, 1]."""
        return self.attribute_encoder(images).sigmoid()


@torch.no_grad()
def invert_faces(judge: DecodedFaceJudge, shards: list[FaceShard], steps: int = 10,
                 refine: int = 3, batch: int = 16) -> InvertedFaces:
    """The faces of cached shards inverted at the model's resolution (apply's steps and
    refinement), with their dlib chip maps and the judges' view of their unedited decodes."""
    model, size = judge.model, judge.model.config.resolution
    identity = IdentityEncoder()
    parts = []
    for shard in shards:
        for i in range(0, len(shard.crops), batch):
            crops = shard.crops[i:i + batch]
            images = F.interpolate(crops.permute(0, 3, 1, 2).float() / 127.5 - 1, size=size,
                                   mode="area")
            codes = clip_code(shard.identity[i:i + batch],
                              judge.attribute_encoder.codes(images))
            landmarks = landmark_code(shard.lm68[i:i + batch])
            noise = model.invert(images, model.z_face(codes, landmarks), steps, refine,
                                 judge.bf16)
            # The chip is found on the cached crop; scaled to the model's pixels.
            crop_size = crops.shape[1]
            scale = np.diag([crop_size / size, crop_size / size, 1.0])
            maps = torch.from_numpy(np.stack([
                chip_matrix(identity.landmarks5(crop.numpy(), lm.numpy() * crop_size)) @ scale
                for crop, lm in zip(crops, shard.lm68[i:i + batch], strict=True)])).float()
            meshes = shard.mesh[i:i + batch].float() * size
            part = InvertedFaces(codes, landmarks, noise, maps, meshes, torch.zeros(0),
                                 torch.zeros(0))
            decoded = judge.decode(part, codes)
            part.embeddings = judge.embeddings(decoded, maps)
            part.probabilities = judge.probabilities(decoded)
            parts.append(part)
    return InvertedFaces(*(torch.cat([getattr(p, f) for p in parts])
                           for f in InvertedFaces.__dataclass_fields__))


def probe_faces(data: Path, decoder: Path, attribute_encoder: AttributeEncoder | None,
                count: int, holdout: int, limit: int | None = None
                ) -> tuple[DecodedFaceJudge, InvertedFaces]:
    """A judge with the autoencoder in `decoder`, on the CPU, and the first `count` training
    faces of a CelebAMask-HQ folder inverted by it: what `decoded_over_editing` decodes."""
    if attribute_encoder is None:
        raise UsageError("over-editing on decoded faces needs --attribute-encoder (the "
                         "decoder reads clip codes with attribute values)")
    if not (decoder / "config.json").is_file():
        raise UsageError(f"--decoder {decoder}: no config.json there")
    model = DiffusionFaceAutoencoder.from_pretrained(decoder)
    judge = DecodedFaceJudge(model, copy.deepcopy(attribute_encoder).cpu(),
                             DlibFaceNet.from_dat(), bf16=uses_bf16("auto", torch.device("cpu")))
    return judge, inverted_celeba(judge, data, count, holdout, limit)


def inverted_celeba(judge: DecodedFaceJudge, data: Path, count: int, holdout: int,
                    limit: int | None = None, held: bool = False) -> InvertedFaces:
    """The first `count` training (or, `held`, held-out) faces of a CelebAMask-HQ folder,
    split as the trainers split it, inverted by the judge's model."""
    split = cached_split(celeba_images(data), holdout, limit, progress=False)
    shards = load_shards(split.folder, split.held if held else split.train)
    return invert_faces(judge, first_faces(shards, count))


def edit_masks(faces: InvertedFaces, attrs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, R, R) masks for an edit of attrs[i] on face i: where the edit belongs (the region
    `s3edit eval` measures locality in) and what apply pastes (`face_mask`)."""
    size = faces.noise.shape[-1]
    meshes = faces.meshes.numpy()
    inside = np.stack([region_mask(m, (size, size), attribute_region(a))
                       for m, a in zip(meshes, attrs, strict=True)])
    paste = np.stack([face_mask(m, (size, size), attr=a) for m, a in zip(meshes, attrs,
                                                                            strict=True)])
    return torch.from_numpy(inside), torch.from_numpy(paste)


def pasted_change(images: torch.Tensor, unedited: torch.Tensor, inside: torch.Tensor,
                  paste: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per face, of what apply would paste of the change from `unedited` to `images` (N, 3, R,
    R): the share inside the attribute's region (locality, as `s3edit eval` has it) and the
    mean change per pasted pixel outside it (0-255 levels)."""
    change = (images - unedited).abs().mean(1).float() * 127.5 * paste
    locality = (change * inside).sum((1, 2)) / change.sum((1, 2)).clamp(min=1e-6)
    outside = (change * (1 - inside)).sum((1, 2)) / paste.sum((1, 2)).clamp(min=1)
    return locality, outside


@torch.no_grad()
def decoded_over_editing(editor: S3Editor, judge: DecodedFaceJudge, faces: InvertedFaces,
                         attributes: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(clusters * regions,) for region groups: what switching each group off gains in
    locality on decoded faces; higher, switched off first.

    Each cluster's transform edits every face once, by one of the cluster's `attributes`
    (indices) in turn, at a strength of 0.3-1 either way (the same draws at every call). The
    edits are decoded as apply decodes them (value limits, then from the inverted noise) with
    all groups, then with each active group of the cluster off, and each decode's locality
    is read through apply's paste mask. Over-editing is measured where the user sees it:
    writes into the edited attribute's own code region can still draw outside its image
    region (bench/edit_regions.py), which the code-space score cannot see."""
    t = editor.transform
    names = editor.classifier.config.attributes
    regions = len(CODE_REGIONS)
    scores = torch.zeros(t.active.numel())
    unedited = judge.decode(faces, faces.codes)
    gen = torch.Generator().manual_seed(seed)
    n = len(faces)
    for k in range(t.gate.shape[0]):
        members = attributes[t.cluster_of[attributes] == k]
        if not len(members):
            continue
        attr = members[torch.arange(n) % len(members)]
        strength = torch.rand(n, generator=gen) * 0.7 + 0.3
        gamma = torch.where(torch.rand(n, generator=gen) < 0.5, -strength, strength)
        attr_names = [names[i] for i in attr.tolist()]
        edits = (attr, gamma, attr_names, *edit_masks(faces, attr_names))
        full = _pasted_locality(editor, judge, faces, unedited, *edits)
        for r in range(regions):
            if not t.active[k * regions + r]:
                continue
            gate = t.gate[k, r].item()
            t.gate[k, r] = 0
            scores[k * regions + r] = (_pasted_locality(editor, judge, faces, unedited, *edits)
                                       - full).mean()
            t.gate[k, r] = gate
    return scores


def _pasted_locality(editor: S3Editor, judge: DecodedFaceJudge, faces: InvertedFaces,
                     unedited: torch.Tensor, attr: torch.Tensor, gamma: torch.Tensor,
                     attr_names: list[str], inside: torch.Tensor, paste: torch.Tensor
                     ) -> torch.Tensor:
    """Per face, the locality of its edit (attribute attr[i], strength gamma[i]) as apply
    would decode and paste it (masks from `edit_masks`)."""
    edited = editor.edit_batch(faces.codes, attr, gamma)
    edited = torch.stack([within_value_limits(code, a)
                          for code, a in zip(edited, attr_names, strict=True)])
    return pasted_change(judge.decode(faces, edited), unedited, inside, paste)[0]


@dataclass
class DecodedTrainConfig:
    """Fine-tuning of trained S3Editor transforms on decoded faces: lambda_id * L_id +
    lambda_faith * L_faith + lambda_gen * L_gen, L_id and L_faith on the decoded faces."""

    steps: int = 150
    batch: int = 4
    lr: float = 3e-4
    lambda_id: float = 20.0  # 1 - cos of dlib descriptors: about 0.02-0.05 for an edit
    lambda_faith: float = 1.0
    lambda_gen: float = 1.0
    seed: int = 0


def finetune_s3(editor: S3Editor, faces: InvertedFaces, judge: DecodedFaceJudge,
                codes: torch.Tensor, cfg: DecodedTrainConfig | None = None,
                progress: bool = True) -> S3Editor:
    """Fine-tune `editor`'s transforms (in place) with losses on decoded faces.

    Each step draws faces, a seen attribute and gamma ~ U(-1, 1) each, as `fit_s3` does,
    decodes the pseudo-edit and charges: the dlib descriptor's turn away from the unedited
    decode's (L_id), the other attributes' probability changes minus gamma times the
    target's (L_faith, the attribute encoder's probabilities), and the code's Mahalanobis
    growth under the Gaussian of `codes` (L_gen, as in `fit_s3`). Deactivated groups of the
    sparsity mask stay zero. The factor on the target's move is freed first (a transform
    trained by `fit_s3` becomes `with_free_factor()`), so the decoded faces decide whether an
    attribute's edit should be longer or shorter.
    """
    cfg = cfg or DecodedTrainConfig()
    if editor.transform.config.target_move == "boost":
        editor.transform = editor.transform.with_free_factor()
    model, classifier = editor.transform, editor.classifier
    gen = torch.Generator().manual_seed(cfg.seed)
    mean, precision = fit_gaussian(classifier.normalize(codes))
    seen = torch.arange(len(classifier.config.attributes))
    # Sparsity target 0: the wrapper only keeps the groups fit_s3 dropped at zero.
    optimizer = GroupSparseOptimizer(torch.optim.Adam(model.parameters(), lr=cfg.lr),
                                     model.sparsity_members(), model.active, 0.0, start=0,
                                     stop=1)
    model.train()
    with training_bar(enabled=progress) as bar:
        task = bar.add_task("fine-tuning on decoded faces", total=cfg.steps)
        for _ in range(cfg.steps):
            rows = torch.randint(len(faces), (cfg.batch,), generator=gen)
            batch = faces.rows(rows)
            attr = seen[torch.randint(len(seen), (cfg.batch,), generator=gen)]
            gamma = torch.rand(cfg.batch, generator=gen) * 2 - 1
            edited = editor.edit_batch(batch.codes, attr, gamma)
            images = judge.decode(batch, edited)
            identity = 1 - F.cosine_similarity(judge.embeddings(images, batch.chip_maps),
                                               batch.embeddings, dim=-1).mean()
            faith = faithfulness_loss(batch.probabilities, judge.probabilities(images), attr,
                                      gamma)
            gen_loss = manifold_loss(classifier.normalize(edited),
                                     classifier.normalize(batch.codes), mean, precision)
            loss = cfg.lambda_id * identity + cfg.lambda_faith * faith + cfg.lambda_gen * gen_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update(task, advance=1)
    model.eval()
    return editor
