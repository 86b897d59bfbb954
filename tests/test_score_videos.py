"""`lipsync score-videos` on real GRID clips: a folder against itself, against identity-dubbed
copies, against a copy at another frame rate, and with videos it cannot score."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import EVALUATE_OPTIONS
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lipsync import cli
from lipsync.core.errors import LipsyncError
from lipsync.data import decode, detectors
from lipsync.data import faces as face_tracks
from lipsync.tools import dub
from lipsync.tools.media import write_video
from lipsync.tools.score_videos import score_videos

CLIPS = ("bbaf2n", "brbk7n")
# Detection on every 5th frame keeps these quick on 2 cores; both sides use the same options.
FACES = {"detect_every": 5}
PIXELS = {"faces": FACES, "evaluate": {"metrics": ["ssim", "psnr"]}}


@pytest.fixture(scope="module")
def reference(grid_samples, tmp_path_factory):
    """A folder of real GRID clips (links, the clips stay in ../shared)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("reference")
    for name in CLIPS:
        (folder / f"{name}.mpg").symlink_to(grid_samples / f"{name}.mpg")
    return folder


def test_a_folder_against_itself_scores_ssim_1_and_infinite_psnr_with_every_metric(
        reference, tmp_path):
    summary = score_videos(reference, reference, tmp_path / "self",
                           options={"faces": FACES, "evaluate": EVALUATE_OPTIONS}, run="self")
    scores = pd.read_csv(tmp_path / "self" / "scores.tsv", sep="\t")
    assert len(scores) == 2 * 75 and sorted(scores["clip"].unique()) == list(CLIPS)
    assert (scores["ssim"] == 1).all() and np.isinf(scores["psnr"]).all()
    assert sorted(summary["metrics"]) == ["fid", "kid", "psnr", "ssim"]
    assert all(m["failed"] is None for m in summary["metrics"].values())
    assert summary["run"] == "self" and [v["status"] for v in summary["videos"]] == ["ok", "ok"]
    clips = pd.read_csv(tmp_path / "self" / "clips.tsv", sep="\t")
    assert clips["frames"].tolist() == [75, 75]


def test_identity_dubbed_copies_score_as_the_identity_round_trip_on_the_same_frames(
        reference, tmp_path):
    """Identity-dubbed copies in a lossless codec: score-videos' per-frame SSIM and PSNR equal
    those of the dub's round trip computed in memory (the frame's face crop pasted back into its
    box, cropped again, against the original crop), so decoding, time alignment, the HDF5 sets
    and the registry add nothing. H.264's lossy yuv420p would lower both by its own error."""
    generated = tmp_path / "identity"
    generated.mkdir()
    options = {"faces": FACES, "dub": {"encode": {"lossless": True}}}
    for name in CLIPS:
        dub.dub("identity", reference / f"{name}.mpg", reference / f"{name}.mpg",
                generated / f"{name}.mp4", options=options, sidecar=tmp_path / f"{name}.json")
    score_videos(generated, reference, tmp_path / "scored", options=PIXELS)
    scores = pd.read_csv(tmp_path / "scored" / "scores.tsv", sep="\t")
    videos = pd.read_csv(tmp_path / "scored" / "videos.tsv", sep="\t")
    # The audio is 2.978 s: the dubbed copy has 74 frames, the reference 75; the last one is
    # left without a partner, and that is reported.
    assert videos["samples"].tolist() == [74, 74]
    assert videos["reason"].str.contains("aligned by time").all()

    faces = dub.resolve_options({"faces": FACES})["faces"]
    detector = detectors.build(faces)
    for name in CLIPS:
        frames, _ = decode.read_video(reference / f"{name}.mpg")
        boxes = face_tracks.face_track(frames, detector, faces).boxes
        crops = face_tracks.crop_faces(frames, boxes, 96)
        rows = scores[scores["clip"] == name]
        for frame in (0, 37, 73):
            pasted = dub.paste_face(frames[frame], crops[frame], boxes[frame],
                                    dub.DUB_DEFAULTS["feather"])
            again = face_tracks.crop_faces(pasted[None], boxes[frame:frame + 1], 96)[0]
            row = rows[rows["frame"] == frame].iloc[0]
            assert row["ssim"] == pytest.approx(structural_similarity(
                again, crops[frame], channel_axis=-1, data_range=255), abs=1e-6)
            assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(
                crops[frame], again, data_range=255), abs=1e-6)
        assert (rows["ssim"] < 1).any() and (rows["ssim"] > 0.9).all()


