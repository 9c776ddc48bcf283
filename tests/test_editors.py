"""The Latent Transformer and S3Editor editors on synthetic codes: edits, routing, sparsity,
save/load and losses; the editors on 168-d clip codes; video codes on two tiny clips, clip
codes of real faces with an attribute encoder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import celeba_subset

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.classifier import LatentAttributeClassifier, fit_classifier, roc_auc
from s3edit.edit.linear import LinearEditor
from s3edit.edit.loading import load_editor
from s3edit.edit.lt import LatentTransformerEditor
from s3edit.edit.routing import kmeans, nearest_centroid, route_attributes
from s3edit.edit.s3 import CODE_REGIONS, S3Editor, S3Transform, slide
from s3edit.edit.sparsity import GroupSparseOptimizer
from s3edit.errors import UsageError
from s3edit.model.codes import ATTRIBUTE_DIM, IDENTITY_DIM, clip_code
from s3edit.train.config import LtTrainConfig, S3TrainConfig
from s3edit.train.editor_losses import (
    faithfulness_loss,
    fit_gaussian,
    identity_loss,
    manifold_loss,
)
from s3edit.train.editors import (
    crop_attribute_codes,
    edit_metrics,
    fit_lt,
    fit_lt_classifier,
    fit_s3,
    labelled_codes,
    video_identity_codes,
)

EDITED = ("Eyeglasses", "Smiling", "Young")
# Short runs of the Latent Transformer and of its MLP classifier, fast enough for a test.
LT_QUICK = LtTrainConfig(steps=60, batch=64, lr=3e-3, classifier_steps=150, classifier_lr=1e-3)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, LatentAttributeClassifier]:
    """Codes on a cap of the sphere (like dlib's) whose 40 labels are noisy half-spaces."""
    gen = torch.Generator().manual_seed(0)
    centre = F.normalize(torch.randn(128, generator=gen), dim=0)
    codes = F.normalize(centre + 0.15 * torch.randn(1500, 128, generator=gen), dim=1)
    planes = torch.randn(128, 40, generator=gen)
    scores = (codes - codes.mean(0)) @ planes
    labels = (scores + 0.2 * scores.std(0) * torch.randn(scores.shape, generator=gen) > 0)
    return codes, labels.float(), fit_classifier(codes, labels.float(), steps=100)


@pytest.fixture(scope="module")
def lt(data) -> LatentTransformerEditor:
    codes, labels, classifier = data
    model, _ = fit_lt(codes, labels, classifier, LT_QUICK, progress=False)
    return LatentTransformerEditor(model, classifier)


@pytest.fixture(scope="module")
def s3(data) -> S3Editor:
    codes, _, classifier = data
    model, _ = fit_s3(codes, classifier, S3TrainConfig(
        clusters=3, steps=60, batch=128, hidden=32, holdout_attrs=("Young",)), progress=False)
    return S3Editor(model, classifier)


@pytest.mark.parametrize("name", ["lt", "s3"])
def test_scale_zero_returns_the_code_exactly(request, data, name: str):
    editor = request.getfixturevalue(name)
    z = data[0][:5]
    for attr in EDITED:
        assert torch.equal(editor.edit(z, attr, 0.0), z)
        assert torch.equal(editor.edit(z[0], attr, 0), z[0])


@pytest.mark.parametrize("name", ["lt", "s3"])
def test_edit_moves_the_target_logit_the_way_of_the_scale(request, data, name: str):
    editor = request.getfixturevalue(name)
    codes, _, classifier = data
    z = codes[:200]
    with torch.no_grad():
        before = classifier(z)
    for attr in EDITED:
        i = classifier.index(attr)
        up, down = (editor.edit(z, attr, s) for s in (0.5, -0.5))
        assert up.shape == z.shape and torch.allclose(up.norm(dim=-1), torch.ones(200))
        with torch.no_grad():
            assert (classifier(up)[:, i] - before[:, i]).mean() > 0.5
            assert (classifier(down)[:, i] - before[:, i]).mean() < -0.5
        one = editor.edit(z[0], attr, 0.5)  # a single (128,) code, as the pipeline passes
        assert one.shape == (128,) and torch.allclose(one, up[0], atol=1e-5)


def test_lt_heads_are_affine_maps(data, lt):
    """As published: T_k(w) = A_k w + b_k, so it commutes with affine combinations."""
    w = lt.classifier.normalize(data[0][:2])
    head = torch.tensor([lt.classifier.index("Smiling")])
    mix = 0.3 * w[:1] + 0.7 * w[1:]
    with torch.no_grad():
        t = lt.transformer(w, head.expand(2))
        assert torch.allclose(lt.transformer(mix, head), 0.3 * t[:1] + 0.7 * t[1:], atol=1e-5)
        assert t.abs().max() > 0  # trained away from the zero map it starts as


def test_lt_classifier_is_an_mlp_that_predicts_held_out_labels(data):
    codes, labels, classifier = data
    judge = fit_lt_classifier(codes[:1200], labels[:1200], classifier, LT_QUICK)
    assert [layer.out_features for layer in judge.layers] == [2048, 512, 40]
    with torch.no_grad():
        scores = judge(classifier.normalize(codes[1200:]))
    for attr in EDITED:
        i = classifier.index(attr)
        assert roc_auc(scores[:, i], labels[1200:, i]) > 0.8


def test_s3_moves_the_target_at_least_as_far_as_the_linear_edit(data, s3):
    from s3edit.edit.linear import LinearEditor

    codes, _, classifier = data
    linear = LinearEditor(classifier)
    with torch.no_grad():
        for attr in EDITED:
            i = classifier.index(attr)
            for scale in (0.5, -0.5):
                ours = classifier(s3.edit(codes, attr, scale))[:, i]
                theirs = classifier(linear.edit(codes, attr, scale))[:, i]
                assert ((ours - theirs) * scale >= -1e-3).all()


def test_the_target_move_factor_lengthens_or_shortens_the_linear_edit(data, s3):
    """f = 1 lands the target logit exactly where the linear edit does; f = 0.5 half as far
    from the original, f = 2 twice as far."""
    from s3edit.edit.linear import LinearEditor

    codes, _, classifier = data
    free = s3.transform.with_free_factor()
    assert free.config.target_move == "factor"
    i = classifier.index("Smiling")
    with torch.no_grad():
        before = classifier(codes[:50])[:, i]
        linear = classifier(LinearEditor(classifier).edit(codes[:50], "Smiling", 0.5))[:, i]
        for f in (1.0, 0.5, 2.0):
            free.b3[:, -1] = math.log(f)
            moved = classifier(S3Editor(free, classifier).edit(codes[:50], "Smiling", 0.5))[:, i]
            torch.testing.assert_close(moved - before, f * (linear - before), atol=2e-3,
                                       rtol=1e-3)


def test_kmeans_is_deterministic_and_finds_the_clusters():
    gen = torch.Generator().manual_seed(1)
    centres = F.normalize(torch.randn(3, 16, generator=gen), dim=1)
    points = F.normalize(centres.repeat_interleave(5, 0) + 0.1 * torch.randn(15, 16,
                                                                             generator=gen), dim=1)
    c1, a1 = kmeans(points, 3, seed=7)
    c2, a2 = kmeans(points, 3, seed=7)
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    groups = a1.view(3, 5)
    assert (groups == groups[:, :1]).all() and len(groups[:, 0].unique()) == 3
    assert torch.allclose(c1.norm(dim=1), torch.ones(3))


def test_routing_sends_seen_attributes_to_their_cluster_and_unseen_to_the_nearest():
    gen = torch.Generator().manual_seed(2)
    centres = F.normalize(torch.randn(2, 16, generator=gen), dim=1)
    directions = F.normalize(centres.repeat_interleave(4, 0)
                             + 0.1 * torch.randn(8, 16, generator=gen), dim=1)
    seen = torch.ones(8, dtype=torch.bool)
    seen[6] = False  # an unseen attribute of the second group
    clusters, centroids = route_attributes(directions, seen, 2)
    assert len(clusters[:4].unique()) == 1 and len(clusters[4:].unique()) == 1
    assert clusters[0] != clusters[4]
    assert clusters[6] == clusters[4] == nearest_centroid(directions[6:7], centroids)[0]


def test_s3_routes_each_attribute_by_its_cluster(data, s3):
    _, _, classifier = data
    t = s3.transform
    directions = F.normalize(classifier.linear.weight, dim=1)
    young = ATTRIBUTES.index("Young")  # held out of training: the nearest centroid's
    assert t.cluster_of[young] == nearest_centroid(directions[young:young + 1], t.centroids)[0]
    assert len(t.cluster_of.unique()) == 3
    # An edit runs only its own cluster's weights: spoiling another cluster changes nothing.
    z = data[0][:4]
    before = s3.edit(z, "Young", 0.5)
    other = (int(t.cluster_of[young]) + 1) % 3
    with torch.no_grad():
        t.w1[other] += 1
    try:
        assert torch.equal(s3.edit(z, "Young", 0.5), before)
    finally:
        with torch.no_grad():
            t.w1[other] -= 1


def test_sparsity_reaches_its_target_and_dead_groups_stay_zero():
    torch.manual_seed(0)
    model = S3Transform(dim=8, hidden=32, clusters=2, group_size=4, attributes=("a", "b"))
    with torch.no_grad():
        model.w3.normal_()
    groups = model.active.numel()  # 2 layers x 2 clusters x 8 = 32
    optimizer = GroupSparseOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2),
                                     model.sparsity_members(), model.active, 0.25,
                                     start=10, stop=60)
    x, d = torch.randn(64, 8), F.normalize(torch.randn(64, 8), dim=1)
    gamma, cluster = torch.rand(64), torch.randint(2, (64,))
    target = torch.randn(64, 8)

    def train(steps: int) -> None:
        for _ in range(steps):
            g, _ = model(x, d, gamma, cluster)
            loss = (g - target).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train(60)
    dead = ~model.active
    assert abs(int(dead.sum()) - 0.25 * groups) <= 1
    assert optimizer.sparsity == pytest.approx(float(dead.float().mean()))
    assert (optimizer.group_norms()[dead] == 0).all()
    assert (optimizer.group_norms()[~dead] > 0).all()
    train(30)
    assert torch.equal(~model.active, dead)
    assert (optimizer.group_norms()[dead] == 0).all()


