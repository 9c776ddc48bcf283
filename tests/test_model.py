"""The diffusion autoencoder: loading, conditioning, and the DDIM inversion/decoding pairing."""

import pytest
import torch

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.errors import UsageError
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import (
    ATTRIBUTE_DIM,
    IDENTITY_DIM,
    LANDMARK_DIM,
    attribute_code,
    clip_code,
    identity_code,
    landmark_code,
)
from s3edit.model.face_model import DiffusionFaceModel, PassThroughModel, uses_bf16
from s3edit.train.autoencoder import FaceBatchSource
from s3edit.train.upgrade import upgrade


def tiny_model(prediction_type: str = "epsilon", **kwargs) -> DiffusionFaceAutoencoder:
    torch.manual_seed(0)
    return DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16),
                                    attention_levels=(1,), fusion_hidden=32,
                                    prediction_type=prediction_type, **kwargs).eval()


def codes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    identity = identity_code(torch.randn(n, 128))
    landmarks = landmark_code(torch.rand(n, 68, 2))
    return identity, landmarks


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    model.set_code_statistics(*codes(64))
    model.save_pretrained(tmp_path / "ae")
    assert (tmp_path / "ae" / "config.json").exists()
    assert list((tmp_path / "ae").glob("*.safetensors")), "weights must be safetensors"
    loaded = DiffusionFaceAutoencoder.from_pretrained(tmp_path / "ae").eval()
    assert loaded.config.resolution == 16
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    identity, landmarks = codes(2)
    torch.testing.assert_close(loaded.z_face(identity, landmarks),
                               model.z_face(identity, landmarks))
    z = model.z_face(identity, landmarks)
    torch.testing.assert_close(loaded(x, t, z), model(x, t, z))
    # The schedule buffer is not saved: a loaded model must still rebuild it.
    torch.testing.assert_close(loaded.alphas_cumprod, model.schedulers()[0].alphas_cumprod)


def test_code_statistics_make_people_differ_at_unit_scale():
    # Real identity codes share a large mean and differ by a few percent per dimension.
    identity = identity_code(torch.randn(1, 128) + 0.05 * torch.randn(256, 128))
    landmarks = landmark_code(0.5 + 0.02 * torch.randn(256, 68, 2))
    model = tiny_model()
    model.set_code_statistics(identity, landmarks)
    standardised = (torch.cat([identity, landmarks], 1) - model.code_mean) / model.code_std
    torch.testing.assert_close(standardised.std(0), torch.ones(230), atol=1e-4, rtol=0)
    assert standardised.mean(0).abs().max() < 1e-4


def test_prediction_depends_on_identity_and_landmarks():
    model = tiny_model()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([300])
    identity, landmarks = codes(2)
    base = model(x, t, model.z_face(identity[:1], landmarks[:1]))
    other_id = model(x, t, model.z_face(identity[1:], landmarks[:1]))
    other_lm = model(x, t, model.z_face(identity[:1], landmarks[1:]))
    assert (base - other_id).abs().max() > 1e-4
    assert (base - other_lm).abs().max() > 1e-4


