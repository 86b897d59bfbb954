"""The synthetic demo corpus: GRID's file format, grammar and alignment, a detectable face, a mouth
that moves with the sound, and the same bytes for the same seed."""

from __future__ import annotations

import re

import av
import cv2
import numpy as np
import pytest

from lipsync.core.errors import LipsyncError
from lipsync.data import local, synthetic
from lipsync.data.manifest import read_manifest

GRID_NAME = re.compile(r"^[blps][bgrw][abiw][a-vx-z][0-9z][anps]$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.make_speaker("s1", root, root / "s1.tsv", seed=0, clips_per_speaker=3)
    synthetic.make_speaker("s2", root, root / "s2.tsv", seed=0, clips_per_speaker=1)
    return root


def _decode(path):
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        info = {"format": container.format.name, "video_codec": video.codec_context.name,
                "size": (video.width, video.height), "fps": video.average_rate,
                "audio_codec": sound.codec_context.name, "sample_rate": sound.rate}
        frames, chunks = [], []
        for frame in container.decode(video=0, audio=0):
            if isinstance(frame, av.VideoFrame):
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                samples = frame.to_ndarray().astype(np.float64)
                if not frame.format.is_planar:
                    samples = samples.reshape(-1, len(frame.layout.channels)).T
                chunks.append(samples.mean(axis=0))
    return info, np.stack(frames), np.concatenate(chunks)


def _faces(frame):
    haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(60, 60))


def test_clips_are_mpeg1_program_streams_with_an_mp2_track(corpus):
    info, frames, audio = _decode(next((corpus / "s1").glob("*.mpg")))
    assert info["format"].startswith("mpeg")
    assert info["video_codec"] == "mpeg1video" and info["size"] == (360, 288)
    assert info["fps"] == 25 and len(frames) == 75
    assert info["audio_codec"] == "mp2" and info["sample_rate"] == 44100
    assert abs(len(audio) / 44100 - 3.0) < 0.1


def test_names_follow_the_grid_grammar_and_the_manifest_lists_them(corpus):
    entries = read_manifest(corpus / "s1.tsv")
    assert len(entries) == 3
    for entry in entries:
        assert GRID_NAME.match(entry.clip), entry.clip
        assert synthetic.clip_name(synthetic.clip_words(entry.clip)) == entry.clip
        assert entry.align == str(corpus / "alignments" / "s1" / f"{entry.clip}.align")
    assert entries == local.find_clips("s1", corpus)
    assert synthetic.clip_words("bbaf2n") == ["bin", "blue", "at", "f", "two", "now"]
    assert synthetic.clip_words("sgiz0p")[4] == "zero"


def test_alignments_are_grid_word_spans_with_silence_at_both_ends(corpus):
    for entry in read_manifest(corpus / "s1.tsv"):
        lines = [line.split() for line in open(entry.align).read().splitlines()]
        starts, ends = [int(a) for a, _, _ in lines], [int(b) for _, b, _ in lines]
        words = [w for _, _, w in lines]
        assert words == ["sil", *synthetic.clip_words(entry.clip), "sil"]
        assert starts[0] == 0 and ends[-1] == 75_000  # 1000 units per video frame
        assert starts[1:] == ends[:-1] and all(b > a for a, b in zip(starts, ends, strict=True))


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_clips(corpus, tmp_path):
    synthetic.make_speaker("s2", tmp_path / "same", tmp_path / "same.tsv", seed=0,
                           clips_per_speaker=1)
    [original], [again] = read_manifest(corpus / "s2.tsv"), read_manifest(tmp_path / "same.tsv")
    assert again.clip == original.clip
    assert open(again.video, "rb").read() == open(original.video, "rb").read()
    assert open(again.align).read() == open(original.align).read()
    synthetic.make_speaker("s2", tmp_path / "other", tmp_path / "other.tsv", seed=1,
                           clips_per_speaker=1)
    [other] = read_manifest(tmp_path / "other.tsv")
    assert open(other.video, "rb").read() != open(original.video, "rb").read()


def test_speakers_look_and_sound_different():
    first, second = synthetic.speaker_style("s1"), synthetic.speaker_style("s2")
    assert first != second
    assert first.background_top != second.background_top and first.f0_hz != second.f0_hz


@pytest.mark.parametrize("speaker", ["s1", "s2"])
def test_opencv_haar_finds_the_face_in_every_frame(corpus, speaker):
    for entry in read_manifest(corpus / f"{speaker}.tsv")[:2]:
        _, frames, _ = _decode(entry.video)
        missed = [i for i, frame in enumerate(frames) if len(_faces(frame)) == 0]
        assert missed == [], f"{entry.clip}: no face in frames {missed}"


def test_mouth_opening_follows_the_audio_envelope(corpus):
    entry = read_manifest(corpus / "s1.tsv")[0]
    _, frames, audio = _decode(entry.video)
    dark_mouth, loudness = [], []
    per_frame = 44100 // 25
    for index, frame in enumerate(frames):
        x, y, w, h = max(_faces(frame), key=lambda box: box[2] * box[3])
        mouth = frame[y + int(0.7 * h):y + h, x + w // 4:x + 3 * w // 4]
        dark_mouth.append(np.count_nonzero(mouth.max(axis=2) < 80))  # the open mouth's cavity
        window = audio[index * per_frame:(index + 1) * per_frame]
        loudness.append(np.sqrt(np.mean(window ** 2)) if len(window) else 0.0)
    correlation = np.corrcoef(dark_mouth, loudness)[0, 1]
    print(f"mouth-audio correlation {correlation:.3f}")
    assert correlation > 0.85, correlation
    quiet = np.array(loudness) < 0.1 * max(loudness)
    assert np.mean(np.array(dark_mouth)[quiet]) < 0.2 * max(dark_mouth)  # closed in silence


def test_a_rerun_with_fewer_clips_removes_the_surplus(tmp_path):
    synthetic.make_speaker("s3", tmp_path, tmp_path / "s3.tsv", clips_per_speaker=2,
                           frames_per_clip=25)
    synthetic.make_speaker("s3", tmp_path, tmp_path / "s3.tsv", clips_per_speaker=1,
                           frames_per_clip=25)
    assert len(read_manifest(tmp_path / "s3.tsv")) == 1
    assert len(list((tmp_path / "s3").glob("*.mpg"))) == 1
    assert len(list((tmp_path / "alignments" / "s3").glob("*.align"))) == 1


def test_an_unknown_face_or_a_grammar_violation_is_an_error(tmp_path):
    with pytest.raises(LipsyncError, match="unknown synthetic face"):
        synthetic.make_speaker("s1", tmp_path, tmp_path / "m.tsv", faces=["mona_lisa"])
    with pytest.raises(LipsyncError, match="GRID grammar"):
        synthetic.clip_words("bbawzn")