@pytest.mark.parametrize("name", ["lt", "s3"])
def test_save_load_round_trip_gives_identical_edits(request, data, tmp_path: Path, name: str):
    editor = request.getfixturevalue(name)
    model = editor.transformer if name == "lt" else editor.transform
    editor.classifier.save_pretrained(tmp_path / "editors" / "classifier")
    model.save_pretrained(tmp_path / "editors" / name)
    loaded = load_editor(tmp_path, name)
    assert isinstance(loaded, type(editor)) and loaded.name == name
    z = data[0][:10]
    for attr in EDITED:
        assert torch.equal(loaded.edit(z, attr, 0.7), editor.edit(z, attr, 0.7))
    if name == "s3":
        assert torch.equal(loaded.transform.active, model.active)
        assert torch.equal(loaded.transform.cluster_of, model.cluster_of)


def test_s3_ablations_train(data):
    codes, labels, classifier = data
    cfg = S3TrainConfig(clusters=1, sparsity=0.0, self_training=False, steps=20, batch=64,
                        hidden=16)
    with pytest.raises(UsageError, match="labels"):
        fit_s3(codes, classifier, cfg, progress=False)
    model, reached = fit_s3(codes, classifier, cfg, progress=False, labels=labels)
    assert reached == 0 and model.active.all() and (model.cluster_of == 0).all()
    z = codes[:50]
    i = classifier.index("Smiling")
    with torch.no_grad():
        assert (classifier(S3Editor(model, classifier).edit(z, "Smiling", 0.5))[:, i]
                > classifier(z)[:, i]).all()
    # Labelled edits are edits: the factor on the target's move learns (with gamma = 0, the
    # old stand-in for this ablation, it got no gradient and stayed at its initial value).
    assert not torch.equal(model.b3[:, -1], torch.full_like(model.b3[:, -1], -4.0))