def test_inversion_and_decoding_use_matching_timesteps(monkeypatch):
    # With a model that predicts zero noise, DDIM is an exact scaling at each step, so decoding
    # the inverted noise gives the image back only if both walk the same timesteps.
    model = tiny_model()
    monkeypatch.setattr(model, "forward", lambda x, t, z: torch.zeros_like(x))
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    z = torch.zeros(2, 32)
    alphas = model.schedulers()[0].alphas_cumprod
    for steps in (5, 20):
        noise = model.invert(x0, z, steps)
        # The inversion must stop at the timestep that decoding starts from.
        first_decoding_step = 1000 - 1000 // steps
        torch.testing.assert_close(noise, x0 * alphas[first_decoding_step].sqrt())
        torch.testing.assert_close(model.decode(noise, z, steps), x0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predicted_x0_undoes_the_training_target(prediction_type):
    model = tiny_model(prediction_type)
    alphas = model.schedulers()[0].alphas_cumprod
    a = alphas[torch.tensor([0, 300, 700, 999])].view(4, 1, 1, 1)
    x0, noise = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 3, 16, 16)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    exact = model.training_target(x0, noise, a)
    torch.testing.assert_close(model.predicted_x0(exact, x_t, a), x0, atol=2e-3, rtol=0)
    off = model.predicted_x0(exact + 0.01, x_t, a)
    assert (off - x0).abs()[1:].mean() > 1e-3, "a wrong output must give a wrong x0"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_refined_inversion_makes_decoding_its_exact_reverse(monkeypatch, prediction_type):
    # An output that depends on the sample: plain inversion uses it at the wrong sample, so
    # the round trip drifts; fixed-point refinement must remove most of that drift.
    model = tiny_model(prediction_type)
    monkeypatch.setattr(model, "forward", lambda x, t, z: 0.5 * torch.tanh(x))
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    z = torch.zeros(2, 32)
    errors = [(model.decode(model.invert(x0, z, 10, refine=r), z, 10) - x0).abs().max()
              for r in (0, 1, 4)]
    assert errors[0] > 0.1, "the test's noise model must make plain inversion inexact"
    assert errors[1] < errors[0] / 2 and errors[2] < errors[0] / 20


def test_face_models_share_one_interface():
    identity, landmarks = codes(3)
    crops = torch.rand(3, 3, 16, 16) * 2 - 1
    passthrough = PassThroughModel(16)
    latents = passthrough.encode(crops, identity[0], landmarks)
    torch.testing.assert_close(passthrough.decode(latents, identity[0], landmarks), crops)
    diffusion = DiffusionFaceModel(tiny_model(), steps=3, refine=1)
    latents = diffusion.encode(crops, identity[0], landmarks)
    assert latents.shape == crops.shape
    decoded = diffusion.decode(latents, identity[0], landmarks)
    assert decoded.shape == crops.shape and decoded.abs().max() <= 1


def test_code_template_starts_as_the_linear_fit_of_the_images():
    model = DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16),
                                     attention_levels=(1,), fusion_hidden=32,
                                     template_resolution=4).eval()
    identity, landmarks = codes(400)
    model.set_code_statistics(identity, landmarks)
    standardised = (torch.cat([identity, landmarks], 1) - model.code_mean) / model.code_std
    coarse = (standardised @ torch.randn(230, 48) * 0.03).view(-1, 3, 4, 4)
    images = torch.nn.functional.interpolate(coarse, size=16, mode="nearest")
    model.fit_code_template(identity, landmarks, images, ridge=1e-3)
    fitted = model.code_template(standardised).view(-1, 3, 4, 4)
    assert (fitted - coarse).abs().mean() < 0.1 * (coarse - coarse.mean(0)).abs().mean()


def test_code_template_feeds_the_identity_to_the_unet():
    model = DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16),
                                     attention_levels=(1,), fusion_hidden=32,
                                     template_resolution=4).eval()
    identity, landmarks = codes(2)
    with torch.no_grad():  # only the template path can carry the identity now
        model.fusion[-1].weight.zero_()
        model.fusion[-1].bias.zero_()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([300])
    own = model(x, t, model.z_face(identity[:1], landmarks[:1]))
    other = model(x, t, model.z_face(identity[1:], landmarks[:1]))
    assert (own - other).abs().max() > 1e-4


def test_upgrades_keep_the_decoders_function():
    old = tiny_model()
    identity, landmarks = codes(64)
    old.set_code_statistics(identity, landmarks)
    train = FaceBatchSource(torch.rand(64, 3, 16, 16) * 2 - 1, identity, landmarks,
                            torch.ones(64, 1, 16, 16), torch.zeros(64, ATTRIBUTE_DIM))
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([10, 300, 600, 900])
    with torch.no_grad():
        before = old(x, t, old.z_face(identity[:4], landmarks[:4]))
        templated = upgrade(old, False, None, 4, train).eval()
        torch.testing.assert_close(templated(x, t, templated.z_face(identity[:4], landmarks[:4])),
                                   before)
        assert templated.code_template.weight.abs().sum() > 0, "the template is fitted"
        refused = upgrade(old, True, None, None, train).eval()
        mean_z = old.z_face(identity, landmarks).mean(0)
        torch.testing.assert_close(refused(x, t, mean_z.expand(4, -1)),
                                   refused(x, t, refused.z_face(identity[:4], landmarks[:4])))
        assert upgrade(old, False, "v_prediction", None, train).config.prediction_type \
            == "v_prediction"


