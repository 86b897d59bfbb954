"""`lipsync dub` on real GRID clips: durations, frame rates, the audio track, which pixels change,
photos, other frame rates, and inputs it cannot use (no face, unreadable audio)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from lipsync import cli
from lipsync.core.errors import InputError, LipsyncError
from lipsync.data import decode, detectors
from lipsync.data import faces as face_tracks
from lipsync.tools import dub
from lipsync.tools.media import write_video

# Detecting on every 5th frame (boxes interpolated between) keeps these tests quick on 2 cores.
FAST = {"faces": {"detect_every": 5}}
LOSSLESS = {**FAST, "dub": {"encode": {"lossless": True}}}


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A tiny LipGAN generator with random weights, in the file format training writes."""
    from lipsync.models import registry
    from lipsync.training.loop import export_generator

    torch.manual_seed(0)
    torch.set_num_threads(1)
    options = registry.resolve_options("lipgan", {"width": 0.125})
    path = tmp_path_factory.mktemp("generator") / "generator.pt"
    export_generator(path, registry.build("lipgan", options).generator, "lipgan", options, {}, 0, 0)
    return path


@pytest.fixture(scope="module")
def clip(grid_samples):
    frames, fps = decode.read_video(grid_samples / "bbaf2n.mpg")
    return frames, fps


