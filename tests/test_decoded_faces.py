"""Losses on decoded faces for the S3Editor transforms: real faces, a small untrained decoder,
dlib's real identity network."""

from pathlib import Path

import pytest
import torch
from helpers import celeba_subset

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.classifier import fit_classifier
from s3edit.edit.s3 import CODE_REGIONS, S3Editor, S3Transform
from s3edit.errors import UsageError
from s3edit.face.attributes import AttributeEncoder
from s3edit.face.identity_torch import DlibFaceNet
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import ATTRIBUTE_DIM, IDENTITY_DIM
from s3edit.train.cache import cached_split, load_shards
from s3edit.train.celeba import celeba_images
from s3edit.train.config import S3TrainConfig
from s3edit.train.decoded_faces import (
    DecodedFaceJudge,
    DecodedTrainConfig,
    decoded_over_editing,
    edit_masks,
    finetune_s3,
    invert_faces,
    pasted_change,
)
from s3edit.train.editors import fit_s3

CLIP_DIM = IDENTITY_DIM + ATTRIBUTE_DIM


@pytest.fixture(scope="module")
def judged(shared_data: Path, tmp_path_factory):
    """Eight real faces inverted by a small decoder, and the judges."""
    root = tmp_path_factory.mktemp("decoded")
    data = celeba_subset(shared_data / "CelebAMask-HQ-128", root / "celeba", count=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("S3EDIT_CACHE", str(root / "cache"))
        split = cached_split(celeba_images(data), holdout=0, progress=False)
        shards = list(load_shards(split.folder, split.train))
    torch.manual_seed(0)
    model = DiffusionFaceAutoencoder(resolution=32, block_out_channels=(8, 16),
                                     attention_levels=(), fusion_hidden=32, attribute_dim=40)
    judge = DecodedFaceJudge(model, AttributeEncoder(resolution=32).eval(),
                             DlibFaceNet.from_dat(), decode_steps=2)
    return judge, invert_faces(judge, shards, steps=2, refine=0, batch=3)


def test_inverted_faces_hold_the_unedited_decodes_judgement(judged):
    judge, faces = judged
    n = len(faces)
    assert n >= 7 and faces.codes.shape == (n, CLIP_DIM)
    assert faces.noise.shape == (n, 3, 32, 32) and faces.chip_maps.shape == (n, 2, 3)
    with torch.no_grad():
        decoded = judge.decode(faces, faces.codes)
        torch.testing.assert_close(judge.embeddings(decoded, faces.chip_maps), faces.embeddings)
        torch.testing.assert_close(judge.probabilities(decoded), faces.probabilities)
    # The chip maps put the faces' centres (the middle of the aligned crop) inside the chip.
    centre = torch.tensor([16.0, 16.0, 1.0])
    assert ((faces.chip_maps @ centre - 75).abs() < 40).all()


def test_a_loss_on_the_decoded_face_reaches_the_transform(judged):
    judge, faces = judged
    codes = faces.codes
    labels = (torch.rand(len(codes), 40, generator=torch.Generator().manual_seed(0)) > 0.5)
    editor = S3Editor(S3Transform(dim=CLIP_DIM, hidden=16, clusters=1),
                      fit_classifier(codes, labels.float(), steps=5))
    editor.transform.w3.data.normal_(0, 0.1)  # a transform that does something
    attr = torch.zeros(len(codes), dtype=torch.long)
    images = judge.decode(faces, editor.edit_batch(codes, attr, torch.full((len(codes),), 0.5)))
    images.mean().backward()
    assert editor.transform.w3.grad.abs().sum() > 0
    assert all(p.grad is None for p in judge.model.parameters()), "the decoder stays frozen"


def test_finetuning_moves_the_transform_and_keeps_dropped_groups_at_zero(judged):
    judge, faces = judged
    codes = faces.codes
    labels = (torch.rand(len(codes), 40, generator=torch.Generator().manual_seed(1)) > 0.5)
    transform = S3Transform(dim=CLIP_DIM, hidden=16, clusters=1)
    transform.active[0] = False
    for p, index in transform.sparsity_members():
        p.data[index == 0] = 0
    editor = S3Editor(transform, fit_classifier(codes, labels.float(), steps=5))
    finetune_s3(editor, faces, judge, codes, DecodedTrainConfig(steps=2, batch=2),
                progress=False)
    tuned = editor.transform
    assert tuned.config.target_move == "factor", "fine-tuning frees the target move's factor"
    assert not torch.equal(tuned.w3[..., :-1], transform.w3[..., :-1])
    assert tuned.b3[:, -1].abs().max() > 0, "the factor left 1"
    for p, index in tuned.sparsity_members():
        assert (p[index == 0] == 0).all()


def region_editor(faces, clusters: int = 2) -> S3Editor:
    """A region-group transform that writes something, the first attributes routed to 0."""
    labels = (torch.rand(len(faces), 40, generator=torch.Generator().manual_seed(2)) > 0.5)
    transform = S3Transform(dim=CLIP_DIM, hidden=16, clusters=clusters, groups="regions")
    transform.cluster_of[:] = torch.arange(40) >= 20
    torch.manual_seed(3)
    transform.w3.data.normal_(0, 0.2)
    return S3Editor(transform, fit_classifier(faces.codes, labels.float(), steps=5))


def test_masks_and_locality_follow_the_edited_attribute(judged):
    _, faces = judged
    n = len(faces)
    inside, paste = edit_masks(faces, ["Eyeglasses"] * n)
    hair_inside, hair_paste = edit_masks(faces, ["Blond_Hair"] * n)
    assert inside.shape == paste.shape == (n, 32, 32)
    # The eyes lie inside the pasted oval; the hair lies outside it, pasted for hair edits only.
    assert ((inside * paste).sum((1, 2)) > 0.5 * inside.sum((1, 2))).all()
    assert (hair_paste.sum((1, 2)) > paste.sum((1, 2))).all()
    assert ((hair_inside * paste).sum((1, 2)) < 0.1 * hair_inside.sum((1, 2))).all()
    # A change inside the region alone is all local; one outside it alone, not at all.
    unedited = torch.zeros(n, 3, 32, 32)
    local, outside = pasted_change(unedited + inside[:, None], unedited, inside, paste)
    assert torch.allclose(local[paste.sum((1, 2)) > 0], torch.ones(1), atol=1e-5)
    assert (outside == 0).all()
    away, outside = pasted_change(unedited + (1 - inside[:, None]), unedited, inside, paste)
    assert (away < 1e-6).all() and (outside > 0).all()


def test_decoded_over_editing_scores_a_group_by_the_locality_its_switching_off_gains(judged):
    judge, faces = judged
    editor = region_editor(faces)
    t = editor.transform
    gates = t.gate.detach().clone()
    t.active[1 * len(CODE_REGIONS) + 0] = False  # cluster 1's identity group: off
    probed = torch.tensor([ATTRIBUTES.index("Eyeglasses"), ATTRIBUTES.index("Young")])
    scores = decoded_over_editing(editor, judge, faces, probed)
    assert torch.equal(t.gate, gates), "the gates are put back"
    assert scores.shape == (2 * len(CODE_REGIONS),) and scores.abs().sum() > 0
    assert scores[len(CODE_REGIONS)] == 0, "a group already off is not scored"
    torch.testing.assert_close(scores, decoded_over_editing(editor, judge, faces, probed))
    assert t.cluster_of[probed].tolist() == [0, 1]
    n = len(faces)
    attr = torch.full((n,), probed[0].item())
    gamma = torch.ones(n)

    def locality() -> torch.Tensor:
        with torch.no_grad():
            images = judge.decode(faces, editor.edit_batch(faces.codes, attr, gamma))
            return pasted_change(images, judge.decode(faces, faces.codes),
                                 *edit_masks(faces, ["Eyeglasses"] * n))[0]

    before = locality()
    with torch.no_grad():
        t.gate[0, CODE_REGIONS.index("mouth")] = 0
    assert not torch.allclose(locality(), before), "a group's gate changes the decoded edit"


def test_fit_s3_switches_off_region_groups_ranked_on_decoded_faces(judged):
    judge, faces = judged
    labels = (torch.rand(len(faces), 40, generator=torch.Generator().manual_seed(4)) > 0.5)
    classifier = fit_classifier(faces.codes, labels.float(), steps=5)
    cfg = S3TrainConfig(clusters=2, groups="regions", over_editing="decoded", sparsity=0.3,
                        steps=10, batch=8, hidden=16)
    with pytest.raises(UsageError, match="decoded faces"):
        fit_s3(faces.codes, classifier, cfg, progress=False)
    model, reached = fit_s3(faces.codes, classifier, cfg, progress=False,
                            probe=(judge, faces))
    assert reached == pytest.approx(0.3)
    assert (~model.active).sum() == 3
    for p, index in model.sparsity_members():
        off = (~model.active).nonzero().flatten()
        assert (p[torch.isin(index, off)] == 0).all()