# --- Clip codes with attributes ------------------------------------------------------------------

EYEGLASSES = ATTRIBUTES.index("Eyeglasses")


def attribute_faces(n: int) -> FaceBatchSource:
    """Faces whose only feature is one attribute: a bright top-left quarter with eyeglasses."""
    gen = torch.Generator().manual_seed(1)
    identity = identity_code(torch.randn(n, IDENTITY_DIM, generator=gen))
    landmarks = landmark_code(torch.rand(n, 68, 2, generator=gen))
    labels = (torch.rand(n, ATTRIBUTE_DIM, generator=gen) < 0.3).float()
    images = torch.rand(n, 3, 16, 16, generator=gen) * 0.2 - 0.5
    images[:, :, :8, :8] += 0.8 * labels[:, EYEGLASSES].view(n, 1, 1, 1)
    return FaceBatchSource(images, clip_code(identity, attribute_code(labels)), landmarks,
                           torch.ones(n, 1, 16, 16), labels)


def with_eyeglasses(code: torch.Tensor, value: float) -> torch.Tensor:
    code = code.clone()
    code[:, IDENTITY_DIM + EYEGLASSES] = value
    return code


def test_adding_attributes_keeps_the_decoders_function():
    old = tiny_model()
    train = attribute_faces(256)
    identity, landmarks = train.clip_code[:, :IDENTITY_DIM], train.landmarks
    old.set_code_statistics(identity, landmarks)
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([10, 300, 600, 900])
    width = IDENTITY_DIM + ATTRIBUTE_DIM + LANDMARK_DIM
    with torch.no_grad():
        before = old(x, t, old.z_face(identity[:4], landmarks[:4]))
        # Without a template, and adding one at the same time: its UNet input channels start
        # at zero weight, so the new columns (zero fusion weights) change nothing either way.
        for template in (None, 4):
            new = upgrade(old, False, None, template, train, attribute_dim=ATTRIBUTE_DIM).eval()
            assert new.config.attribute_dim == ATTRIBUTE_DIM
            assert new.clip_code_dim == IDENTITY_DIM + ATTRIBUTE_DIM
            assert new.code_mean.shape == new.code_std.shape == (width,)
            assert new.fusion[0].in_features == width
            # The old statistics stay around the new columns, which get the training codes'.
            torch.testing.assert_close(new.code_mean[:IDENTITY_DIM], old.code_mean[:IDENTITY_DIM])
            torch.testing.assert_close(new.code_std[-LANDMARK_DIM:], old.code_std[-LANDMARK_DIM:])
            torch.testing.assert_close(new.code_mean[IDENTITY_DIM:-LANDMARK_DIM],
                                       train.clip_code[:, IDENTITY_DIM:].mean(0))
            for attributes in (train.clip_code[:4, IDENTITY_DIM:], torch.zeros(4, ATTRIBUTE_DIM),
                               torch.rand(4, ATTRIBUTE_DIM) * 2 - 1):
                code = torch.cat([identity[:4], attributes], 1)
                torch.testing.assert_close(new(x, t, new.z_face(code, landmarks[:4])), before)
        assert new.code_template.weight.shape == (3 * 4 * 4, width)
        # The refitted template draws the attribute where the images show it.
        on = new.z_face(with_eyeglasses(train.clip_code[:4], 1.0), landmarks[:4])[:, -width:]
        off = new.z_face(with_eyeglasses(train.clip_code[:4], -1.0), landmarks[:4])[:, -width:]
        change = (new.code_template(on) - new.code_template(off)).view(4, 3, 4, 4)
        corner = change[:, :, :2, :2].mean()
        rest = change.clone()
        rest[:, :, :2, :2] = 0
        assert corner > 0.4, "the eyeglasses column must brighten the corner"
        assert rest.abs().max() < 0.25 * corner, "and leave the rest of the face"

        fresh = upgrade(old, True, None, None, train, attribute_dim=ATTRIBUTE_DIM).eval()
        mean_z = old.z_face(identity, landmarks).mean(0)
        torch.testing.assert_close(fresh(x, t, fresh.z_face(train.clip_code[:4], landmarks[:4])),
                                   fresh(x, t, mean_z.expand(4, -1)))
        torch.testing.assert_close(fresh.code_mean, torch.cat([train.clip_code, landmarks],
                                                              1).mean(0))


