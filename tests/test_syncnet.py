"""The SyncNet experts: the trained expert's shapes and width multiplier, its windows of a packed
split (held-out clips, off-sync pairs), the file its training writes, and the loader of
syncnet_python's public weights checked against that network's own layout on random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lipsync.core.errors import InputError, LipsyncError
from lipsync.experts.sync import dataset, synthetic
from lipsync.experts.sync import train as sync_train
from lipsync.models import syncnet

TINY = {"model": {"width": 0.0625, "embedding": 32},
        "training": {"batch_size": 8, "learning_rate": 1e-3, "validation_fraction": 0.0,
                     "log_every_samples": 16, "checkpoint_every_samples": 24,
                     "num_workers": 0, "progress_bar": False, "device": "cpu"}}


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    """Two short synthetic clips (30 frames, 23 kept crops each), packed."""
    path = tmp_path_factory.mktemp("syncnet") / "full.h5"
    synthetic.write_split(path, speakers=("s1",), clips_per_speaker=2, n_frames=30)
    return path


def test_expert_takes_five_lower_halves_and_sixteen_mel_steps():
    torch.manual_seed(0)
    expert = syncnet.build({"width": 0.125}).eval()
    assert syncnet.mel_window(5) == 16
    faces, mel = torch.rand(3, 15, 48, 96), torch.randn(3, 1, 80, 16)
    assert expert(faces, mel).shape == (3,)
    face_embedding = expert.embed_faces(faces)
    assert face_embedding.shape == (3, 512)
    assert torch.allclose(face_embedding.norm(dim=1), torch.ones(3))
    # the width multiplier is what makes the CPU demo quick: 1.0 is Wav2Lip's size (~15-18 M)
    full, narrow = (syncnet.count_parameters(syncnet.build({"width": w})) for w in (1.0, 0.125))
    assert 14e6 < full < 20e6 and narrow < full / 40


def test_face_windows_stack_consecutive_lower_halves_on_channels():
    crops = torch.zeros(7, 96, 96, 3, dtype=torch.uint8)
    for f in range(7):
        crops[f, 48:] = f * 10  # lower half says which frame it is
        crops[f, :48] = 255  # upper half must not be seen
    windows = syncnet.face_windows(crops, 5)
    assert windows.shape == (3, 15, 48, 96)
    assert torch.allclose(windows[1, ::3, 0, 0] * 255, torch.tensor([10., 20, 30, 40, 50]))


def test_held_out_clips_are_seeded_and_do_not_depend_on_order():
    keys = [("s1", f"c{k:03d}") for k in range(100)]
    held = dataset.held_out_clips(keys, seed=0, fraction=0.05)
    assert len(held) == 5
    assert dataset.held_out_clips(list(reversed(keys)), seed=0, fraction=0.05) == held
    assert dataset.held_out_clips(keys, seed=1, fraction=0.05) != held
    assert len(dataset.held_out_clips(keys[:12], seed=0, fraction=0.05)) == 2  # at least 2


def test_off_sync_pairs_are_at_least_min_offset_frames_away(small_split):
    windows = dataset.SyncWindows(small_split, frames=5, window=16, min_offset=3,
                                  other_clip_fraction=0.0)
    assert len(windows) == 2 * (23 - 4)
    labels = np.array([windows.label(i) for i in range(len(windows))])
    assert 0.25 < labels.mean() < 0.75
    for i in np.flatnonzero(labels == 0):
        clip, offset = windows.items[i]
        shown = windows.index.frames[windows.index.crop_start[clip] + offset]
        audio_clip, audio_frame = windows.audio_frame(i)
        assert audio_clip == clip and abs(audio_frame - shown) >= 3
    item = windows[0]
    assert item["faces"].shape == (5, 48, 96, 3) and item["faces"].dtype == torch.uint8
    assert item["mel"].shape == (1, 80, 16)


def test_mel_window_of_a_frame_uses_the_exact_frame_to_step_fraction():
    from fractions import Fraction

    starts = dataset.audio_start(np.arange(11), Fraction(16, 5))
    assert starts.tolist() == [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32]
    # 241 steps (a 3 s clip): frame 70's window ends at step 240, frame 71's would pass the end
    assert dataset.last_audio_frame(241, 16, Fraction(16, 5)) == 70


def test_train_expert_writes_a_self_describing_expert_that_load_expert_reads(small_split,
                                                                             tmp_path):
    # Resume, SIGTERM and NaN stop are the loop's, tested against the expert in test_train.py.
    torch.set_num_threads(1)
    options = {**TINY, "training": {**TINY["training"], "total_samples": 32,
                                    "validation_fraction": 0.5}}
    summary = sync_train.train_expert(small_split, tmp_path / "expert.pt", options=options)
    assert summary["samples"] == 32 and summary["held_out_clips"] == 1  # of 2 clips
    assert (tmp_path / "expert" / "log.jsonl").read_text().count("\n") >= 2
    expert, info = syncnet.load_expert(tmp_path / "expert.pt")
    assert info["kind"] == "syncnet" and info["model_options"]["width"] == 0.0625
    assert not expert.training and info["samples"] == 32
    assert set(info["validation"]) >= {"accuracy", "in_sync_accuracy", "off_sync_accuracy",
                                       "auc"}
    assert len(info["held_out_clips"]) == 1 and info["train_set"] == str(small_split)
    assert info["config"]["learning_rate"] == 1e-3  # the expert's own settings are recorded
    with pytest.raises(InputError, match="holds no expert network"):
        syncnet.load_expert(_generator_file(tmp_path))  # one format, but not an expert


def _generator_file(folder):
    from lipsync.models import registry
    from lipsync.training.loop import export_generator

    pair = registry.build("lipgan", {"width": 0.0625})
    return export_generator(folder / "generator.pt", pair.generator, "lipgan", pair.options,
                            {}, 0, 0)


def test_changed_training_settings_set_old_checkpoints_aside(small_split, tmp_path):
    out = tmp_path / "expert.pt"
    sync_train.train_expert(small_split, out, options={
        **TINY, "training": {**TINY["training"], "total_samples": 8}})
    changed = {**TINY, "training": {**TINY["training"], "total_samples": 8, "seed": 1}}
    assert sync_train.train_expert(small_split, out, options=changed)["resumed_from"] is None
    assert list(tmp_path.glob("expert/checkpoints.stale-*"))


def test_unknown_training_option_is_refused_naming_it(small_split, tmp_path):
    with pytest.raises(LipsyncError, match=r"syncnet\.training.*learning_rat\b"):
        sync_train.train_expert(small_split, tmp_path / "e.pt",
                                options={"training": {"learning_rat": 1}})
    with pytest.raises(InputError, match="training set not found"):
        sync_train.train_expert(tmp_path / "missing.h5", tmp_path / "e.pt")


# --- syncnet_python's network, written out here with its own module names --------------------


class SyncNetPythonS(nn.Module):
    """syncnet_python's SyncNetModel.S as published (attribute names and layer order), to check
    the loader against; forward_aud / forward_lip return its raw (unnormalised) embeddings."""

    def __init__(self):
        super().__init__()

        def block(conv, n, three_d=False):
            return [conv, nn.BatchNorm3d(n) if three_d else nn.BatchNorm2d(n), nn.ReLU()]

        self.netcnnaud = nn.Sequential(
            *block(nn.Conv2d(1, 64, (3, 3), (1, 1), (1, 1)), 64),
            nn.MaxPool2d((1, 1), (1, 1)),
            *block(nn.Conv2d(64, 192, (3, 3), (1, 1), (1, 1)), 192),
            nn.MaxPool2d((3, 3), (1, 2)),
            *block(nn.Conv2d(192, 384, (3, 3), padding=(1, 1)), 384),
            *block(nn.Conv2d(384, 256, (3, 3), padding=(1, 1)), 256),
            *block(nn.Conv2d(256, 256, (3, 3), padding=(1, 1)), 256),
            nn.MaxPool2d((3, 3), (2, 2)),
            *block(nn.Conv2d(256, 512, (5, 4), padding=(0, 0)), 512))
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, 1024))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, 1024))
        self.netcnnlip = nn.Sequential(
            *block(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), 96, True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *block(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, True),
            *block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, True),
            *block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *block(nn.Conv3d(256, 512, (1, 6, 6), padding=0), 512, True))

    def forward_aud(self, x):
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x):
        return self.netfclip(self.netcnnlip(x).flatten(1))


def _randomised(network: nn.Module) -> nn.Module:
    for module in network.modules():  # BatchNorm statistics too, so eval mode is not trivial
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return network.eval()


def test_public_weights_load_into_the_syncnet_python_architecture(tmp_path):
    torch.manual_seed(0)
    theirs = _randomised(SyncNetPythonS())
    path = tmp_path / "syncnet_v2.model"
    torch.save(theirs.state_dict(), path)
    ours = syncnet.load_public(path)
    mfcc = torch.randn(2, 1, 13, 20)
    faces = torch.rand(2, 3, 5, 224, 224) * 255
    with torch.no_grad():
        expected_audio = nn.functional.normalize(theirs.forward_aud(mfcc), dim=1)
        expected_lips = nn.functional.normalize(theirs.forward_lip(faces), dim=1)
        assert torch.allclose(ours.embed_audio(mfcc), expected_audio, atol=1e-5)
        assert torch.allclose(ours.embed_faces(faces), expected_lips, atol=1e-5)


def test_public_weights_of_another_network_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "other.model"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(InputError, match=r"other\.model.*unexpected key 'conv1\.weight'"):
        syncnet.load_public(path)
    with pytest.raises(InputError, match="not found"):
        syncnet.load_public(tmp_path / "absent.model")
