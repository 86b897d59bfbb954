"""Resumable, verified HTTP downloads (GRID archives, model weights) with the standard library only."""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request

from lipsync.core.errors import InputError
from lipsync.core.io import sha256_file, write_json
from lipsync.core.logs import get_logger
from lipsync.core.progress import progress

log = get_logger(__name__)

# First wait between attempts; it doubles after each failure (capped), so a flaky mirror gets
# time to recover without a long stall on a single dropped connection.
BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
_CHUNK_BYTES = 1 << 20
# HTTP statuses worth retrying; any other 4xx (404, 403, ...) will not change on a retry.
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Incomplete(Exception):
    """A transfer ended before the announced size: resume it on the next attempt."""


def fetch(
    url: str,
    output: str | os.PathLike,
    *,
    sha256: str | None = None,
    retries: int = 5,
    timeout_seconds: float = 120,
    progress_label: str | None = None,
) -> str:
    """Download `url` to `output` and return the file's sha256.

    Bytes stream into `output + ".part"`; a `.part` left by an interrupted transfer is continued
    with an HTTP Range request (a server that ignores Range makes it start over). The ETag or
    Last-Modified of the response that started the `.part` is kept beside it (`.part.validator`)
    and sent as If-Range, so a file that changed on the server since is downloaded from zero
    instead of being spliced onto the old bytes; a `.part` without its `.validator` starts over
    too, since nothing says which version it holds. Failed attempts are retried `retries` times
    with exponential backoff; an attempt that made progress does not use up a retry. The file is
    renamed onto `output` only once its size matches Content-Length and its sha256 matches
    `sha256` (when given); on a mismatch the `.part` is deleted.
    """
    output = os.fspath(output)
    part = output + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    failures = 0
    while True:
        before = _size(part)
        try:
            _attempt(url, part, timeout_seconds, progress_label or os.path.basename(output))
            break
        except (_Incomplete, urllib.error.URLError, http.client.HTTPException, OSError) as error:
            if isinstance(error, urllib.error.HTTPError) and error.code not in _RETRYABLE_STATUS:
                raise InputError(url, f"download failed: HTTP {error.code} {error.reason}") from None
            if _size(part) > before:
                failures = 0  # progress was made: a long archive on a flaky link still completes
            else:
                failures += 1
            if failures > retries:
                kept = f" (partial data kept in {part}; a rerun resumes it)" if _size(part) else ""
                raise InputError(url, f"download failed after {retries} retries: {error}{kept}"
                                 ) from None
            delay = min(BACKOFF_SECONDS * 2 ** max(failures - 1, 0), MAX_BACKOFF_SECONDS)
            log.warning("download of %s interrupted (%s); retrying in %.1f s", url, error, delay)
            time.sleep(delay)

    _remove(_validator_path(part))
    digest = sha256_file(part)
    if sha256 and digest != sha256.lower():
        os.remove(part)
        raise InputError(
            output, f"sha256 mismatch for {url}: expected {sha256.lower()}, got {digest} "
            "(download deleted)"
        )
    os.replace(part, output)
    log.info("downloaded %s -> %s (%d bytes, sha256 %s)", url, output, _size(output), digest)
    return digest


def _validator_path(part: str) -> str:
    return part + ".validator"


def _read_validator(part: str) -> dict:
    try:
        with open(_validator_path(part)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _write_validator(part: str, url: str, headers) -> None:
    """Record what identifies the version of the file the `.part` holds (RFC 9110 validators)."""
    # Written even when the server sent neither: its presence says this run's code started the
    # `.part`, so a resume without If-Range is a known risk, not a guess about a foreign file.
    write_json(_validator_path(part), {"url": url, "etag": headers.get("ETag"),
                                       "last_modified": headers.get("Last-Modified")})


def _if_range(validator: dict) -> str | None:
    """The If-Range value: a strong ETag, else the Last-Modified date (weak ETags never match)."""
    etag = validator.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return validator.get("last_modified")


def _discard(part: str, reason: str) -> None:
    log.info("discarding %s: %s", part, reason)
    _remove(part)
    _remove(_validator_path(part))


def _attempt(url: str, part: str, timeout_seconds: float, label: str) -> None:
    """One HTTP request: continue `part` from its current size, or start it over."""
    offset = _size(part)
    validator = _read_validator(part) if offset else {}
    if offset and not validator:
        # Without it nothing says which version of the file the bytes are: splicing them onto a
        # changed file would give a file that matches neither.
        _discard(part, "no readable .validator beside it records which version it holds")
        offset = 0
    elif offset and validator.get("url") != url:
        _discard(part, f"it holds {validator['url']}, not {url}")
        offset, validator = 0, {}
    request = urllib.request.Request(url, headers={"User-Agent": "lipsync"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        if _if_range(validator):
            # the server sends the rest only if the file is still the version the .part holds
            request.add_header("If-Range", _if_range(validator))
        else:
            log.info("resuming %s without a validator (the server sent no ETag or "
                     "Last-Modified): only its size and sha256 can tell a changed file", part)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_seconds)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # Nothing left to send: the .part is complete when its size is the resource's size.
            total = _content_range_total(error.headers.get("Content-Range"))
            if total == offset:
                return
            _discard(part, f"{offset} bytes, more than {url} has ({total})")
            raise _Incomplete(f"stale partial file of {offset} bytes; starting over") from None
        raise
    with response:
        if offset and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise _Incomplete(f"server resumed at byte {start}, not {offset}")
            etag = response.headers.get("ETag")
            if etag and validator.get("etag") and etag != validator["etag"]:
                # a server that honours Range but not If-Range: the bytes are another version's
                _discard(part, f"{url} changed (ETag {validator['etag']} -> {etag})")
                raise _Incomplete("the file changed on the server; starting over")
            mode = "ab"
        else:
            if offset:
                log.info("%s sent the whole file (changed since the partial download, or Range "
                         "not supported); restarting the download", url)
            offset, mode = 0, "wb"
            _write_validator(part, url, response.headers)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        bar = progress(total=total, initial=offset, unit="B", unit_scale=True, desc=label)
        try:
            with open(part, mode) as handle:
                while True:
                    try:
                        chunk = response.read(_CHUNK_BYTES)
                    except http.client.IncompleteRead as error:
                        handle.write(error.partial)
                        raise _Incomplete("connection closed early") from None
                    except (TimeoutError, ConnectionError) as error:
                        raise _Incomplete(f"connection lost: {error}") from None
                    if not chunk:
                        break
                    handle.write(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    size = _size(part)
    if total is not None and size != total:
        raise _Incomplete(f"got {size} of {total} bytes")


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", header or "")
    return int(match.group(1)) if match else None


def _content_range_total(header: str | None) -> int | None:
    match = re.search(r"/(\d+)$", header or "")
    return int(match.group(1)) if match else None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0