def test_adding_attributes_to_a_templated_model_keeps_the_fusion_and_refits_the_template():
    """With a template already in the UNet's input the refit changes what the UNet sees, so
    only the fused part of the condition is kept exactly."""
    old = tiny_model(template_resolution=4)
    train = attribute_faces(256)
    identity, landmarks = train.clip_code[:, :IDENTITY_DIM], train.landmarks
    old.set_code_statistics(identity, landmarks)
    old.fit_code_template(identity, landmarks, train.images)
    new = upgrade(old, False, None, None, train, attribute_dim=ATTRIBUTE_DIM).eval()
    emb = new.fusion[-1].out_features
    with torch.no_grad():
        old_z = old.z_face(identity[:4], landmarks[:4])
        for value in (-1.0, 0.0, 1.0):
            new_z = new.z_face(with_eyeglasses(train.clip_code[:4], value), landmarks[:4])
            torch.testing.assert_close(new_z[:, :emb], old_z[:, :emb])
            # The standardised identity and landmark columns are the old ones.
            torch.testing.assert_close(new_z[:, emb:emb + IDENTITY_DIM],
                                       old_z[:, emb:emb + IDENTITY_DIM])
            torch.testing.assert_close(new_z[:, -LANDMARK_DIM:], old_z[:, -LANDMARK_DIM:])
        torch.testing.assert_close(new.unet.conv_in.weight, old.unet.conv_in.weight)
        on = new(torch.zeros(1, 3, 16, 16), torch.tensor([900]),
                 new.z_face(with_eyeglasses(train.clip_code[:1], 1.0), landmarks[:1]))
        off = new(torch.zeros(1, 3, 16, 16), torch.tensor([900]),
                  new.z_face(with_eyeglasses(train.clip_code[:1], -1.0), landmarks[:1]))
    assert (on - off).abs().max() > 1e-4, "the attribute reaches the UNet through the template"


def test_edit_guidance_follows_its_formula(monkeypatch):
    # A noise prediction linear in the condition: guidance w from reference r then equals
    # plain decoding under r + w * (z - r).
    model = tiny_model()
    monkeypatch.setattr(model, "forward",
                        lambda x, t, z: 0.3 * torch.tanh(x) + z.view(-1, 3, 1, 1))
    noise = torch.randn(2, 3, 16, 16)
    z, r = torch.randn(2, 3) * 0.2, torch.randn(2, 3) * 0.2
    for w in (0.0, 2.0, 3.5):
        torch.testing.assert_close(model.decode(noise, z, 5, reference=r, guidance=w),
                                   model.decode(noise, r + w * (z - r), 5))


