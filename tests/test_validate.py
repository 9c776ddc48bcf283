"""The autoencoder's validation measures, on decoders whose use of the codes is known."""

import cv2
import numpy as np
import torch

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.model.codes import ATTRIBUTE_DIM, IDENTITY_DIM
from s3edit.train.autoencoder import FaceBatchSource
from s3edit.train.validate import ClipCrops, attribute_edit, code_use, identity_swap_strip

EYEGLASSES = ATTRIBUTES.index("Eyeglasses")


def flat_faces(n: int = 8) -> FaceBatchSource:
    """Flat-coloured images whose identity code holds their colour."""
    torch.manual_seed(0)
    colours = torch.rand(n, 3) * 1.6 - 0.8
    identity = torch.cat([colours, torch.zeros(n, 125)], 1)
    images = colours.view(n, 3, 1, 1).expand(n, 3, 16, 16).clone()
    return FaceBatchSource(images, identity, torch.rand(n, 102), torch.ones(n, 1, 16, 16),
                           torch.zeros(n, ATTRIBUTE_DIM))


def decoder(monkeypatch, reads_identity: bool = True, glasses: float = 0.0
            ) -> DiffusionFaceAutoencoder:
    """A model whose noise prediction implies x0 = the colour in its code (or the mean colour),
    brightened by `glasses` times the code's eyeglasses value when it has attributes."""
    model = DiffusionFaceAutoencoder(resolution=16, block_out_channels=(8, 16),
                                     attention_levels=(1,), fusion_hidden=32).eval()
    alphas = model.schedulers()[0].alphas_cumprod

    def forward(x_t, t, z):
        colour = z[:, :3] if reads_identity else z[:, :3].mean(0, keepdim=True).expand_as(z[:, :3])
        if z.shape[1] > IDENTITY_DIM:
            colour = colour + glasses * z[:, IDENTITY_DIM + EYEGLASSES, None]
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


def test_identity_swap_strip_decodes_the_clip_under_other_codes(monkeypatch, tmp_path):
    faces = flat_faces(8)
    clip = ClipCrops(faces.images[:1].expand(6, -1, -1, -1), faces.landmarks[:6],
                     faces.clip_code[0])
    others = faces.clip_code[1:3]
    out = tmp_path / "swap.png"
    identity_swap_strip(decoder(monkeypatch), clip, others, steps=5, refine=1, out=out)
    grid = cv2.imread(str(out))[:, :, ::-1].astype(np.float32) / 127.5 - 1
    assert grid.shape == (4 * 16, 6 * 16, 3)
    for row, colour in enumerate([faces.clip_code[0], faces.clip_code[0], *others]):
        np.testing.assert_allclose(grid[row * 16:(row + 1) * 16].reshape(-1, 3).mean(0),
                                   colour[:3].numpy(), atol=0.02)


class BrightnessClassifier:
    """An image classifier that sees eyeglasses on bright faces (numpy out, as the real one)."""

    def index(self, attr: str) -> int:
        return ATTRIBUTES.index(attr)

    def probabilities(self, images: np.ndarray) -> np.ndarray:  # as ImageAttributeClassifier
        brightness = torch.from_numpy(images).float().mean((1, 2, 3)) / 127.5 - 1
        return torch.sigmoid(20 * brightness).view(-1, 1).expand(-1, len(ATTRIBUTES)).numpy()


def glasses_faces(n: int = 12) -> FaceBatchSource:
    """Faces a little off grey, brighter by 0.4 with eyeglasses (every third face) and darker
    by 0.4 without: the clip code holds the colour, then the attribute values."""
    torch.manual_seed(0)
    colours = torch.rand(n, 3) * 0.2 - 0.1
    labels = torch.zeros(n, ATTRIBUTE_DIM)
    labels[::3, EYEGLASSES] = 1
    labels[1::2, 0] = 1  # another attribute, which the edit must leave alone
    attributes = labels * 2 - 1
    code = torch.cat([colours, torch.zeros(n, IDENTITY_DIM - 3), attributes], 1)
    images = (colours + 0.4 * attributes[:, EYEGLASSES, None]).view(n, 3, 1, 1)
    return FaceBatchSource(images.expand(n, 3, 16, 16).clone(), code, torch.rand(n, 102),
                           torch.ones(n, 1, 16, 16), labels)


def test_attribute_edit_sets_the_attribute_of_faces_without_it(monkeypatch, tmp_path):
    model = decoder(monkeypatch, glasses=0.4)
    faces = glasses_faces()
    out = tmp_path / "edit.png"
    result = attribute_edit(model, faces, "Eyeglasses", 1.0, BrightnessClassifier(), steps=5,
                            refine=1, count=32, out=out)
    assert result["faces"] == 8, "only the faces without eyeglasses are edited"
    assert result["before"] < 0.01 and result["after"] > 0.99
    assert result["success_rate"] == 1.0
    assert cv2.imread(str(out)).shape == (2 * 16, 8 * 16, 3)
    limited = attribute_edit(model, faces, "Eyeglasses", 1.0, BrightnessClassifier(), steps=5,
                             refine=1, count=3)
    assert limited["faces"] == 3
    unedited = attribute_edit(model, faces, "Eyeglasses", -1.0, BrightnessClassifier(), steps=5,
                              refine=1)
    assert unedited["success_rate"] == 0.0
    assert abs(unedited["after"] - unedited["before"]) < 1e-3