def read_back(path):
    """(frame count, fps, has an audio stream, frames) as PyAV reads the file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        has_audio = bool(container.streams.audio)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return len(frames), fps, has_audio, frames


def no_leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_dubbed_clip_lasts_as_long_as_the_other_clips_audio(generator, grid_samples, tmp_path):
    output = tmp_path / "dubbed.mp4"
    record = dub.dub(generator, grid_samples / "bbaf2n.mpg", grid_samples / "brbk7n.mpg", output,
                     options=FAST)
    count, fps, has_audio, _ = read_back(output)
    audio_seconds = len(decode.read_audio(grid_samples / "brbk7n.mpg", 16000)) / 16000
    assert fps == 25 and has_audio
    assert abs(count / fps - audio_seconds) <= 1 / fps
    assert record["encode"]["codec"] == "libx264" and record["encode"]["pixel_format"] == "yuv420p"
    sidecar = json.loads(output.with_suffix(".json").read_text())
    assert sidecar["coverage"]["output_frames_passed_through"] == 0
    assert set(sidecar["timings"]["seconds"]) >= {"decode", "detect", "generate", "blend",
                                                  "encode"}
    assert sidecar["generator"] == str(generator) and sidecar["model"] == "lipgan"


def test_only_the_lower_half_of_the_face_box_changes(generator, grid_samples, clip, tmp_path):
    frames, _ = clip
    output = tmp_path / "dubbed.mp4"
    dub.dub(generator, grid_samples / "bbaf2n.mpg", grid_samples / "swwp2s.mpg", output,
            options=LOSSLESS)
    count, _, _, made = read_back(output)
    faces = dub.resolve_options(LOSSLESS)["faces"]
    boxes = face_tracks.face_track(frames, detectors.build(faces), faces).boxes
    changed_inside, outside_equal, upper_equal = [], [], []
    for k in range(count):
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[k])
        inside = np.zeros(frames.shape[1:3], bool)
        inside[y0:y1, x0:x1] = True
        difference = np.abs(made[k].astype(int) - frames[k].astype(int)).max(axis=2)
        outside_equal.append(difference[~inside].max() == 0)
        middle = y0 + int(0.4 * (y1 - y0))  # above the blend mask's ramp (0.5 - 0.15 / 2)
        upper_equal.append(difference[y0:middle, x0:x1].max() == 0)
        changed_inside.append(difference[(y0 + y1) // 2 + 5:y1 - 5, x0 + 10:x1 - 10].mean())
    assert all(outside_equal) and all(upper_equal)
    assert min(changed_inside) > 5  # random weights: the mouth region is replaced


def test_a_photo_is_looped_for_the_whole_audio(generator, grid_samples, clip, tmp_path):
    frames, _ = clip
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), cv2.cvtColor(frames[10], cv2.COLOR_RGB2BGR))
    output = tmp_path / "photo.mp4"
    record = dub.dub(generator, photo, grid_samples / "brbk7n.mpg", output, options=FAST)
    count, fps, has_audio, _ = read_back(output)
    assert record["still"] and fps == 25 and has_audio
    assert count == round(record["audio_seconds"] * 25) == record["frames"]


@pytest.mark.parametrize("fps", [30, 15])
def test_other_frame_rates_keep_their_rate_and_the_audios_length(generator, grid_samples, clip,
                                                                 tmp_path, fps):
    frames, source_fps = clip
    # The clip resampled in time: each new frame shows the source frame at its moment.
    times = np.arange(int(len(frames) / source_fps * fps)) / fps
    video = tmp_path / f"face{fps}.mp4"
    write_video(video, frames[np.minimum((times * source_fps).astype(int), len(frames) - 1)], fps,
                None, 44100)
    output = tmp_path / f"dubbed{fps}.mp4"
    record = dub.dub(generator, video, grid_samples / "swwp2s.mpg", output, options=FAST)
    count, read_fps, has_audio, _ = read_back(output)
    assert read_fps == fps and has_audio
    assert abs(count / fps - record["audio_seconds"]) <= 1 / fps


def test_a_video_shorter_than_the_audio_plays_back_and_forth():
    assert dub.pingpong(9, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert dub.pingpong(3, 10).tolist() == [0, 1, 2]  # longer: cut
    assert dub.pingpong(3, 1).tolist() == [0, 0, 0]  # a photo


def test_frames_without_a_face_pass_through_unchanged_and_are_counted(generator, grid_samples,
                                                                      clip, tmp_path):
    frames, _ = clip
    mixed = frames[:50].copy()
    mixed[30:] = 128  # no face in the last 20 frames
    video = tmp_path / "mixed.mp4"
    write_video(video, mixed, 25, None, 44100, options={"lossless": True})
    output = tmp_path / "dubbed.mp4"
    # Detection on every frame here, so exactly the blank frames have no face.
    record = dub.dub(generator, video, grid_samples / "brbk7n.mpg", output,
                     options={"dub": LOSSLESS["dub"]})
    _, _, _, made = read_back(output)
    source = dub.pingpong(record["frames"], len(mixed))
    blank = source >= 30
    assert record["coverage"]["output_frames_passed_through"] == int(blank.sum()) > 0
    assert all(np.array_equal(made[k], mixed[source[k]]) for k in np.flatnonzero(blank))


def test_a_video_without_any_face_is_an_error_and_writes_nothing(generator, grid_samples,
                                                                 tmp_path):
    video = tmp_path / "empty.mp4"
    write_video(video, np.full((10, 96, 128, 3), 90, np.uint8), 25, None, 44100)
    output = tmp_path / "out" / "dubbed.mp4"
    output.parent.mkdir()
    with pytest.raises(InputError, match="no face found"):
        dub.dub(generator, video, grid_samples / "brbk7n.mpg", output)
    assert list(output.parent.iterdir()) == []


def test_unreadable_audio_is_an_error_naming_the_file_and_writes_nothing(generator, grid_samples,
                                                                         tmp_path):
    audio = tmp_path / "speech.wav"
    audio.write_text("not audio\n")
    output = tmp_path / "out" / "dubbed.mp4"
    output.parent.mkdir()
    with pytest.raises(InputError, match="speech.wav"):
        dub.dub(generator, grid_samples / "bbaf2n.mpg", audio, output)
    assert list(output.parent.iterdir()) == []


def test_command_line_dubs_with_the_identity_copy_and_writes_a_strip(grid_samples, tmp_path):
    output = tmp_path / "identity.mp4"
    code = cli.main(["dub", "--generator", "identity", "--face", str(grid_samples / "bbaf2n.mpg"),
                     "--audio", str(grid_samples / "bbaf2n.mpg"), "--output", str(output),
                     "--strip", str(tmp_path / "strip.png"),
                     "--options", json.dumps({**FAST, "dub": {"batch_size": 8}})])
    assert code == 0
    assert json.loads((tmp_path / "identity.json").read_text())["model"] == "identity"
    strip = cv2.imread(str(tmp_path / "strip.png"))
    assert strip is not None and strip.shape[0] > 2 * 144


def test_unknown_dub_option_is_refused_with_its_name(grid_samples, tmp_path):
    code = cli.main(["dub", "--generator", "identity", "--face", str(grid_samples / "bbaf2n.mpg"),
                     "--audio", str(grid_samples / "bbaf2n.mpg"),
                     "--output", str(tmp_path / "x.mp4"),
                     "--options", json.dumps({"dub": {"feathr": 0.2}})])
    assert code == 1 and not (tmp_path / "x.mp4").exists()


def test_a_corpus_manifest_row_names_a_clip_to_dub(tmp_path):
    from lipsync.data.manifest import ClipEntry, write_manifest

    manifest = tmp_path / "s1.tsv"
    write_manifest(manifest, [ClipEntry("s1", "bbaf2n", "/c/bbaf2n.mpg", None, None),
                              ClipEntry("s1", "bbal7s", "/c/bbal7s.mpg", "/c/bbal7s.wav", None)])
    assert dub.media_path(f"{manifest}:0") == Path("/c/bbaf2n.mpg")
    assert dub.media_path(f"{manifest}:1", audio=True) == Path("/c/bbal7s.wav")
    assert dub.media_path("/videos/face.mp4") == Path("/videos/face.mp4")
    with pytest.raises(InputError, match="has 2 clips, no clip 5"):
        dub.media_path(f"{manifest}:5")


def write_audio(path, samples: np.ndarray, sample_rate: int, codec: str) -> None:
    """An audio-only file (wav, mp3, m4a) of mono float samples, written with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono",
                                      rate=sample_rate, frame_size=stream.frame_size or 1024)
        frame = av.AudioFrame.from_ndarray(samples[None].astype(np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = sample_rate
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.mark.parametrize("suffix,codec", [(".wav", "pcm_s16le"), (".mp3", "libmp3lame"),
                                          (".m4a", "aac")])
def test_wav_mp3_and_m4a_audio_drive_an_odd_sized_photo(grid_samples, clip, tmp_path, suffix,
                                                        codec):
    frames, _ = clip
    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(frames[5, :287, :359], cv2.COLOR_RGB2BGR))
    speech = decode.read_audio(grid_samples / "brbk7n.mpg", 44100)
    audio = tmp_path / f"speech{suffix}"
    write_audio(audio, speech, 44100, codec)
    output = tmp_path / "dubbed.mp4"
    record = dub.dub("identity", photo, audio, output, options=FAST)
    count, fps, has_audio, made = read_back(output)
    assert has_audio and abs(count / fps - record["audio_seconds"]) <= 1 / fps
    assert abs(record["audio_seconds"] - len(speech) / 44100) < 0.1  # mp3/aac pad a little
    assert made.shape[1:3] == (288, 360)  # yuv420p needs even sizes: one edge row/column added
    assert record["coverage"]["output_frames_dubbed"] == count


@pytest.fixture
def no_decoding(monkeypatch):
    """Every media file is opened through decode._open: opening one fails the test."""
    def refuse(path):
        raise AssertionError(f"{path} was opened before the arguments were checked")

    monkeypatch.setattr(decode, "_open", refuse)


def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("link", ["same path", "symlink", "hard link"])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(grid_samples, tmp_path, link,
                                                                  no_decoding):
    # An .mp4 face (the real clip's bytes): a suffix dub writes, so only the file is the problem.
    face = tmp_path / "face.mp4"
    face.write_bytes((grid_samples / "bbaf2n.mpg").read_bytes())
    before = sha256(face)
    output = {"same path": face, "symlink": tmp_path / "link.mp4",
              "hard link": tmp_path / "hard.mp4"}[link]
    if link == "symlink":
        output.symlink_to(face)
    elif link == "hard link":
        output.hardlink_to(face)
    with pytest.raises(LipsyncError, match="refusing to overwrite an input"):
        dub.dub("identity", face, face, output)
    assert sha256(face) == before
    code = cli.main(["dub", "--generator", "identity", "--face", str(face), "--audio",
                     str(grid_samples / "brbk7n.mpg"), "--output", str(output)])
    assert code == 1 and sha256(face) == before


@pytest.mark.parametrize("options,output,named", [
    ({"dub": {"batch_size": 0}}, "out.mp4", "dub.batch_size"),
    ({"dub": {"still_fps": 0}}, "out.mp4", "dub.still_fps"),
    ({"dub": {"encode": {"crf": "abc"}}}, "out.mp4", "dub.encode.crf"),
    ({"dub": {"encode": {"preset": "fastest"}}}, "out.mp4", "dub.encode.preset"),
    ({"dub": {"feather": -1}}, "out.mp4", "dub.feather"),
    ({"dub": {"device": "cuda:99"}}, "out.mp4", "dub.device"),
    ({"dub": {"device": "gpu"}}, "out.mp4", "dub.device"),
    ({"faces": {"image_size": 0}}, "out.mp4", "faces.image_size"),
    ({}, "out.avi", "'.avi'"),
    ({}, "out", "suffix-less"),
])
def test_bad_options_and_outputs_are_refused_by_name_before_any_decode(
        grid_samples, tmp_path, no_decoding, options, output, named):
    with pytest.raises(LipsyncError, match=named.replace(".", r"\.")):
        dub.dub("identity", grid_samples / "bbaf2n.mpg", grid_samples / "brbk7n.mpg",
                tmp_path / output, options=options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_any_decode(grid_samples, tmp_path,
                                                                   no_decoding):
    with pytest.raises(LipsyncError, match="dub.device: 'cuda': this machine has no CUDA"):
        dub.dub("identity", grid_samples / "bbaf2n.mpg", grid_samples / "brbk7n.mpg",
                tmp_path / "out.mp4", options={"dub": {"device": "cuda"}})


def test_a_missing_generator_file_is_refused_before_any_decode(grid_samples, tmp_path,
                                                               no_decoding):
    with pytest.raises(InputError, match="generator.pt.*--generator: file does not exist"):
        dub.dub(tmp_path / "generator.pt", grid_samples / "bbaf2n.mpg",
                grid_samples / "brbk7n.mpg", tmp_path / "out.mp4")


def test_silent_or_very_short_audio_and_odd_frame_sizes_are_warned_and_recorded(
        grid_samples, clip, tmp_path):
    frames, _ = clip
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), cv2.cvtColor(frames[5, :287, :359], cv2.COLOR_RGB2BGR))
    silent, short = tmp_path / "silent.wav", tmp_path / "short.wav"
    write_audio(silent, np.zeros(16000, np.float32), 16000, "pcm_s16le")
    speech = decode.read_audio(grid_samples / "brbk7n.mpg", 16000)
    loudest = int(np.argmax(np.abs(speech)))
    write_audio(short, speech[loudest - 400:loudest + 400], 16000, "pcm_s16le")  # 0.05 s
    record = dub.dub("identity", photo, silent, tmp_path / "silent.mp4", options=FAST)
    assert any("audio is silent" in w for w in record["warnings"])
    assert any("359x287" in w and "360x288" in w for w in record["warnings"])
    record = dub.dub("identity", photo, short, tmp_path / "short.mp4", options=FAST)
    assert any("too short to show speech" in w for w in record["warnings"])
    assert not any("audio is silent" in w for w in record["warnings"])
    saved = json.loads((tmp_path / "short.json").read_text())
    assert saved["warnings"] == record["warnings"]