def test_edit_guidance_scales_what_the_edit_changes():
    model = tiny_model()
    model.set_code_statistics(*codes(64))
    identity, landmarks = codes(2)
    unedited_z = model.z_face(identity[:1].expand(2, -1), landmarks)
    edited_z = model.z_face(identity[1:].expand(2, -1), landmarks)
    noise = torch.randn(2, 3, 16, 16)
    plain = model.decode(noise, edited_z, 5)
    torch.testing.assert_close(model.decode(noise, edited_z, 5, reference=unedited_z,
                                            guidance=1.0), plain)
    for w in (0.5, 2.0, 4.0):  # no edit to scale: guidance changes nothing
        torch.testing.assert_close(model.decode(noise, edited_z, 5, reference=edited_z,
                                                guidance=w), plain)
    unedited = model.decode(noise, unedited_z, 5)
    twice = model.decode(noise, edited_z, 5, reference=unedited_z, guidance=2.0)
    assert (plain - unedited).abs().mean() > 1e-3, "the test's edit must change the image"
    assert (twice - unedited).norm() > 1.3 * (plain - unedited).norm()


def test_face_model_guides_decoding_with_the_unedited_codes():
    identity, landmarks = codes(2)
    latents = torch.randn(2, 3, 16, 16)
    codec = DiffusionFaceModel(tiny_model(), steps=3, refine=0, precision="fp32")
    model = codec.model
    with torch.no_grad():
        expected = model.decode(latents, model.z_face(identity[1:].expand(2, -1), landmarks), 3,
                                reference=model.z_face(identity[:1].expand(2, -1), landmarks),
                                guidance=2.0)
    guided = codec.decode(latents, identity[1], landmarks, reference=(identity[0], landmarks),
                          guidance=2.0)
    torch.testing.assert_close(guided, expected)
    assert (guided - codec.decode(latents, identity[1], landmarks)).abs().max() > 1e-4


class FakeAttributeEncoder(torch.nn.Module):
    def codes(self, crops: torch.Tensor) -> torch.Tensor:
        return crops.mean((1, 2, 3)).view(-1, 1).expand(-1, ATTRIBUTE_DIM)


def test_face_models_offer_attributes_when_the_model_reads_them():
    from s3edit.errors import S3EditError

    crops = torch.rand(3, 3, 16, 16) * 2 - 1
    assert PassThroughModel(16).attributes is None
    torch.testing.assert_close(PassThroughModel(16, attribute_dim=ATTRIBUTE_DIM).attributes(crops),
                               torch.zeros(3, ATTRIBUTE_DIM))
    assert DiffusionFaceModel(tiny_model(), steps=2).attributes is None
    model = tiny_model(attribute_dim=ATTRIBUTE_DIM)
    with pytest.raises(S3EditError, match="attribute encoder"):
        DiffusionFaceModel(model, steps=2)
    codec = DiffusionFaceModel(model, steps=2, refine=0, attribute_encoder=FakeAttributeEncoder())
    values = codec.attributes(crops)
    torch.testing.assert_close(values, crops.mean((1, 2, 3)).view(-1, 1).expand(-1, 40))
    identity, landmarks = codes(3)
    code = clip_code(identity[0], values.mean(0))
    assert code.shape == (model.clip_code_dim,)
    assert codec.decode(codec.encode(crops, code, landmarks), code, landmarks).shape == crops.shape


def test_bf16_runs_the_unet_in_bf16_and_keeps_the_round_trip():
    model = tiny_model("v_prediction")
    seen = []
    model.unet.register_forward_hook(lambda m, args, out: seen.append(out.sample.dtype))
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    z = model.z_face(*codes(2))
    exact = model.decode(model.invert(x0, z, 5, refine=2), z, 5)
    assert set(seen) == {torch.float32}
    seen.clear()
    halved = model.decode(model.invert(x0, z, 5, refine=2, bf16=True), z, 5, bf16=True)
    assert set(seen) == {torch.bfloat16}
    assert halved.dtype == torch.float32  # the scheduler's arithmetic stays float32
    assert (halved - exact).abs().mean() < 0.05


def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    assert uses_bf16("bf16", cpu) and not uses_bf16("fp32", cpu)
    for supported in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda s=supported: s)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda s=supported: s)
        assert uses_bf16("auto", cpu) == supported
    with pytest.raises(UsageError, match="precision"):
        uses_bf16("fp16", cpu)


