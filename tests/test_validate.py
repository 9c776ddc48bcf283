"""The autoencoder's validation measures, on decoders whose use of the codes is known."""

import torch

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.train.autoencoder import FaceBatchSource
from s3edit.train.validate import code_use


def flat_faces(n: int = 8) -> FaceBatchSource:
    """Flat-coloured images whose identity code holds their colour."""
    torch.manual_seed(0)
    colours = torch.rand(n, 3) * 1.6 - 0.8
    identity = torch.cat([colours, torch.zeros(n, 125)], 1)
    images = colours.view(n, 3, 1, 1).expand(n, 3, 16, 16).clone()
    return FaceBatchSource(images, identity, torch.rand(n, 102), torch.ones(n, 1, 16, 16))


def decoder(monkeypatch, reads_identity: bool) -> DiffusionFaceAutoencoder:
    """A model whose noise prediction implies x0 = the colour in its code (or the mean colour)."""
    model = DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16),
                                     attention_levels=(1,), fusion_hidden=32).eval()
    alphas = model.schedulers()[0].alphas_cumprod

    def forward(x_t, t, z):
        colour = z[:, :3] if reads_identity else z[:, :3].mean(0, keepdim=True).expand_as(z[:, :3])
        a = alphas[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * colour.reshape(-1, 3, 1, 1)) / (1 - a).sqrt()

    monkeypatch.setattr(model, "z_face", lambda identity, landmarks: identity)
    monkeypatch.setattr(model, "forward", forward)
    return model


def test_a_decoder_that_reads_the_identity_code_errs_with_another_one(monkeypatch):
    faces = flat_faces()
    for use in code_use(decoder(monkeypatch, reads_identity=True), faces, count=8).values():
        assert use["own_error"] < 1e-3
        assert use["swapped_error"] > 0.1
        assert abs(use["response"] - use["swapped_error"]) < 1e-3


def test_a_decoder_that_ignores_the_identity_code_shows_no_response(monkeypatch):
    faces = flat_faces()
    for use in code_use(decoder(monkeypatch, reads_identity=False), faces, count=8).values():
        assert use["response"] < 1e-5
        assert abs(use["own_error"] - use["swapped_error"]) < 1e-5
        assert use["own_error"] > 0.1
