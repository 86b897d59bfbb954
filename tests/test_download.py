"""Resumable verified downloads, against a local HTTP server that can cut transfers and ignore Range."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import threading
from pathlib import Path

import pytest

from lipsync.core.errors import InputError
from lipsync.data import download


class ArchiveServer:
    """In-memory files over HTTP on 127.0.0.1, with Range support and injected faults.

    `cut_after[path] = n` makes the next request for `path` send n bytes of its body and then
    drop the connection; `ignore_range` answers every request with the whole file (200).
    `etags[path]` / `modified[path]` are sent as ETag / Last-Modified; an If-Range naming neither
    gets the whole file (200), as RFC 9110 says, unless `ignore_if_range`.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.ignore_range = False
        self.etags: dict[str, str] = {}
        self.modified: dict[str, str] = {}
        self.ignore_if_range = False
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        self.if_range: list[str | None] = []  # If-Range header of each request
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                requested = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                server.if_range.append(if_range)
                if data is None:
                    server.requests.append((self.path, requested, 404))
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", requested or "")
                status = 200
                current = (server.etags.get(self.path), server.modified.get(self.path))
                if if_range is not None and not server.ignore_if_range and if_range not in current:
                    match = None  # another version than the client holds: send it all
                if match and not server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        server.requests.append((self.path, requested, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                server.requests.append((self.path, requested, status))
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if current[0]:
                    self.send_header("ETag", current[0])
                if current[1]:
                    self.send_header("Last-Modified", current[1])
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = server.cut_after.pop(self.path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def requests_for(self, path: str) -> list[tuple[str, str | None, int]]:
        return [r for r in self.requests if r[0] == path]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)
    archive_server = ArchiveServer()
    archive_server.thread.start()
    yield archive_server
    archive_server.httpd.shutdown()
    archive_server.httpd.server_close()


REPO = Path(__file__).resolve().parents[1]
PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_fetch_writes_the_file_and_returns_its_sha256(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    output = tmp_path / "sub" / "a.zip"
    assert download.fetch(server.url("/a.zip"), output, sha256=PAYLOAD_SHA) == PAYLOAD_SHA
    assert output.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "a.zip.part").exists()


def test_a_transfer_cut_off_midway_is_resumed_with_range(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    server.cut_after["/a.zip"] = 100_000
    output = tmp_path / "a.zip"
    assert download.fetch(server.url("/a.zip"), output) == PAYLOAD_SHA
    assert output.read_bytes() == PAYLOAD
    first, second = server.requests_for("/a.zip")
    assert first == ("/a.zip", None, 200)
    assert second == ("/a.zip", "bytes=100000-", 206)


def left_part(folder, url: str, data: bytes, etag: str | None = None) -> None:
    """A .part and its .validator as an earlier, killed run leaves them."""
    (folder / "a.zip.part").write_bytes(data)
    (folder / "a.zip.part.validator").write_text(json.dumps(
        {"url": url, "etag": etag, "last_modified": None}))


def test_a_part_file_left_by_an_earlier_run_is_continued(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    output = tmp_path / "a.zip"
    left_part(tmp_path, server.url("/a.zip"), PAYLOAD[:123_456])
    assert download.fetch(server.url("/a.zip"), output) == PAYLOAD_SHA
    assert server.requests_for("/a.zip") == [("/a.zip", "bytes=123456-", 206)]


def test_a_part_file_without_its_validator_starts_over(server, tmp_path):
    """Nothing says which version such a .part holds: resumed onto a changed file it would give
    bytes that match neither version."""
    server.files["/a.zip"], server.etags["/a.zip"] = NEW_PAYLOAD, '"v2"'
    (tmp_path / "a.zip.part").write_bytes(PAYLOAD[:123_456])
    digest = download.fetch(server.url("/a.zip"), tmp_path / "a.zip")
    assert (tmp_path / "a.zip").read_bytes() == NEW_PAYLOAD
    assert digest == hashlib.sha256(NEW_PAYLOAD).hexdigest()
    assert server.requests_for("/a.zip") == [("/a.zip", None, 200)]


def test_a_complete_part_file_is_accepted_when_the_server_has_nothing_more(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    left_part(tmp_path, server.url("/a.zip"), PAYLOAD)
    assert download.fetch(server.url("/a.zip"), tmp_path / "a.zip") == PAYLOAD_SHA
    assert [r[2] for r in server.requests_for("/a.zip")] == [416]


def test_a_server_that_ignores_range_makes_the_download_start_over(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    server.cut_after["/a.zip"] = 100_000
    server.ignore_range = True
    output = tmp_path / "a.zip"
    assert download.fetch(server.url("/a.zip"), output) == PAYLOAD_SHA
    assert output.read_bytes() == PAYLOAD  # not the first 100 kB twice
    assert [r[2] for r in server.requests_for("/a.zip")] == [200, 200]


def test_a_sha256_mismatch_is_an_error_and_leaves_no_file(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    output = tmp_path / "a.zip"
    with pytest.raises(InputError, match="sha256 mismatch") as error:
        download.fetch(server.url("/a.zip"), output, sha256="0" * 64)
    assert error.value.path == str(output)
    assert not output.exists() and not (tmp_path / "a.zip.part").exists()


def test_a_missing_file_fails_at_once_naming_the_url(server, tmp_path):
    with pytest.raises(InputError, match="HTTP 404") as error:
        download.fetch(server.url("/missing.zip"), tmp_path / "m.zip", retries=5)
    assert error.value.path == server.url("/missing.zip")
    assert len(server.requests) == 1  # a 404 is not retried


def test_an_unreachable_host_is_retried_then_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InputError, match="after 2 retries"):
        download.fetch(f"http://127.0.0.1:{port}/a.zip", tmp_path / "a.zip", retries=2,
                       timeout_seconds=5)


NEW_PAYLOAD = os.urandom(280_000)


def interrupted_download(server, tmp_path, *, at: int = 100_000):
    """Leave a .part of the first `at` bytes of /a.zip, as a killed earlier run would."""
    server.cut_after["/a.zip"] = at
    with pytest.raises(download._Incomplete):  # one attempt, cut off, and no retry
        download._attempt(server.url("/a.zip"), str(tmp_path / "a.zip.part"), 10, "a.zip")
    assert (tmp_path / "a.zip.part").stat().st_size == at


def test_a_resumed_download_asks_for_the_version_it_holds_with_if_range(server, tmp_path):
    server.files["/a.zip"], server.etags["/a.zip"] = PAYLOAD, '"v1"'
    interrupted_download(server, tmp_path)
    assert download.fetch(server.url("/a.zip"), tmp_path / "a.zip") == PAYLOAD_SHA
    assert server.requests_for("/a.zip")[-1] == ("/a.zip", "bytes=100000-", 206)
    assert server.if_range[-1] == '"v1"'
    assert not (tmp_path / "a.zip.part.validator").exists()  # gone with the .part


def test_a_stale_partial_download_of_a_changed_file_starts_over(server, tmp_path):
    server.files["/a.zip"], server.etags["/a.zip"] = PAYLOAD, '"v1"'
    interrupted_download(server, tmp_path)
    server.files["/a.zip"], server.etags["/a.zip"] = NEW_PAYLOAD, '"v2"'
    digest = download.fetch(server.url("/a.zip"), tmp_path / "a.zip")
    assert (tmp_path / "a.zip").read_bytes() == NEW_PAYLOAD  # not old bytes + new tail
    assert digest == hashlib.sha256(NEW_PAYLOAD).hexdigest()
    assert server.requests_for("/a.zip")[-1] == ("/a.zip", "bytes=100000-", 200)


def test_last_modified_validates_a_resume_when_there_is_no_etag(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    server.modified["/a.zip"] = "Wed, 21 Oct 2015 07:28:00 GMT"
    interrupted_download(server, tmp_path)
    server.files["/a.zip"] = NEW_PAYLOAD
    server.modified["/a.zip"] = "Thu, 22 Oct 2015 07:28:00 GMT"
    download.fetch(server.url("/a.zip"), tmp_path / "a.zip")
    assert server.if_range[-1] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert (tmp_path / "a.zip").read_bytes() == NEW_PAYLOAD


def test_a_server_that_ignores_if_range_is_caught_by_its_new_etag(server, tmp_path):
    server.files["/a.zip"], server.etags["/a.zip"] = PAYLOAD, '"v1"'
    interrupted_download(server, tmp_path)
    server.files["/a.zip"], server.etags["/a.zip"] = NEW_PAYLOAD, '"v2"'
    server.ignore_if_range = True  # answers 206 with the new file's tail
    download.fetch(server.url("/a.zip"), tmp_path / "a.zip")
    assert (tmp_path / "a.zip").read_bytes() == NEW_PAYLOAD
    assert [r[2] for r in server.requests_for("/a.zip")][-2:] == [206, 200]


def test_the_default_weights_ship_with_their_published_sha256():
    """The sha256 defaults start with the hash prefix in the file names (torch.hub convention)."""
    from lipsync.data.faces import FACES_DEFAULTS
    from lipsync.metrics import fid

    for url, sha256 in ((FACES_DEFAULTS["s3fd_url"], FACES_DEFAULTS["s3fd_sha256"]),
                        (fid.DEFAULTS["url"], fid.DEFAULTS["sha256"])):
        prefix = re.search(r"-([0-9a-f]{8,})\.pth$", url).group(1)
        assert re.fullmatch(r"[0-9a-f]{64}", sha256) and sha256.startswith(prefix)