def test_stochastic_decoding_repeats_with_its_noise():
    model = tiny_model()
    model.set_code_statistics(*codes(64))
    identity, landmarks = codes(2)
    z = model.z_face(identity, landmarks)
    latents = torch.randn(2, 3, 16, 16)
    noise = torch.randn(4, 1, 3, 16, 16)
    once = model.decode(latents, z, 4, eta=1.0, noise=noise)
    torch.testing.assert_close(model.decode(latents, z, 4, eta=1.0, noise=noise), once)
    assert (once - model.decode(latents, z, 4)).abs().mean() > 1e-3, "eta adds the noise"
    assert (once - model.decode(latents, z, 4, eta=1.0, noise=torch.randn_like(noise))
            ).abs().mean() > 1e-3, "another draw decodes to another image"
    with pytest.raises(ValueError, match="noise for each of the 4 steps"):
        model.decode(latents, z, 4, eta=1.0)


def test_stochastic_face_model_shares_its_noise_across_frames():
    identity, landmarks = codes(1)
    landmarks = landmarks.expand(3, -1)
    latents = torch.randn(1, 3, 16, 16).expand(3, -1, -1, -1)
    codec = DiffusionFaceModel(tiny_model(), steps=3, refine=0, precision="fp32", eta=0.5,
                               seed=7)
    assert not codec.exact_inverse and PassThroughModel().exact_inverse
    decoded = codec.decode(latents, identity[0], landmarks)
    # Frames with the same latents and codes decode alike: the draws are the clip's, not
    # each frame's, so what they add stays put from frame to frame.
    torch.testing.assert_close(decoded[1:], decoded[:1].expand(2, -1, -1, -1))
    reseeded = DiffusionFaceModel(codec.model, steps=3, refine=0, precision="fp32", eta=0.5,
                                  seed=8)
    assert (reseeded.decode(latents, identity[0], landmarks) - decoded).abs().mean() > 1e-3


def eyes_at(left: float, right: float, height: float, n: int = 1) -> torch.Tensor:
    """Landmark codes (n, 102) with the eyes (iBUG 36-47) spread from `left` to `right` at
    `height`, in [-1, 1] crop coordinates, and every other point at the mouth (0, 0.6)."""
    points = torch.tensor([0.0, 0.6]).repeat(51, 1)
    eyes = torch.linspace(left, right, 12)
    points[19:31] = torch.stack([eyes, torch.full((12,), height)], -1)
    return points.flatten().repeat(n, 1)


def test_eye_change_reads_the_eyes_box_of_each_crop():
    from s3edit.model.guidance import eye_change

    delta = torch.zeros(2, 64, 64, 3).numpy()
    delta[:, 46:56] = -40  # the mouth's rows: not the eyes' business
    landmarks = eyes_at(-0.5, 0.5, -0.1, 2)
    assert eye_change(delta, landmarks) == 0
    delta[0, 26:31, 14:50] = -30  # a rim across the eyes of the first crop
    change = eye_change(delta, landmarks)
    assert 0 < change < 30
    # The box follows the landmarks: for eyes lower down it takes in the mouth's rows.
    assert eye_change(delta, eyes_at(-0.5, 0.5, 0.45, 2)) > change


def test_calibrated_guidance_makes_up_a_weak_eyeglasses_edit():
    from s3edit.model.guidance import (
        EYE_CHANGE_PER_SCALE,
        MAX_CALIBRATED_GUIDANCE,
        calibrated_guidance,
    )

    wanted = EYE_CHANGE_PER_SCALE * 0.6
    assert calibrated_guidance(2 * wanted, 0.6) == 1.0, "never weaker than the code asks"
    assert calibrated_guidance(wanted / 1.5, 0.6) == 1.5
    assert calibrated_guidance(wanted / 10, 0.6) == MAX_CALIBRATED_GUIDANCE
    assert calibrated_guidance(0.0, 0.6) == MAX_CALIBRATED_GUIDANCE
    # The change asked for grows with the scale: a subtle edit is not pushed to a strong one.
    assert calibrated_guidance(wanted / 1.5, 0.3) == 1.0
