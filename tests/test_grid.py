"""Downloading a GRID speaker from a local server laid out like the official host and the mirror."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest
from test_download import ArchiveServer  # the local HTTP server with Range support

from lipsync.core.errors import InputError
from lipsync.data import download, grid
from lipsync.data.manifest import read_manifest

CLIPS = ["bbaf2n", "lgaz8p", "swwp2s"]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _video(clip: str) -> bytes:
    return f"not really MPEG, clip {clip}".encode() * 50


def _align(clip: str) -> bytes:
    return f"0 20000 sil\n20000 55000 {clip}\n55000 75000 sil\n".encode()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)
    archive_server = ArchiveServer()
    # the official host: /gridcorpus/s1/video/s1.mpg_vcd.zip, /align/s1.tar, /audio/s1_50kHz.tar
    archive_server.files["/gridcorpus/s1/video/s1.mpg_vcd.zip"] = _zip(
        {f"s1/{c}.mpg": _video(c) for c in CLIPS})
    archive_server.files["/gridcorpus/s1/align/s1.tar"] = _tar(
        {f"align/{c}.align": _align(c) for c in CLIPS})
    archive_server.files["/gridcorpus/s1/audio/s1_50kHz.tar"] = _tar(
        {f"s1/{c}.wav": b"RIFF" + c.encode() for c in CLIPS})
    # the Zenodo mirror: /mirror/s1.zip, /mirror/alignments.zip (all speakers in one zip)
    archive_server.files["/mirror/s1.zip"] = _zip({f"s1/{c}.mpg": _video(c) for c in CLIPS})
    archive_server.files["/mirror/alignments.zip"] = _zip(
        {f"alignments/{s}/{c}.align": _align(c) for s in ("s1", "s2") for c in CLIPS[:2]})
    archive_server.thread.start()
    yield archive_server
    archive_server.httpd.shutdown()
    archive_server.httpd.server_close()


def _official(server, tmp_path, **options):
    manifest = tmp_path / "manifests" / "s1.tsv"
    grid.download_speaker("s1", tmp_path / "corpus", manifest,
                          base_url=server.url("/gridcorpus"), **options)
    return read_manifest(manifest)


def test_official_host_download_is_unpacked_and_listed(server, tmp_path):
    entries = _official(server, tmp_path)
    corpus = tmp_path / "corpus"
    assert [e.clip for e in entries] == CLIPS
    for entry in entries:
        assert entry.video == str(corpus / "s1" / "video" / f"{entry.clip}.mpg")
        assert open(entry.video, "rb").read() == _video(entry.clip)
        assert entry.align == str(corpus / "s1" / "align" / f"{entry.clip}.align")
        assert entry.audio is None  # the track inside the video
    record = json.loads((corpus / "s1" / "downloads.json").read_text())["archives"]
    assert set(record) == {"s1.mpg_vcd.zip", "s1.tar"}
    zipped = server.files["/gridcorpus/s1/video/s1.mpg_vcd.zip"]
    assert record["s1.mpg_vcd.zip"]["size"] == len(zipped)


def test_wav50k_audio_is_fetched_and_listed(server, tmp_path):
    entries = _official(server, tmp_path, audio="wav50k")
    assert [e.audio for e in entries] == [
        str(tmp_path / "corpus" / "s1" / "audio" / f"{c}.wav") for c in CLIPS]


def test_mirror_download_unpacks_only_this_speakers_alignments(server, tmp_path):
    manifest = tmp_path / "s1.tsv"
    grid.download_speaker("s1", tmp_path / "corpus", manifest, base_url=server.url("/gridcorpus"),
                          mirror_url=server.url("/mirror"), max_clips_per_speaker=2)
    entries = read_manifest(manifest)
    corpus = tmp_path / "corpus"
    assert [(e.video, e.align) for e in entries] == [
        (str(corpus / "s1" / f"{c}.mpg"), str(corpus / "alignments" / "s1" / f"{c}.align"))
        for c in CLIPS[:2]]
    assert not (corpus / "alignments" / "s2").exists()
    assert not any(path.startswith("/gridcorpus") for path, _, _ in server.requests)


def test_mirror_clip_without_alignment_gets_an_empty_align(server, tmp_path):
    manifest = tmp_path / "s1.tsv"
    grid.download_speaker("s1", tmp_path / "corpus", manifest, mirror_url=server.url("/mirror"))
    assert [e.align is None for e in read_manifest(manifest)] == [False, False, True]


def test_a_rerun_with_intact_archives_downloads_nothing(server, tmp_path):
    first = _official(server, tmp_path)
    requests = len(server.requests)
    assert _official(server, tmp_path) == first
    assert len(server.requests) == requests


def test_a_corrupt_archive_on_disk_is_fetched_again(server, tmp_path):
    first = _official(server, tmp_path)
    archive = tmp_path / "corpus" / "s1" / "downloads" / "s1.tar"
    archive.write_bytes(b"garbage" * 100)
    assert _official(server, tmp_path) == first
    assert len(server.requests_for("/gridcorpus/s1/align/s1.tar")) == 2
    assert archive.read_bytes() == server.files["/gridcorpus/s1/align/s1.tar"]


def test_an_archive_corrupt_on_the_server_is_refetched_once_then_reported(server, tmp_path):
    server.files["/gridcorpus/s1/video/s1.mpg_vcd.zip"] = b"PK\x03\x04 truncated zip"
    with pytest.raises(InputError, match="not a valid zip") as error:
        _official(server, tmp_path)
    path = tmp_path / "corpus" / "s1" / "downloads" / "s1.mpg_vcd.zip"
    assert error.value.path == str(path)
    assert len(server.requests_for("/gridcorpus/s1/video/s1.mpg_vcd.zip")) == 2
    assert not path.exists()


def test_an_archive_that_changed_since_it_was_recorded_is_a_sha256_error(server, tmp_path):
    _official(server, tmp_path)
    archive = tmp_path / "corpus" / "s1" / "downloads" / "s1.tar"
    archive.write_bytes(b"damaged")
    server.files["/gridcorpus/s1/align/s1.tar"] = _tar({"align/other.align": b"0 1 sil\n"})
    with pytest.raises(InputError, match="sha256 mismatch") as error:
        _official(server, tmp_path)
    assert error.value.path == str(archive)


def test_speaker_21_is_left_out_with_an_empty_manifest(server, tmp_path, caplog):
    manifest = tmp_path / "s21.tsv"
    grid.download_speaker("s21", tmp_path / "corpus", manifest, base_url=server.url("/gridcorpus"))
    assert manifest.read_text().strip() == "speaker\tclip\tvideo\taudio\talign"
    assert read_manifest(manifest) == []
    assert server.requests == []
    assert "s21 has no video" in caplog.text


def test_an_archive_member_escaping_the_folder_is_refused(server, tmp_path):
    server.files["/mirror/s1.zip"] = _zip({"s1/bbaf2n.mpg": b"x", "../../evil.mpg": b"x"})
    with pytest.raises(InputError, match="unsafe member path"):
        grid.download_speaker("s1", tmp_path / "corpus", tmp_path / "s1.tsv",
                              mirror_url=server.url("/mirror"))
    assert not list(tmp_path.rglob("evil.mpg"))


def test_a_tar_with_a_symlink_is_refused(server, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("align/bbaf2n.align")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    server.files["/gridcorpus/s1/align/s1.tar"] = buffer.getvalue()
    with pytest.raises(InputError, match="link or special file"):
        _official(server, tmp_path)