def test_another_frame_rate_is_aligned_by_time(reference, tmp_path):
    frames, _ = decode.read_video(reference / "bbaf2n.mpg")
    audio = decode.read_audio(reference / "bbaf2n.mpg", 44100)
    generated = tmp_path / "fps30"
    generated.mkdir()
    # The clip at 30 fps: each new frame shows the source frame nearest its moment.
    shown = np.minimum(np.rint(np.arange(90) * 25 / 30).astype(int), len(frames) - 1)
    write_video(generated / "bbaf2n.mp4", frames[shown], 30, audio, 44100,
                options={"lossless": True})
    score_videos(generated, reference, tmp_path / "scored", options=PIXELS)
    scores = pd.read_csv(tmp_path / "scored" / "scores.tsv", sep="\t")
    videos = pd.read_csv(tmp_path / "scored" / "videos.tsv", sep="\t").set_index("video")
    assert videos.loc["bbaf2n", "generated_fps"] == 30
    assert "aligned by time" in videos.loc["bbaf2n", "reason"]
    assert videos.loc["brbk7n", "status"] == "excluded"  # no generated copy
    assert len(scores) == 75 and (scores["ssim"] == 1).all()


def test_videos_without_audio_or_a_face_are_listed_with_the_reason_and_the_rest_scored(
        reference, tmp_path):
    generated = tmp_path / "mixed"
    generated.mkdir()
    (generated / "bbaf2n.mpg").symlink_to(reference / "bbaf2n.mpg")
    frames, _ = decode.read_video(reference / "brbk7n.mpg")
    write_video(generated / "brbk7n.mp4", frames, 25, None, 44100)  # no audio track
    reference_more = tmp_path / "reference"
    reference_more.mkdir()
    for name in CLIPS:
        (reference_more / f"{name}.mpg").symlink_to(reference / f"{name}.mpg")
    (reference_more / "blank.mp4").symlink_to(reference / "bbaf2n.mpg")
    audio = decode.read_audio(reference / "bbaf2n.mpg", 44100)
    write_video(generated / "blank.mp4", np.full((75, 288, 360, 3), 90, np.uint8), 25, audio,
                44100)
    code = cli.main(["score-videos", "--generated", str(generated), "--reference",
                     str(reference_more), "--output", str(tmp_path / "scored"),
                     "--options", json.dumps(PIXELS)])
    assert code == 0
    videos = pd.read_csv(tmp_path / "scored" / "videos.tsv", sep="\t").set_index("video")
    assert videos["status"].to_dict() == {"bbaf2n": "ok", "blank": "excluded",
                                          "brbk7n": "excluded"}
    assert "no face found" in videos.loc["blank", "reason"]
    assert "no audio stream" in videos.loc["brbk7n", "reason"]
    scores = pd.read_csv(tmp_path / "scored" / "scores.tsv", sep="\t")
    assert scores["clip"].unique().tolist() == ["bbaf2n"]
    summary = json.loads((tmp_path / "scored" / "summary.json").read_text())
    assert summary["run"] == "mixed" and len(summary["videos"]) == 3


