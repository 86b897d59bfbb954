"""SyncNet audio-visual experts: the one this pipeline trains (Wav2Lip's design, on 96x96 GRID crops
and 80-band mels) and syncnet_python's public network (`syncnet_v2.model`) with its weight loader.

The trained expert embeds T consecutive lower-half face crops (stacked on channels) and the mel
window covering the same T frames into L2-normalised vectors; the probability that they are in
sync is a logistic on their scaled cosine similarity, p = sigmoid(scale * cos + bias) with a
learnt scale and bias. (Wav2Lip clamps a ReLU-embedding cosine into (0, 1) and applies BCE to it;
the logistic keeps the embeddings on the whole sphere and trains in far fewer steps, which a CPU
demo needs.) Distances for LSE-D/LSE-C are Euclidean between the normalised embeddings.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lipsync.core.errors import InputError
from lipsync.core.options import Option, resolve
from lipsync.models.blocks import ConvBlock, ResidualBlock, count_parameters, scaled

# The expert's fixed input, from the packed data (docs/ARCHITECTURE.md): 96x96 RGB crops, 80 mel
# bands at 16/5 mel steps per 25 fps video frame.
IMAGE_SIZE = 96
N_MELS = 80

OPTIONS = {
    "frames": Option(5, int, "T: consecutive frames per window (Wav2Lip's expert and "
                     "syncnet_python both use 5 = 200 ms at 25 fps); the mel window is "
                     "16 steps for T = 5 (3.2 steps per frame).", minimum=2, maximum=15),
    "width": Option(1.0, float, "Channel multiplier: 1.0 is Wav2Lip's expert (32..512 "
                    "channels); 0.125 trains the CPU demo in about a minute.", above=0,
                    maximum=4),
    "embedding": Option(512, int, "Embedding size of both encoders (Wav2Lip: 512).", minimum=8),
}
DEFAULTS = {name: option.default for name, option in OPTIONS.items()}
# PyTorch's BatchNorm defaults (Wav2Lip is PyTorch), not the Keras values LipGAN's blocks use.
_NORM = {"bn_momentum": 0.1, "bn_eps": 1e-5}


def resolve_options(options: dict | None, where: str = "syncnet.model") -> dict:
    return resolve(OPTIONS, options, where)


def mel_window(frames: int, steps_per_frame: float = 3.2) -> int:
    """Mel steps covering `frames` video frames (16 for 5 frames at 3.2 steps per frame)."""
    return int(round(frames * steps_per_frame))


class _FaceEncoder(nn.Module):
    """3T x 48 x 96 (T lower halves stacked on channels) -> embedding."""

    def __init__(self, frames: int, width: float, embedding: int):
        super().__init__()
        c = [scaled(n, width) for n in (32, 64, 128, 256, 512)]
        self.layers = nn.Sequential(
            ConvBlock(3 * frames, c[0], 7, **_NORM),  # 48 x 96
            ConvBlock(c[0], c[1], 5, (1, 2), **_NORM),  # 48 x 48: square from here on
            ResidualBlock(c[1], **_NORM), ResidualBlock(c[1], **_NORM),
            ConvBlock(c[1], c[2], 3, 2, **_NORM),  # 24
            ResidualBlock(c[2], **_NORM), ResidualBlock(c[2], **_NORM),
            ConvBlock(c[2], c[3], 3, 2, **_NORM),  # 12
            ResidualBlock(c[3], **_NORM), ResidualBlock(c[3], **_NORM),
            ConvBlock(c[3], c[4], 3, 2, **_NORM),  # 6
            ResidualBlock(c[4], **_NORM),
            ConvBlock(c[4], c[4], 3, 2, **_NORM),  # 3
            ConvBlock(c[4], c[4], 3, padding="valid", **_NORM),  # 1
            # linear last layer: embeddings may point anywhere on the sphere
            nn.Conv2d(c[4], embedding, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


class _AudioEncoder(nn.Module):
    """1 x 80 x W mel window -> embedding (W = 16 for T = 5)."""

    def __init__(self, width: float, embedding: int):
        super().__init__()
        c = [scaled(n, width) for n in (32, 64, 128, 256, 512)]
        self.layers = nn.Sequential(
            ConvBlock(1, c[0], 3, **_NORM), ResidualBlock(c[0], **_NORM),  # 80 x 16
            ConvBlock(c[0], c[1], 3, (3, 1), **_NORM), ResidualBlock(c[1], **_NORM),  # 27 x 16
            ConvBlock(c[1], c[2], 3, 3, **_NORM), ResidualBlock(c[2], **_NORM),  # 9 x 6
            ConvBlock(c[2], c[3], 3, (3, 2), **_NORM), ResidualBlock(c[3], **_NORM),  # 3 x 3
            ConvBlock(c[3], c[4], 3, padding="valid", **_NORM),  # 1 x 1
            nn.Conv2d(c[4], embedding, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # other T give other window widths: pool what is left to one vector
        return F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)


class SyncExpert(nn.Module):
    """The expert: `embed_faces`, `embed_audio` (unit vectors) and `sync_logit` of a pair."""

    def __init__(self, frames: int = 5, width: float = 1.0, embedding: int = 512):
        super().__init__()
        self.frames = frames
        self.face = _FaceEncoder(frames, width, embedding)
        self.audio = _AudioEncoder(width, embedding)
        # p = sigmoid(scale * cos + bias); a scale of 5 spreads cos in [-1, 1] over the logistic
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """faces: B x 3T x 48 x 96 in [0, 1] -> B x E unit vectors."""
        return F.normalize(self.face(faces), dim=1)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: B x 1 x 80 x W -> B x E unit vectors."""
        return F.normalize(self.audio(mel), dim=1)

    def sync_logit(self, face_embedding: torch.Tensor, audio_embedding: torch.Tensor
                   ) -> torch.Tensor:
        cosine = (face_embedding * audio_embedding).sum(dim=1)
        return self.scale * cosine + self.bias

    def forward(self, faces: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self.sync_logit(self.embed_faces(faces), self.embed_audio(mel))


def build(options: dict | None = None) -> SyncExpert:
    o = resolve_options(options)
    return SyncExpert(o["frames"], o["width"], o["embedding"])


def load_expert(path: str | os.PathLike, device: torch.device | str = "cpu"
                ) -> tuple[SyncExpert, dict]:
    """The trained expert (eval mode) from `lipsync train-syncnet`'s output or a checkpoint,
    and what it says about itself (options, windows trained, held-out accuracy, provenance)."""
    from lipsync.training.checkpoint import load_network

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "sync expert not found (train it: lipsync train-syncnet, or "
                               "the workflow's train_syncnet rule)")
    return load_network(path, "expert", lambda state: build(state.get("model_options")), device)


