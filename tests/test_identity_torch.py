"""The PyTorch port of dlib's face recognition ResNet against dlib itself, on real faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import face_recognition_models as frm
import numpy as np
import pytest
import torch

from s3edit.face.identity import recognition_model_path
from s3edit.face.identity_torch import (
    DlibFaceNet,
    chip_matrix,
    chips_to_tensor,
    warp_to_chip,
)

FACES = 8


@pytest.fixture(scope="module")
def net() -> DlibFaceNet:
    return DlibFaceNet.from_dat()


def five_points(image: np.ndarray) -> dlib.full_object_detection:
    """dlib's 5 points in dlib's own face box (HOG, upsampled once for these small faces)."""
    boxes = dlib.get_frontal_face_detector()(image, 1)
    assert boxes, "dlib finds no face"
    shape5 = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    return shape5(image, boxes[0])


@pytest.fixture(scope="module")
def faces(shared_data: Path) -> list[tuple[np.ndarray, dlib.full_object_detection]]:
    """The first CelebA-HQ images (RGB) with their 5 points."""
    folder = shared_data / "CelebAMask-HQ-128" / "CelebA-HQ-img"
    if not (folder / "0.jpg").is_file():
        pytest.skip(f"CelebA-HQ images not found in {folder}")
    images = [np.ascontiguousarray(cv2.imread(str(folder / f"{i}.jpg"))[:, :, ::-1])
              for i in range(FACES)]
    return [(image, five_points(image)) for image in images]


@pytest.fixture(scope="module")
def chips(faces) -> list[np.ndarray]:
    return [dlib.get_face_chip(image, shape, 150, 0.25) for image, shape in faces]


def test_descriptors_match_dlib(net: DlibFaceNet, chips: list[np.ndarray]) -> None:
    reference = dlib.face_recognition_model_v1(recognition_model_path())
    expected = np.asarray(reference.compute_face_descriptor(chips), np.float32)
    with torch.no_grad():
        ours = net(chips_to_tensor(chips)).numpy()
    assert ours.shape == (FACES, 128)
    # float32 all through; measured 4.5e-7 against descriptors of norm about 1.5.
    assert np.abs(ours - expected).max() < 1e-5


def test_a_batch_equals_its_items(net: DlibFaceNet, chips: list[np.ndarray]) -> None:
    batch = chips_to_tensor(chips)
    with torch.no_grad():
        together = net(batch)
        alone = torch.cat([net(batch[i:i + 1]) for i in range(len(batch))])
    assert torch.allclose(together, alone, atol=1e-5, rtol=0)


def test_gradients_reach_the_input(net: DlibFaceNet, chips: list[np.ndarray]) -> None:
    x = chips_to_tensor(chips[:2]).requires_grad_()
    loss = torch.linalg.vector_norm(net(x[:1]) - net(x[1:]))
    loss.backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad[0].abs() > 0).float().mean() > 0.5 and (grad[1].abs() > 0).float().mean() > 0.5
    assert all(p.grad is None for p in net.parameters())  # frozen

    # The gradient is the derivative: a central difference along it, in float64.
    net64 = DlibFaceNet.from_dat().double()
    x64 = chips_to_tensor(chips[:1]).double().requires_grad_()
    target = torch.randn(1, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (net64(x64) * target).sum().backward()
    direction = torch.randn(x64.shape, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(1))
    eps = 1e-5
    with torch.no_grad():
        ahead = (net64(x64 + eps * direction) * target).sum()
        behind = (net64(x64 - eps * direction) * target).sum()
    numeric = float((ahead - behind) / (2 * eps))
    analytic = float((x64.grad * direction).sum())
    assert analytic == pytest.approx(numeric, rel=1e-5)  # measured 3e-9


def test_warp_to_chip_cuts_dlibs_chip(net: DlibFaceNet, faces) -> None:
    """From a rotated, enlarged face (the chip does not shrink it), the differentiable warp
    gives dlib's chip up to dlib's rounding to uint8, and nearly its descriptor."""
    image, _ = faces[0]
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((64, 64), 15, 1.2), (150, 150))
    shape = five_points(turned)
    chip = dlib.get_face_chip(turned, shape, 150, 0.25)
    images = torch.from_numpy(turned).permute(2, 0, 1)[None].float().requires_grad_()
    warped = warp_to_chip(images, chip_matrix(shape)[None])
    diff = np.abs(warped.detach()[0].permute(1, 2, 0).numpy() - chip)
    assert diff.mean() < 0.6 and np.median(diff) < 1
    with torch.no_grad():
        gap = (net(warped) - net(chips_to_tensor([chip]))).abs().max()
    assert gap < 1e-2
    net(warped).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    data = Path(recognition_model_path()).read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="dlib .dat"):
        DlibFaceNet.from_dat(cut)
    other = tmp_path / "other.dat"
    # The first layer version follows the loss layer's name and two floats.
    start = data.index(b"loss_metric_2") + len(b"loss_metric_2") + 12
    assert data[start:start + 2] == b"\x01\x02"
    other.write_bytes(data[:start] + b"\x01\x03" + data[start + 2:])
    with pytest.raises(ValueError, match="layer version"):
        DlibFaceNet.from_dat(other)
