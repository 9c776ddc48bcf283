"""The diffusion autoencoder: loading, conditioning, and the DDIM inversion/decoding pairing."""

import pytest
import torch

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codec import DiffusionCodec, PassThroughCodec
from s3edit.model.codes import identity_code, landmark_code
from s3edit.train.autoencoder import FaceBatchSource
from s3edit.train.upgrade import upgrade


def tiny_model(prediction_type: str = "epsilon") -> DiffusionFaceAutoencoder:
    torch.manual_seed(0)
    return DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16),
                                    attention_levels=(1,), fusion_hidden=32,
                                    prediction_type=prediction_type).eval()


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


def test_codecs_share_one_interface():
    identity, landmarks = codes(3)
    crops = torch.rand(3, 3, 16, 16) * 2 - 1
    passthrough = PassThroughCodec(16)
    latents = passthrough.encode(crops, identity[0], landmarks)
    torch.testing.assert_close(passthrough.decode(latents, identity[0], landmarks), crops)
    diffusion = DiffusionCodec(tiny_model(), steps=3, refine=1)
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
                            torch.ones(64, 1, 16, 16))
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