def face_windows(crops: torch.Tensor, frames: int) -> torch.Tensor:
    """uint8 or float crops N x H x W x 3 (RGB, time order) -> the expert's input of the N-T+1
    windows of T consecutive crops: lower halves in [0, 1], stacked on channels."""
    lower = crops[:, crops.shape[1] // 2:].permute(0, 3, 1, 2).float()
    if crops.dtype == torch.uint8:
        lower = lower / 255.0
    windows = lower.unfold(0, frames, 1)  # (N-T+1) x 3 x h x W x T
    n, c, h, w, t = windows.shape
    return windows.permute(0, 4, 1, 2, 3).reshape(n, t * c, h, w)


# --- syncnet_python's public SyncNet ("S" in SyncNetModel.py, weights syncnet_v2.model) ---------

# syncnet_python's input protocol: whole-face crops 224 x 224 (BGR, 0..255, not rescaled), 5
# frames as a 3-D convolution's depth; 13 MFCCs at 100 steps/s, 20 steps (= 5 frames) per window.
PUBLIC_PROTOCOL = {"image_size": 224, "frames": 5, "mfcc": 13, "mfcc_steps_per_frame": 4,
                   "mfcc_window": 20, "embedding": 1024}
# Their module names -> ours (state-dict keys are `<name>.<index>.<param>`).
PUBLIC_KEY_MAP = {"netcnnaud": "audio_cnn", "netfcaud": "audio_fc", "netcnnlip": "lip_cnn",
                  "netfclip": "lip_fc"}


def _bn_relu(layer: nn.Module, channels: int, three_d: bool = False) -> list[nn.Module]:
    norm = nn.BatchNorm3d(channels) if three_d else nn.BatchNorm2d(channels)
    return [layer, norm, nn.ReLU(inplace=True)]


class PublicSyncNet(nn.Module):
    """syncnet_python's SyncNet: same layers in the same order (so the state-dict indices match),
    readable names. Embeddings are L2-normalised here (LSE uses normalised distances)."""

    def __init__(self, embedding: int = 1024):
        super().__init__()
        self.audio_cnn = nn.Sequential(
            *_bn_relu(nn.Conv2d(1, 64, 3, 1, 1), 64), nn.MaxPool2d(1, 1),
            *_bn_relu(nn.Conv2d(64, 192, 3, 1, 1), 192), nn.MaxPool2d(3, (1, 2)),
            *_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384),
            *_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256),
            *_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256), nn.MaxPool2d(3, 2),
            *_bn_relu(nn.Conv2d(256, 512, (5, 4)), 512),
        )
        self.audio_fc = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, embedding))
        self.lip_fc = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                    nn.Linear(512, embedding))
        self.lip_cnn = nn.Sequential(
            *_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), 96, True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, True),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, True),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(nn.Conv3d(256, 512, (1, 6, 6)), 512, True),
        )

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """mfcc: B x 1 x 13 x 20 -> B x 1024 unit vectors."""
        return F.normalize(self.audio_fc(self.audio_cnn(mfcc).flatten(1)), dim=1)

    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """faces: B x 3 x 5 x 224 x 224 (BGR, 0..255) -> B x 1024 unit vectors."""
        return F.normalize(self.lip_fc(self.lip_cnn(faces).flatten(1)), dim=1)