def test_faithfulness_rewards_the_target_and_punishes_the_others():
    p0 = torch.full((4, 40), 0.3)
    attr, gamma = torch.full((4,), 5), torch.full((4,), 0.8)
    unchanged = faithfulness_loss(p0, p0, attr, gamma)
    moved = p0.clone()
    moved[:, 5] += 0.4
    assert unchanged == 0 and faithfulness_loss(p0, moved, attr, gamma) < unchanged
    # Moving the target against gamma, or moving another attribute, costs.
    assert faithfulness_loss(p0, moved, attr, -gamma) > unchanged
    leaked = moved.clone()
    leaked[:, 7] += 0.2
    assert faithfulness_loss(p0, leaked, attr, gamma) > faithfulness_loss(p0, moved, attr, gamma)


def test_faithfulness_weight_spares_correlated_attributes():
    p0 = torch.full((4, 40), 0.3)
    attr, gamma = torch.full((4,), 5), torch.full((4,), 0.8)
    leaked = p0.clone()
    leaked[:, 5] += 0.4
    leaked[:, 7] += 0.2
    weight = torch.ones(40, 40).fill_diagonal_(0)
    # All ones off the diagonal is the unweighted loss.
    assert faithfulness_loss(p0, leaked, attr, gamma, weight) == pytest.approx(
        float(faithfulness_loss(p0, leaked, attr, gamma)))
    # Attribute 7 fully correlated with 5: moving it along costs nothing.
    weight[5, 7] = 0
    assert faithfulness_loss(p0, leaked, attr, gamma, weight) == pytest.approx(-0.8 * 0.4)


