"""Expression attributes move the landmark codes: fitting, routing, the pipeline and training."""


import numpy as np
import pytest
import torch
from helpers import celeba_subset

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.expression import (
    EXCLUSIVE_ATTRIBUTES,
    EXPRESSION_ATTRIBUTES,
    ExpressionDirections,
    edit_codes,
    fit_expression_directions,
)
from s3edit.edit.loading import load_expressions
from s3edit.errors import S3EditError
from s3edit.model.codes import ATTRIBUTE_DIM, IDENTITY_DIM, LANDMARK_DIM

SMILING = ATTRIBUTES.index("Smiling")
MOUTH_LEFT, MOUTH_RIGHT = 48 - 17, 54 - 17  # iBUG mouth corners among the 51 coded points


def planted(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random landmark codes and labels; every positive of every expression is shifted by its
    own offset."""
    g = torch.Generator().manual_seed(seed)
    landmarks = torch.randn(n, LANDMARK_DIM, generator=g) * 0.01
    labels = (torch.rand(n, len(ATTRIBUTES), generator=g) < 0.4).float()
    offsets = torch.randn(len(EXPRESSION_ATTRIBUTES), LANDMARK_DIM, generator=g) * 0.05
    for i, attr in enumerate(EXPRESSION_ATTRIBUTES):
        landmarks += labels[:, ATTRIBUTES.index(attr), None] * offsets[i]
    return landmarks, labels, offsets


def test_fit_recovers_each_attributes_offset():
    landmarks, labels, offsets = planted()
    model = fit_expression_directions(landmarks, labels)
    for i, attr in enumerate(EXPRESSION_ATTRIBUTES):
        error = (model.directions[i] - offsets[i]).norm() / offsets[i].norm()
        assert error < 0.15, attr  # the other attributes' shifts average out


def along(model, attr, landmarks):
    direction = model.directions[EXPRESSION_ATTRIBUTES.index(attr)]
    return landmarks @ (direction / direction.norm())


def test_an_edit_below_the_knee_moves_by_scale_times_the_difference():
    model = fit_expression_directions(*planted()[:2])
    difference = model.directions[EXPRESSION_ATTRIBUTES.index("Smiling")]
    lower_bound, lower_knee, upper_knee, upper_bound = \
        model.limits[EXPRESSION_ATTRIBUTES.index("Smiling")].tolist()
    assert lower_bound < lower_knee < upper_knee < upper_bound
    # The median face without a smile, moved half way to the median smiling face: it stays
    # below the knee, so it gets the whole step.
    face = torch.zeros(LANDMARK_DIM)
    face += (lower_knee - along(model, "Smiling", face)) * difference / difference.norm()
    step = 0.5 * (upper_knee - lower_knee) / difference.norm()
    torch.testing.assert_close(model.edit("Smiling", step)(face), face + step * difference)
    assert model.holds("Smiling") and not model.holds("Eyeglasses")


def test_an_expression_saturates_toward_the_most_expressive_faces():
    """A frame that already smiles gets less of a smile, and never less than it had; a frame
    up to the median smiling face is never taken past the most smiling faces, one beyond it by
    less than its own lead on that median; the frames keep their order along the direction,
    so the clip's own motion survives."""
    model = fit_expression_directions(*planted()[:2])
    i = EXPRESSION_ATTRIBUTES.index("Smiling")
    lower_bound, lower_knee, upper_knee, upper_bound = model.limits[i].tolist()
    unit = model.directions[i] / model.directions[i].norm()
    levels = torch.linspace(lower_knee, upper_bound + 0.5 * (upper_bound - upper_knee), 9)
    frames = torch.randn(9, LANDMARK_DIM) * 0.01
    frames += (levels - frames @ unit)[:, None] * unit
    for scale in (1.0, 3.0, 30.0):
        edit = model.edit("Smiling", scale)
        before, after = frames @ unit, edit(frames) @ unit
        moves = after - before
        assert (moves >= 0).all() and (moves[1:] <= moves[:-1] + 1e-6).all()
        assert (after < upper_bound + (before - upper_knee).clamp(min=0) + 1e-5).all()
        assert (after[1:] >= after[:-1] - 1e-6).all()  # equal only where float32 saturates
        # Only the part along the direction moves.
        torch.testing.assert_close(edit(frames) - frames, moves[:, None] * unit)
    # A large edit takes the least smiling frame near the most smiling faces.
    assert after[0] > upper_bound - 0.05 * (upper_bound - upper_knee)
    # Removing saturates alike toward the least smiling faces.
    removed = model.edit("Smiling", -30.0)(frames) @ unit
    assert (removed >= lower_bound - 1e-5).all() and (removed <= frames @ unit).all()


def test_weights_fitted_without_limits_are_refused_saying_so(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "editors" / "expression"
    fit_expression_directions(*planted()[:2]).save_pretrained(folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    save_file({"directions": load_file(weights)["directions"]}, weights)
    with pytest.raises(S3EditError, match="s3edit train expression"):
        load_expressions(tmp_path)


def test_fit_needs_both_classes():
    landmarks, labels, _ = planted()
    labels[:, SMILING] = 1
    with pytest.raises(ValueError, match="Smiling"):
        fit_expression_directions(landmarks, labels)


class RecordingEditor:
    name = "recording"

    def __init__(self):
        self.calls = []

    def edit(self, identity, attr, scale):
        self.calls.append((attr, scale))
        return identity if scale == 0 else identity + scale


def test_edit_codes_routes_expressions_to_the_landmarks():
    model = fit_expression_directions(*planted()[:2])
    identity, landmarks = torch.randn(128), torch.randn(5, LANDMARK_DIM)
    editor = RecordingEditor()

    smile = edit_codes(editor, model, identity, "Smiling", 1.5)
    assert editor.calls == [], "the identity editor is not asked"
    assert torch.equal(smile.identity, identity) and smile.changes(identity)
    torch.testing.assert_close(smile.landmarks(landmarks), model.edit("Smiling", 1.5)(landmarks))

    glasses = edit_codes(editor, model, identity, "Eyeglasses", 0.5)
    assert editor.calls == [("Eyeglasses", 0.5)] and glasses.expression is None
    assert torch.equal(glasses.landmarks(landmarks), landmarks)

    # Without directions (older weights folders) expressions go to the identity editor.
    assert edit_codes(editor, None, identity, "Smiling", 1.0).expression is None
    # Scale 0 changes nothing, by either route.
    for attr in ("Smiling", "Eyeglasses"):
        assert not edit_codes(editor, model, identity, attr, 0).changes(identity)


def test_edited_blond_is_held_at_the_labels_value_and_the_rest_left_free():
    """The editors push an attribute value far past the labels' +1; for blond hair the decoder
    then draws grey, so the edited code holds Blond_Hair at +1. Eyeglasses, the identity and
    codes without attribute values keep what the editor wrote (the other hair colours are
    held too, by the test below)."""
    code = torch.cat([torch.nn.functional.normalize(torch.randn(IDENTITY_DIM), dim=0),
                      torch.rand(ATTRIBUTE_DIM) * 2 - 1])
    blond, glasses = (IDENTITY_DIM + ATTRIBUTES.index(a) for a in ("Blond_Hair", "Eyeglasses"))
    edited = edit_codes(RecordingEditor(), None, code, "Blond_Hair", 3.0).identity
    assert edited[blond] == 1.0 and edited[glasses] == code[glasses] + 3.0
    others = torch.ones(len(code), dtype=torch.bool)
    others[[IDENTITY_DIM + ATTRIBUTES.index(a) for a in EXCLUSIVE_ATTRIBUTES]] = False
    torch.testing.assert_close(edited[others], code[others] + 3.0)
    # Under the limit the value is the editor's own.
    assert edit_codes(RecordingEditor(), None, code, "Blond_Hair", -0.5).identity[blond] \
        == code[blond] - 0.5
    identity_only = torch.randn(IDENTITY_DIM)
    torch.testing.assert_close(edit_codes(RecordingEditor(), None, identity_only, "Blond_Hair",
                                          3.0).identity, identity_only + 3.0)


def test_an_edited_hair_colour_holds_the_others_under_minus_its_value():
    """Hair colours are exclusive in the labels: raising one lowers the others that would sum
    with it above 0, by every editor; lowering one, or editing another attribute, does not
    touch them."""
    values = {"Black_Hair": 0.9, "Blond_Hair": -1.0, "Brown_Hair": -0.2, "Gray_Hair": -0.95}
    code = torch.cat([torch.nn.functional.normalize(torch.randn(IDENTITY_DIM), dim=0),
                      torch.zeros(ATTRIBUTE_DIM)])
    for attr, value in values.items():
        code[IDENTITY_DIM + ATTRIBUTES.index(attr)] = value

    class SetBlond:
        name = "set"

        def __init__(self, to):
            self.to = to

        def edit(self, identity, attr, scale):
            out = identity.clone()
            out[IDENTITY_DIM + ATTRIBUTES.index(attr)] = self.to
            return out

    def hair(edited):
        return {a: round(float(edited[IDENTITY_DIM + ATTRIBUTES.index(a)]), 4)
                for a in EXCLUSIVE_ATTRIBUTES}

    blond = edit_codes(SetBlond(1.0), None, code, "Blond_Hair", 0.6).identity
    assert hair(blond) == {"Black_Hair": -1.0, "Blond_Hair": 1.0, "Brown_Hair": -1.0,
                           "Gray_Hair": -1.0}
    # Half way: only the colours above minus the new value come down.
    half = edit_codes(SetBlond(0.3), None, code, "Blond_Hair", 0.2).identity
    assert hair(half) == {"Black_Hair": -0.3, "Blond_Hair": 0.3, "Brown_Hair": -0.3,
                          "Gray_Hair": -0.95}
    # Taking a colour away leaves the others as they were; so does any other attribute.
    less_black = edit_codes(SetBlond(-1.0), None, code, "Black_Hair", -0.6).identity
    assert hair(less_black) == {**values, "Black_Hair": -1.0}
    glasses = edit_codes(SetBlond(1.0), None, code, "Eyeglasses", 0.6).identity
    assert hair(glasses) == values


def test_save_load_round_trip(tmp_path):
    model = fit_expression_directions(*planted()[:2])
    model.save_pretrained(tmp_path / "expression")
    loaded = ExpressionDirections.from_pretrained(tmp_path / "expression")
    assert list(loaded.config.attributes) == list(model.config.attributes)
    torch.testing.assert_close(loaded.directions, model.directions)
    torch.testing.assert_close(loaded.limits, model.limits)


@pytest.fixture(scope="module")
def tiny_labelled(shared_data, tmp_path_factory):
    """60 real CelebA-HQ faces in the CelebAMask-HQ layout, with their labels."""
    return celeba_subset(shared_data / "CelebAMask-HQ-128", tmp_path_factory.mktemp("labelled"),
                         count=60)


def test_train_expression_on_real_faces_widens_the_mouth_for_a_smile(
        run_s3edit, tiny_labelled, tmp_path, monkeypatch):
    monkeypatch.setenv("S3EDIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "editors"
    proc = run_s3edit("train", "expression", "--data", tiny_labelled, "--out", out,
                      timeout=600)
    assert proc.returncode == 0, proc.stderr
    model = ExpressionDirections.from_pretrained(out / "expression")
    smile = model.directions[EXPRESSION_ATTRIBUTES.index("Smiling")].view(-1, 2).numpy()
    # Smiling faces' mouth corners sit further apart and higher (y grows downwards).
    assert smile[MOUTH_RIGHT, 0] - smile[MOUTH_LEFT, 0] > 0.02
    assert np.mean(smile[[MOUTH_LEFT, MOUTH_RIGHT], 1]) < 0
    # The smile's limits are ordered: the least smiling faces, the median face without a
    # smile, the median one with, the most smiling.
    limits = model.limits[EXPRESSION_ATTRIBUTES.index("Smiling")]
    assert (limits[1:] > limits[:-1]).all()


def test_train_expression_refuses_a_folder_without_labels(run_s3edit, tmp_path):
    proc = run_s3edit("train", "expression", "--data", tmp_path, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "attribute labels" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
