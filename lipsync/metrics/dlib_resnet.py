"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) as a batched torch module.

The weights are read straight from dlib's serialized `.dat` network, so CSIM can embed many face
chips per call with torch's convolutions (and on a GPU) instead of dlib's one-face-at-a-time CPU
path. The architecture is dlib's `dnn_face_recognition_ex.cpp` network: a 7x7/2 stem and 3x3
residual blocks of 32, 64, 128, 256, 256 filters, then a 128-d linear layer. Two dlib conventions
are kept exactly: convolutions and pools with stride 2 have no padding, and a residual sum of
tensors of different sizes zero-pads the smaller one (dlib's add_prev).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lipsync.core.errors import InputError

CHIP_SIZE = 150
# dlib's input_rgb_image_sized: (pixel - channel mean) / 256, channel order R, G, B.
INPUT_MEAN = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0
# (filters, residual blocks, first block downsamples) from the input outward.
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
EMBEDDING_DIMS = 128


class _Reader:
    """dlib's serialization: integers as a length byte (bit 7 = sign) and little-endian bytes;
    tensors as version, num_samples, k, nr, nc, then raw little-endian float32."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.position = 0

    def integer(self) -> int:
        head = self.data[self.position]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.position + 1:self.position + 1 + size], "little")
        self.position += 1 + size
        return -value if head & 0x80 else value

    def seek_layer(self, name: str) -> None:
        """Move past the next serialized layer name `name` (a length-prefixed string)."""
        tag = bytes([len(name)]) + name.encode()
        found = self.data.find(tag, self.position)
        if found < 0:
            raise InputError(self.path, f"not dlib's face-recognition ResNet: no {name!r} layer "
                                        f"after byte {self.position}")
        self.position = found + len(tag)

    def tensor(self) -> np.ndarray:
        version = self.integer()
        shape = tuple(self.integer() for _ in range(4))
        if version != 2:
            raise InputError(self.path, f"unknown dlib tensor version {version} at byte "
                                        f"{self.position}")
        count = int(np.prod(shape))
        end = self.position + 4 * count
        if end > len(self.data):
            raise InputError(self.path, "truncated dlib network file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.position)
        self.position = end
        return values.reshape(shape).copy()


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger size in each dimension, both zero-padded."""
    if a.shape == b.shape:
        return a + b
    shape = [max(m, n) for m, n in zip(a.shape, b.shape, strict=True)]
    out = a.new_zeros(shape)
    out[:, :a.shape[1], :a.shape[2], :a.shape[3]] += a
    out[:, :b.shape[1], :b.shape[2], :b.shape[3]] += b
    return out


class _Block(torch.nn.Module):
    """conv(stride) - affine - relu - conv - affine, plus the (avg-pooled when strided) input."""

    def __init__(self, channels_in: int, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = torch.nn.Conv2d(channels_in, channels, 3, stride, padding=1 if stride == 1 else 0)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, 1, padding=1)
        self.scale1 = torch.nn.Parameter(torch.ones(channels), requires_grad=False)
        self.shift1 = torch.nn.Parameter(torch.zeros(channels), requires_grad=False)
        self.scale2 = torch.nn.Parameter(torch.ones(channels), requires_grad=False)
        self.shift2 = torch.nn.Parameter(torch.zeros(channels), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x) * self.scale1[:, None, None] + self.shift1[:, None, None]
        y = self.conv2(F.relu(y)) * self.scale2[:, None, None] + self.shift2[:, None, None]
        shortcut = x if self.stride == 1 else F.avg_pool2d(x, 2, 2)
        return F.relu(_add_padded(shortcut, y))


class FaceRecognitionResNet(torch.nn.Module):
    """150x150 RGB face chips (uint8, B x 150 x 150 x 3) -> 128-d dlib descriptors."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 7, 2, padding=0)
        self.stem_scale = torch.nn.Parameter(torch.ones(32), requires_grad=False)
        self.stem_shift = torch.nn.Parameter(torch.zeros(32), requires_grad=False)
        blocks, channels_in = [], 32
        for channels, count, downsample in STAGES:
            for i in range(count):
                blocks.append(_Block(channels_in, channels, 2 if downsample and i == 0 else 1))
                channels_in = channels
        self.blocks = torch.nn.Sequential(*blocks)
        self.fc = torch.nn.Linear(channels_in, EMBEDDING_DIMS, bias=False)
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips.permute(0, 3, 1, 2).float() - self.mean) / INPUT_SCALE
        x = self.stem(x) * self.stem_scale[:, None, None] + self.stem_shift[:, None, None]
        x = F.max_pool2d(F.relu(x), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    def layers_in_file_order(self) -> list[tuple[torch.nn.Conv2d, torch.nn.Parameter,
                                                  torch.nn.Parameter]]:
        """(conv, affine scale, affine shift) in the order dlib serializes them (input first)."""
        order = [(self.stem, self.stem_scale, self.stem_shift)]
        for block in self.blocks:
            order += [(block.conv1, block.scale1, block.shift1),
                      (block.conv2, block.scale2, block.shift2)]
        return order


def load(path: Path) -> FaceRecognitionResNet:
    """The network with the weights of dlib's serialized `path`, in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "dlib face-recognition network not found")
    reader, net = _Reader(path), FaceRecognitionResNet()
    with torch.no_grad():
        for conv, scale, shift in net.layers_in_file_order():
            reader.seek_layer("con_4")
            _assign_conv(reader, conv)
            reader.seek_layer("affine_")
            affine = reader.tensor().reshape(-1)
            _check(reader, affine.size == 2 * scale.numel(), "affine", affine.size)
            scale.copy_(torch.from_numpy(affine[:scale.numel()]))
            shift.copy_(torch.from_numpy(affine[scale.numel():]))
        reader.seek_layer("fc_2")
        reader.integer(), reader.integer()  # outputs, inputs: the tensor's shape repeats them
        weights = reader.tensor().reshape(net.fc.in_features, -1)
        _check(reader, weights.shape == (net.fc.in_features, EMBEDDING_DIMS), "fc", weights.shape)
        net.fc.weight.copy_(torch.from_numpy(weights.T.copy()))
    return net.eval()


def _assign_conv(reader: _Reader, conv: torch.nn.Conv2d) -> None:
    params = reader.tensor().reshape(-1)
    filters = conv.weight.numel()
    _check(reader, params.size == filters + conv.out_channels, "conv", params.size)
    conv.weight.copy_(torch.from_numpy(params[:filters].reshape(conv.weight.shape)))
    conv.bias.copy_(torch.from_numpy(params[filters:]))


def _check(reader: _Reader, ok: bool, layer: str, got) -> None:
    if not ok:
        raise InputError(reader.path, f"not dlib's face-recognition ResNet v1: {layer} layer "
                                      f"parameters of size {got} before byte {reader.position}")