def test_identity_and_manifold_losses():
    z = F.normalize(torch.randn(6, 128), dim=1)
    assert identity_loss(z, z) == pytest.approx(0, abs=1e-6)
    assert identity_loss(-z, z) == pytest.approx(2)
    x = torch.randn(500, 16) * torch.linspace(0.1, 2, 16)
    mean, precision = fit_gaussian(x)
    assert manifold_loss(x, x, mean, precision) == 0
    # A step along the flattest direction is less typical than one as long along the widest.
    step = torch.zeros(16)
    step[0] = 1
    flat = manifold_loss(x + step, x, mean, precision)
    wide = manifold_loss(x + step.roll(15), x, mean, precision)
    assert flat > 10 * wide > 0


def test_video_identity_codes_of_two_tiny_clips(shared_data: Path, tmp_path: Path,
                                                monkeypatch):
    from helpers import ffmpeg

    clip = shared_data / "videos" / "videoretalking" / "examples" / "face" / "1.mp4"
    if not clip.exists():
        pytest.skip(f"{clip} not found")
    folder = tmp_path / "clips"
    folder.mkdir()
    for i, start in enumerate((0, 1)):
        ffmpeg("-ss", start, "-i", clip, "-frames:v", 6, "-an", "-vf", "scale=256:-2",
               folder / f"{i}.mp4")
    monkeypatch.setenv("S3EDIT_CACHE", str(tmp_path / "cache"))
    codes = video_identity_codes(folder, frames_per_clip=2)
    assert codes.shape == (4, 128)
    assert torch.allclose(codes.norm(dim=1), torch.ones(4))
    # Frames of one person: their codes are close.
    assert (codes @ codes.T).min() > 0.9
    cached = list((tmp_path / "cache" / "video-codes").glob("*.safetensors"))
    assert len(cached) == 1
    assert torch.equal(video_identity_codes(folder, frames_per_clip=2), codes)
    # With an attribute encoder: clip codes, the identity part the same, cached apart.
    from s3edit.face.attributes import AttributeEncoder

    torch.manual_seed(0)
    clips = video_identity_codes(folder, frames_per_clip=2,
                                 attribute_encoder=AttributeEncoder().eval())
    assert clips.shape == (4, IDENTITY_DIM + ATTRIBUTE_DIM)
    assert torch.allclose(clips[:, :IDENTITY_DIM], codes, atol=1e-6)
    assert clips[:, IDENTITY_DIM:].abs().max() <= 1
    assert len(list((tmp_path / "cache" / "video-codes").glob("*.safetensors"))) == 2