def test_an_external_system_in_the_config_is_scored_and_read_by_the_tables(tmp_path):
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[1]
    for folder in ("wav2lip", "grid"):
        (tmp_path / folder).mkdir()
    config = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    config.setdefault("evaluate", {})["external"] = {
        "wav2lip": {"generated": str(tmp_path / "wav2lip"), "reference": str(tmp_path / "grid")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/tables/summary.md", "results/dubbed/demo.mp4",
         "-n", "-p", "--cores", "1", "--directory", str(tmp_path), "--snakefile",
         str(repo / "workflow" / "Snakefile"), "--configfile", str(tmp_path / "config.yaml")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "--name external-wav2lip" in result.stdout
    assert "results/metrics/external-wav2lip/summary.json" in result.stdout.split(
        "rule tables:", 1)[1].split("output:", 1)[0]
    assert "dub --generator results/train/lipgan-small/generator.pt" in result.stdout


def test_generated_frames_can_be_cropped_at_their_own_detected_boxes(reference, tmp_path):
    options = {**PIXELS, "videos": {"boxes": "own"}}
    summary = score_videos(reference, reference, tmp_path / "own", options=options)
    scores = pd.read_csv(tmp_path / "own" / "scores.tsv", sep="\t")
    assert (scores["ssim"] == 1).all()  # the same video gives the same detections
    assert summary["preprocessing"]["videos"]["boxes"] == "own"
    with pytest.raises(LipsyncError, match="videos.boxes"):
        score_videos(reference, reference, tmp_path / "bad", options={"videos": {"boxes": "x"}})


def _moved(frames: np.ndarray, how: str) -> np.ndarray:
    """`frames` with their geometry changed as other systems' outputs change it."""
    if how == "cropped":  # centre square, as systems that work on square frames return it
        return frames[:, :, 36:324]
    if how == "padded":  # borders on every side, the aspect ratio kept
        return np.pad(frames, ((0, 0), (16, 16), (20, 20), (0, 0)))
    if how == "rescaled":
        return np.stack([cv2.resize(f, (180, 144), interpolation=cv2.INTER_AREA) for f in frames])
    return np.pad(frames, ((0, 0), (0, 0), (24, 0), (0, 0)))[:, :, :360]  # shifted, same size


@pytest.mark.parametrize("how,boxes", [("cropped", "own"), ("padded", "own"),
                                       ("rescaled", "reference"), ("shifted", "own")])
def test_a_copy_with_other_geometry_is_cropped_where_its_face_is_and_flagged(
        grid_samples, tmp_path, how, boxes):
    """A copy of the reference cropped, padded, rescaled or shifted is a pixel copy of its face:
    the reference's boxes, scaled per axis, cut the wrong region (the centre crop scored SSIM 0.50
    as `ok` with no note); the generated side must be cropped where its face is, and the pair's
    reason says what was done. 25 frames keep it at ~2 s."""
    frames, fps = decode.read_video(grid_samples / "bbaf2n.mpg")
    frames = frames[:25]
    audio = decode.read_audio(grid_samples / "bbaf2n.mpg", 44100)[:44100]
    for folder, video in (("reference", frames), ("generated", _moved(frames, how))):
        write_video(tmp_path / folder / "bbaf2n.mp4", video, fps, audio, 44100,
                    options={"lossless": True})
    score_videos(tmp_path / "generated", tmp_path / "reference", tmp_path / "scored",
                 options=PIXELS)
    videos = pd.read_csv(tmp_path / "scored" / "videos.tsv", sep="\t")
    scores = pd.read_csv(tmp_path / "scored" / "scores.tsv", sep="\t")
    assert videos["status"].tolist() == ["ok"] and videos["boxes"].tolist() == [boxes]
    assert ("rescaled, cropped or padded" if how != "shifted" else "moved") in videos["reason"][0]
    # Measured mean SSIM: cropped 0.931, padded 0.945, rescaled 0.961, shifted 0.887 (at the
    # reference's scaled boxes, as before: 0.50, 0.46, 0.96, 0.22, all `ok` with no reason);
    # 0.8 leaves a margin of 0.08.
    assert scores["ssim"].mean() > 0.8


@pytest.mark.parametrize("options,named", [({"videos": {"mel_window": 0}}, "videos.mel_window"),
                                           ({"faces": {"image_size": 0}}, "faces.image_size"),
                                           ({"videos": {"suffixes": ".mp4"}}, "videos.suffixes")])
def test_bad_options_are_refused_by_name_before_any_decode(reference, tmp_path, monkeypatch,
                                                           options, named):
    monkeypatch.setattr(decode, "_open", lambda path: pytest.fail(f"{path} opened"))
    with pytest.raises(LipsyncError, match=named.replace(".", r"\.")):
        score_videos(reference, reference, tmp_path / "scored", options=options)
    assert not (tmp_path / "scored").exists()


def test_an_output_folder_that_is_an_input_folder_is_refused(reference, tmp_path):
    before = sorted(p.name for p in reference.iterdir())
    with pytest.raises(LipsyncError, match="refusing to overwrite an input"):
        score_videos(reference, tmp_path, reference, options=PIXELS)
    assert sorted(p.name for p in reference.iterdir()) == before


def test_metrics_without_their_weights_are_n_a_without_errors_or_tracebacks(
        grid_samples, tmp_path, monkeypatch, caplog):
    """The default metrics on a machine without the Inception weights or a sync expert: those
    metrics are n/a with the reason, the pixel metrics are scored, and nothing is logged as an
    ERROR (the weights' absence is expected, not a failure to debug)."""
    monkeypatch.chdir(tmp_path)  # the default weight paths (results/weights/...) do not exist
    frames, fps = decode.read_video(grid_samples / "bbaf2n.mpg")
    audio = decode.read_audio(grid_samples / "bbaf2n.mpg", 44100)[:44100]
    write_video(tmp_path / "videos" / "bbaf2n.mp4", frames[:25], fps, audio, 44100,
                options={"lossless": True})
    # The default metrics that need weights, and SSIM (csim and lmd, also defaults, need none
    # and take most of a minute on 2 loaded cores).
    evaluate = {"metrics": ["ssim", "fid", "kid", "lse"]}
    summary = score_videos(tmp_path / "videos", tmp_path / "videos", tmp_path / "scored",
                           options={"faces": FACES, "evaluate": evaluate})
    metrics = summary["metrics"]
    assert metrics["ssim"]["failed"] is None and "weights" in str(metrics["fid"]["failed"])
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert "Traceback" not in caplog.text