def test_memory_stays_flat_in_the_videos_length(grid_samples, clip, tmp_path):
    """The peak of numpy/Python allocations (tracemalloc: frames, crops, audio; not FFmpeg's own
    buffers) of dubbing 3 s and 9 s of the same face: chunks keep it flat in the video's length.
    32 s at load average 12 on this 2-core machine."""
    import tracemalloc

    from lipsync.data.audio import AUDIO_DEFAULTS, melspectrogram

    frames, fps = clip
    speech = decode.read_audio(grid_samples / "bbaf2n.mpg", 44100)
    melspectrogram(speech[:16000], AUDIO_DEFAULTS)  # librosa's lazy import: not the dub's memory
    peaks = {}
    for seconds in (3, 9):
        shown = dub.pingpong(int(seconds * fps), len(frames))
        face = tmp_path / f"face-{seconds}s.mp4"
        write_video(face, (frames[k] for k in shown), fps,
                    np.tile(speech, 3)[:seconds * 44100], 44100, options={"preset": "ultrafast"})
        tracemalloc.start()
        dub.dub("identity", face, face, tmp_path / f"dubbed-{seconds}s.mp4",
                options={**FAST, "dub": {"batch_size": 8}})
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # Measured: 6.5 MB at 3 s and 8.6 MB at 9 s (the 6 s more audio and its mels: 2.1 MB);
    # holding the frames, as before: 49.7 and 148.6 MB (6 s more of 360x288 is 46 MB of frames,
    # held twice). 10 MB of growth is 5x today's and a tenth of before.
    assert peaks[9] - peaks[3] < 10e6, peaks