# --- Few training steps (the sparsity schedule) ------------------------------------------------

@pytest.mark.parametrize("sparsity", [0.0, 0.25])
@pytest.mark.parametrize("steps", [1, 2, 5, 8])
def test_s3_trains_in_a_few_steps(data, steps: int, sparsity: float):
    """`train editor --steps 8` (or fewer) failed in the sparsity schedule, even without
    sparsity; a short run now gets a shorter schedule and still reaches its target."""
    codes, _, classifier = data
    model, reached = fit_s3(codes, classifier, S3TrainConfig(
        clusters=1, sparsity=sparsity, steps=steps, batch=32, hidden=16), progress=False)
    groups = model.active.numel()  # 2 layers x 2 groups of 8
    assert reached == pytest.approx(round(sparsity * groups) / groups)


# --- Clip codes: identity (128, unit) then 40 attribute values -------------------------------

CLIP_DIM = IDENTITY_DIM + ATTRIBUTE_DIM


@pytest.fixture(scope="module")
def clip_data() -> tuple[torch.Tensor, torch.Tensor, LatentAttributeClassifier]:
    """168-d clip codes: identities on a cap of the sphere, then attribute values in (-1, 1)
    that follow noisy labels (as an attribute encoder's would)."""
    gen = torch.Generator().manual_seed(3)
    centre = F.normalize(torch.randn(IDENTITY_DIM, generator=gen), dim=0)
    identity = F.normalize(centre + 0.15 * torch.randn(1500, IDENTITY_DIM, generator=gen), dim=1)
    scores = (identity - identity.mean(0)) @ torch.randn(IDENTITY_DIM, 40, generator=gen)
    scores = scores / scores.std(0)
    labels = (scores + 0.3 * torch.randn(scores.shape, generator=gen) > 0).float()
    attributes = torch.tanh(2 * scores + 0.5 * torch.randn(scores.shape, generator=gen))
    codes = clip_code(identity, attributes)
    return codes, labels, fit_classifier(codes, labels, steps=100)


@pytest.fixture(scope="module")
def clip_editors(clip_data) -> dict:
    codes, labels, classifier = clip_data
    lt, _ = fit_lt(codes, labels, classifier, LT_QUICK, progress=False)
    s3, _ = fit_s3(codes, classifier,
                   S3TrainConfig(clusters=3, steps=60, batch=128, hidden=32), progress=False)
    return {"linear": LinearEditor(classifier), "lt": LatentTransformerEditor(lt, classifier),
            "s3": S3Editor(s3, classifier)}


def test_models_are_built_for_the_codes_length(clip_data, clip_editors):
    assert clip_data[0].shape[1] == CLIP_DIM
    assert clip_data[2].config.dim == CLIP_DIM
    assert clip_editors["lt"].transformer.config.dim == CLIP_DIM
    assert clip_editors["s3"].transform.config.dim == CLIP_DIM
    assert clip_editors["s3"].transform.centroids.shape[1] == CLIP_DIM