def public_state_dict(loaded: dict, path: str | os.PathLike = "syncnet_v2.model"
                      ) -> OrderedDict:
    """syncnet_python's state dict (keys `netcnnaud.0.weight`, ...; also under a `__S__.` or
    `module.` prefix) renamed to PublicSyncNet's keys."""
    if not isinstance(loaded, dict):
        raise InputError(path, f"not a state dict ({type(loaded).__name__})")
    renamed = OrderedDict()
    for key, value in loaded.items():
        for prefix in ("module.", "__S__."):
            key = key.removeprefix(prefix)
        head, _, rest = key.partition(".")
        if head not in PUBLIC_KEY_MAP:
            raise InputError(path, f"unexpected key {key!r}: not syncnet_python's SyncNet "
                                   f"(expected {', '.join(PUBLIC_KEY_MAP)})")
        renamed[f"{PUBLIC_KEY_MAP[head]}.{rest}"] = value
    return renamed


def load_public(path: str | os.PathLike, device: torch.device | str = "cpu") -> PublicSyncNet:
    """PublicSyncNet (eval mode) with syncnet_python's weights from `path` (syncnet_v2.model)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "public SyncNet weights not found (evaluate.lse_public.weights; "
                               "syncnet_python's syncnet_v2.model)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign files
        raise InputError(path, f"not a readable torch state dict ({error})") from None
    state = public_state_dict(loaded, path)
    network = PublicSyncNet(embedding=int(state["audio_fc.3.weight"].shape[0])
                            if "audio_fc.3.weight" in state else 1024)
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise InputError(path, f"weights do not fit syncnet_python's SyncNet: {error}") from None
    return network.to(device).eval()


__all__ = ["DEFAULTS", "OPTIONS", "PublicSyncNet", "SyncExpert", "build", "count_parameters",
           "face_windows", "load_expert", "load_public", "mel_window", "public_state_dict"]