@pytest.mark.parametrize("name", ["linear", "lt", "s3"])
def test_clip_code_edits(clip_data, clip_editors, name: str):
    editor = clip_editors[name]
    codes, _, classifier = clip_data
    z = codes[:200]
    for attr in EDITED:
        assert torch.equal(editor.edit(z, attr, 0), z)
        assert torch.equal(editor.edit(z[0], attr, 0.0), z[0])
        i = classifier.index(attr)
        with torch.no_grad():
            before = classifier(z)[:, i]
        for scale in (0.5, -0.5):
            edited = editor.edit(z, attr, scale)
            assert edited.shape == z.shape
            # The identity part is back on the unit sphere, the attribute part is not scaled
            # onto it with the rest: it moves freely.
            assert torch.allclose(edited[:, :IDENTITY_DIM].norm(dim=-1), torch.ones(200),
                                  atol=1e-5)
            assert (edited.norm(dim=-1) > 1.5).all()
            assert (edited[:, IDENTITY_DIM:] - z[:, IDENTITY_DIM:]).abs().amax(1).min() > 1e-3
            with torch.no_grad():
                assert ((classifier(edited)[:, i] - before).mean() * scale) > 0.25
        one = editor.edit(z[0], attr, 0.5)  # a single (168,) code, as the pipeline passes
        assert one.shape == (CLIP_DIM,)
        assert torch.allclose(one, editor.edit(z, attr, 0.5)[0], atol=1e-5)


def test_linear_clip_edit_renormalises_only_the_identity(clip_data):
    codes, _, classifier = clip_data
    z = codes[:20]
    raw = classifier.denormalize(classifier.normalize(z)
                                 + 0.5 * CLIP_DIM ** 0.5 * classifier.direction("Eyeglasses"))
    edited = LinearEditor(classifier).edit(z, "Eyeglasses", 0.5)
    torch.testing.assert_close(edited[:, IDENTITY_DIM:], raw[:, IDENTITY_DIM:])
    torch.testing.assert_close(edited[:, :IDENTITY_DIM],
                               F.normalize(raw[:, :IDENTITY_DIM], dim=-1))


def test_s3_clip_edit_moves_the_target_at_least_as_far_as_the_linear_edit(clip_data,
                                                                         clip_editors):
    codes, _, classifier = clip_data
    with torch.no_grad():
        for attr in EDITED:
            i = classifier.index(attr)
            for scale in (0.5, -0.5):
                ours = classifier(clip_editors["s3"].edit(codes, attr, scale))[:, i]
                theirs = classifier(clip_editors["linear"].edit(codes, attr, scale))[:, i]
                assert ((ours - theirs) * scale >= -1e-3).all()


def test_slide_reaches_the_target_and_is_the_meridian_slide_on_identity_codes():
    gen = torch.Generator().manual_seed(5)
    y = clip_code(torch.randn(8, IDENTITY_DIM, generator=gen),
                  torch.rand(8, ATTRIBUTE_DIM, generator=gen) * 2 - 1)
    v = F.normalize(torch.randn(8, CLIP_DIM, generator=gen), dim=-1)
    k = (v * y).sum(-1) + 0.3 * torch.randn(8, generator=gen)
    moved = slide(y, v, k)
    torch.testing.assert_close((v * moved).sum(-1), k)
    torch.testing.assert_close(moved[:, :IDENTITY_DIM].norm(dim=-1), torch.ones(8))
    # On identity codes alone: the point of y's meridian with v . z = k.
    y, v = y[:, :IDENTITY_DIM], F.normalize(v[:, :IDENTITY_DIM], dim=-1)
    k = k.clamp(-0.9, 0.9)
    across = F.normalize(y - (y * v).sum(-1, keepdim=True) * v, dim=-1)
    torch.testing.assert_close(slide(y, v, k),
                               k[:, None] * v + (1 - k**2).sqrt()[:, None] * across)


class AttributeOnlyEditor:
    """Moves the attribute part only: the identity is untouched."""

    name = "attributes"

    def edit(self, identity, attr, scale):
        return torch.cat([identity[..., :IDENTITY_DIM], identity[..., IDENTITY_DIM:] + scale],
                         -1)


def test_edit_metrics_identity_cosine_reads_the_identity_part_only(clip_data):
    codes, _, classifier = clip_data
    metrics = edit_metrics(AttributeOnlyEditor(), classifier, codes[:50], 0.5)
    assert metrics["mean"]["identity_cosine"] == 1
    linear = edit_metrics(LinearEditor(classifier), classifier, codes[:50], 0.5)
    assert 0.5 < linear["mean"]["identity_cosine"] < 1


def test_an_editor_refuses_codes_of_another_length(data, clip_data):
    codes, labels, _ = clip_data
    with pytest.raises(UsageError, match="128-d.*168-d"):
        fit_lt(codes, labels, data[2], LtTrainConfig(steps=1), progress=False)
    with pytest.raises(UsageError, match="128-d.*168-d"):
        fit_s3(codes, data[2], S3TrainConfig(steps=1), progress=False)


# --- Clip codes of real faces ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_celeba(shared_data: Path, tmp_path_factory) -> Path:
    """20 real CelebA-HQ faces in the CelebAMask-HQ layout, with their labels."""
    return celeba_subset(shared_data / "CelebAMask-HQ-128", tmp_path_factory.mktemp("celeba"),
                         count=20)


def test_labelled_codes_with_an_attribute_encoder(tiny_celeba: Path, tmp_path: Path,
                                                  monkeypatch):
    from s3edit.face.attributes import AttributeEncoder
    from s3edit.train.cache import build_image_cache, load_cache
    from s3edit.train.celeba import celeba_images
    from s3edit.train.editors import train_classifier, train_s3

    monkeypatch.setenv("S3EDIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    encoder = AttributeEncoder().eval()
    plain, _ = labelled_codes(tiny_celeba)
    train, held = labelled_codes(tiny_celeba, attribute_encoder=encoder)
    n = len(plain.codes)
    assert n >= 15 and plain.codes.shape == (n, IDENTITY_DIM)
    assert train.codes.shape == (n, CLIP_DIM) and held.codes.shape == (0, CLIP_DIM)
    assert torch.equal(train.codes[:, :IDENTITY_DIM], plain.codes)
    assert torch.equal(train.labels, plain.labels)
    # The attribute part is the encoder's codes of the cached aligned crops.
    shard = load_cache(build_image_cache(celeba_images(tiny_celeba), 128), [0])
    expected = encoder.codes(shard.crops.permute(0, 3, 1, 2).float() / 127.5 - 1)
    torch.testing.assert_close(train.codes[:, IDENTITY_DIM:], expected)
    torch.testing.assert_close(crop_attribute_codes(encoder, shard.crops, batch=7), expected)
    assert train.codes[:, IDENTITY_DIM:].abs().max() <= 1
    # Cached by the encoder's weights: a second run does not run the encoder ...
    assert len(list((tmp_path / "cache" / "attribute-codes").rglob("*.safetensors"))) == 1

    def refuse(crops):
        raise AssertionError("the attribute codes were not read from the cache")

    monkeypatch.setattr(encoder, "codes", refuse)
    again, _ = labelled_codes(tiny_celeba, attribute_encoder=encoder)
    assert torch.equal(again.codes, train.codes)
    # ... and other weights get codes of their own.
    other = AttributeEncoder().eval()
    assert not torch.equal(labelled_codes(tiny_celeba, attribute_encoder=other)[0].codes,
                           train.codes)
    assert len(list((tmp_path / "cache" / "attribute-codes").rglob("*.safetensors"))) == 2
    # The trainers thread the encoder through, in a run of a few steps.
    out = tmp_path / "editors"
    classifier = train_classifier(tiny_celeba, out, attribute_encoder=other)
    assert LatentAttributeClassifier.from_pretrained(classifier).config.dim == CLIP_DIM
    s3 = train_s3(tiny_celeba, out, classifier, S3TrainConfig(steps=5, batch=16, hidden=16),
                  attribute_encoder=other, progress=False)
    assert S3Transform.from_pretrained(s3).config.dim == CLIP_DIM


# --- Region groups: sparsity over what each transform writes into each region of the code ----

def test_region_groups_cover_the_code_and_leave_the_target_move_out():
    model = S3Transform(dim=CLIP_DIM, hidden=16, clusters=2, groups="regions")
    assert model.active.numel() == 2 * len(CODE_REGIONS) and model.gate.shape == (2, 5)
    assert (model.code_region[:IDENTITY_DIM] == 0).all()
    region = dict(zip(ATTRIBUTES, model.code_region[IDENTITY_DIM:].tolist(), strict=True))
    assert [CODE_REGIONS[region[a]] for a in ("Eyeglasses", "Smiling", "Blond_Hair", "Young")] \
        == ["eyes", "mouth", "hair", "face"]
    members = dict((id(p), index) for p, index in model.sparsity_members())
    w3 = members[id(model.w3)]
    assert (w3[1, :, IDENTITY_DIM + ATTRIBUTES.index("Smiling")] == 5 + 2).all()
    assert (w3[..., -1] == -1).all(), "the target move's factor belongs to no group"
    with pytest.raises(ValueError, match="attribute values"):
        S3Transform(dim=IDENTITY_DIM, groups="regions")


def test_switched_off_regions_stay_as_they_were_and_the_target_still_moves(clip_data):
    codes, _, classifier = clip_data
    model, _ = fit_s3(codes, classifier, S3TrainConfig(clusters=2, steps=30, batch=128,
                                                       hidden=16, groups="regions"),
                      progress=False)
    editor = S3Editor(model, classifier)
    attr = "Eyeglasses"
    k = int(model.cluster_of[ATTRIBUTES.index(attr)])
    with torch.no_grad():
        model.gate[k] = 0  # every region off: only the target's own value may move
        z = codes[:100]
        edited = editor.edit(z, attr, 0.5)
        own = IDENTITY_DIM + ATTRIBUTES.index(attr)
        others = torch.ones(CLIP_DIM, dtype=torch.bool)
        others[own] = False
        torch.testing.assert_close(edited[:, others], z[:, others], atol=1e-5, rtol=0)
        # The target logit lands where the transform's own target move puts it.
        _, _, v, goal = editor.edit_plan(z, ATTRIBUTES.index(attr) * torch.ones(100, dtype=int),
                                     torch.full((100,), 0.5))
        torch.testing.assert_close((v * edited).sum(-1), goal, atol=1e-4, rtol=0)
        i = classifier.index(attr)
        assert (classifier(edited)[:, i] > classifier(z)[:, i]).all()


def test_region_sparsity_switches_off_the_groups_that_change_foreign_regions(clip_data):
    codes, _, classifier = clip_data
    model, reached = fit_s3(codes, classifier, S3TrainConfig(
        clusters=2, sparsity=0.3, steps=40, batch=128, hidden=16, groups="regions"),
        progress=False)
    assert reached == pytest.approx(3 / 10)
    kept = model.kept_regions()
    assert sum(len(r) for r in kept) == 7
    # The identity part is foreign to every attribute and holds most of the code: the linear
    # step changes it most, so it goes first.
    assert all("identity" not in regions for regions in kept)
    dead = ~model.active.view(2, 5)
    assert (model.gate[dead] == 0).all()


def test_group_scores_choose_what_is_switched_off():
    weight = torch.nn.Parameter(torch.ones(6))
    index = torch.tensor([0, 0, 1, 1, 2, -1])
    active = torch.ones(3, dtype=torch.bool)
    optimizer = GroupSparseOptimizer(torch.optim.SGD([weight], lr=0.0), [(weight, index)],
                                     active, 1 / 3, start=0, stop=2, periods=1,
                                     scores=lambda: torch.tensor([0.0, 5.0, 1.0]))
    for _ in range(2):
        optimizer.step()
    assert active.tolist() == [True, False, True]  # the highest score, not the smallest norm
    assert weight.tolist() == [1, 1, 0, 0, 1, 1], "ungrouped elements are left alone"
