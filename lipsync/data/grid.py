"""Download one GRID speaker (official host or the Zenodo mirror), verify, unpack and list its clips."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lipsync.core.errors import InputError
from lipsync.core.io import atomic_path, sha256_file, write_json
from lipsync.core.logs import get_logger
from lipsync.core.options import Option
from lipsync.data import download, local
from lipsync.data import manifest as manifest_io

log = get_logger(__name__)

DEFAULT_BASE_URL = "https://spandh.dcs.shef.ac.uk/gridcorpus"
# Config section `data.grid`.
OPTIONS = {
    "base_url": Option(DEFAULT_BASE_URL, str, "The official GRID host."),
    "mirror_url": Option(None, str, "Base URL of a mirror in the Zenodo layout (s1.zip, "
                         "alignments.zip); used instead of base_url.", nullable=True),
    "retries": Option(5, int, "Attempts after a failed transfer.", minimum=0),
    "timeout_seconds": Option(120, float, "Network timeout of one transfer (s).", above=0),
}
RECORD_NAME = "downloads.json"
ARCHIVE_FOLDER = "downloads"


@dataclass(frozen=True)
class Archive:
    """One archive to fetch, and where and how its members land."""

    url: str
    filename: str
    destination: Path  # folder the (selected, stripped) members are written to
    select_speaker: str | None = None  # keep only members under a folder of this name


def archives_for(speaker: str, root: str | os.PathLike, *, base_url: str = DEFAULT_BASE_URL,
                 mirror_url: str | None = None, audio: str = "track") -> list[Archive]:
    """The archives that make up `speaker` and where each is unpacked (see lipsync.data.local)."""
    root = Path(root)
    folder = root / speaker
    base_url = base_url.rstrip("/")
    if mirror_url:
        mirror_url = mirror_url.rstrip("/")
        archives = [
            Archive(f"{mirror_url}/{speaker}.zip", f"{speaker}.zip", folder),
            # alignments.zip holds every speaker; each speaker job unpacks only its own folder, so
            # parallel jobs never write the same file.
            Archive(f"{mirror_url}/alignments.zip", "alignments.zip",
                    root / "alignments" / speaker, select_speaker=speaker),
        ]
    else:
        archives = [
            Archive(f"{base_url}/{speaker}/video/{speaker}.mpg_vcd.zip",
                    f"{speaker}.mpg_vcd.zip", folder / "video"),
            Archive(f"{base_url}/{speaker}/align/{speaker}.tar", f"{speaker}.tar",
                    folder / "align"),
        ]
    if audio == "wav50k":
        if mirror_url:
            log.info("the mirror has no 50 kHz audio; fetching it from %s", base_url)
        archives.append(Archive(f"{base_url}/{speaker}/audio/{speaker}_50kHz.tar",
                                f"{speaker}_50kHz.tar", folder / "audio"))
    return archives


def download_speaker(
    speaker: str,
    root: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    base_url: str = DEFAULT_BASE_URL,
    mirror_url: str | None = None,
    retries: int = 5,
    timeout_seconds: float = 120,
    audio: str = "track",
    max_clips_per_speaker: int | None = None,
) -> None:
    """Fetch, verify and unpack `speaker` under `root`, then write its manifest.

    Each archive's URL, size and sha256 go to `root/{speaker}/downloads.json`; a rerun checks the
    archives against it and downloads nothing when they are intact. A corrupt archive (not a valid
    zip/tar, or a sha256 other than recorded) is deleted and fetched once more; if that fails too,
    the error names the file. Speaker s21 has no video: it gets an empty manifest and a log note.
    """
    if audio not in local.AUDIO_CHOICES:
        raise InputError(manifest, f"audio must be one of {local.AUDIO_CHOICES}, not {audio!r}")
    if speaker in local.NO_VIDEO_SPEAKERS:
        log.warning("GRID speaker %s has no video; it is left out (empty manifest)", speaker)
        manifest_io.write_manifest(manifest, [])
        return
    root = Path(root)
    record_path = root / speaker / RECORD_NAME
    record = _read_record(record_path)
    for archive in archives_for(speaker, root, base_url=base_url, mirror_url=mirror_url,
                                audio=audio):
        path = root / speaker / ARCHIVE_FOLDER / archive.filename
        entry = _ensure_archive(archive, path, record.get(archive.filename), retries=retries,
                                timeout_seconds=timeout_seconds)
        record[archive.filename] = entry
        write_json(record_path, {"archives": record})
        _unpack(path, archive)
    local.write_manifest(speaker, root, manifest, audio=audio,
                         max_clips_per_speaker=max_clips_per_speaker)


def _read_record(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["archives"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(path, f"unreadable download record ({error}); delete it to start over"
                         ) from None


def _ensure_archive(archive: Archive, path: Path, recorded: dict | None, *, retries: int,
                    timeout_seconds: float) -> dict:
    """Make `path` an intact copy of `archive.url`; return its record {url, size, sha256}."""
    expected = recorded["sha256"] if recorded else None
    if path.exists():
        problem = _check(path, recorded)
        if problem is None:
            log.info("%s is intact; not downloading it again", path)
            return {"url": archive.url, "size": path.stat().st_size,
                    "sha256": expected or sha256_file(path)}
        log.warning("%s: %s; deleting it and downloading again", path, problem)
        path.unlink()
    for attempt in (1, 2):
        digest = download.fetch(archive.url, path, sha256=expected, retries=retries,
                                timeout_seconds=timeout_seconds,
                                progress_label=archive.filename)
        problem = _archive_problem(path)
        if problem is None:
            return {"url": archive.url, "size": path.stat().st_size, "sha256": digest}
        path.unlink()
        if attempt == 1:
            log.warning("%s: %s; deleted, downloading it once more", path, problem)
    raise InputError(path, f"{problem} even after a second download from {archive.url}")


def _check(path: Path, recorded: dict | None) -> str | None:
    """Why the archive on disk is not usable, or None when it is."""
    if recorded:
        size = path.stat().st_size
        if size != recorded.get("size"):
            return f"size {size} differs from the recorded {recorded.get('size')}"
        digest = sha256_file(path)
        if digest != recorded.get("sha256"):
            return f"sha256 {digest} differs from the recorded {recorded.get('sha256')}"
    return _archive_problem(path)


def _archive_problem(path: Path) -> str | None:
    """None when `path` opens as the zip or tar archive its name says; else what is wrong."""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    return f"member {bad} fails its CRC check"
        else:
            with tarfile.open(path) as archive:
                archive.getmembers()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        return f"not a valid {path.suffix.lstrip('.')} archive ({error})"
    return None


def _member_targets(names: list[str], archive: Archive, path: Path) -> dict[str, Path]:
    """Archive member name -> destination file, with the zip-slip guard.

    A single top-level folder shared by every member is dropped (`s1/bbaf2n.mpg` -> `bbaf2n.mpg`);
    with `select_speaker`, only members inside a folder of that name are kept, relative to it.
    """
    parts = {}
    for name in names:
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
            raise InputError(path, f"unsafe member path {name!r} (points outside the folder)")
        parts[name] = pure.parts
    if archive.select_speaker:
        selected = {}
        for name, p in parts.items():
            if archive.select_speaker in p[:-1]:
                selected[name] = p[p.index(archive.select_speaker) + 1:]
        parts = selected
    else:
        tops = {p[0] for p in parts.values()}
        if len(tops) == 1 and all(len(p) > 1 for p in parts.values()):
            parts = {name: p[1:] for name, p in parts.items()}
    destination = archive.destination.resolve()
    targets = {}
    for name, p in parts.items():
        target = destination.joinpath(*p).resolve()
        if destination not in target.parents:
            raise InputError(path, f"unsafe member path {name!r} (points outside the folder)")
        targets[name] = target
    return targets


def _unpack(path: Path, archive: Archive) -> None:
    """Extract the archive's files (not links or devices); files already there at full size stay."""
    written = 0
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as handle:
            members = {m.filename: m for m in handle.infolist() if not m.is_dir()}
            targets = _member_targets(list(members), archive, path)
            for name, target in targets.items():
                if _present(target, members[name].file_size):
                    continue
                with handle.open(members[name]) as source:
                    _write(source, target)
                written += 1
    else:
        with tarfile.open(path) as handle:
            members = {}
            for member in handle.getmembers():
                if member.isdir():
                    continue
                if not member.isfile():
                    raise InputError(path, f"member {member.name!r} is a link or special file; "
                                     "refusing to unpack it")
                members[member.name] = member
            targets = _member_targets(list(members), archive, path)
            for name, target in targets.items():
                if _present(target, members[name].size):
                    continue
                _write(handle.extractfile(members[name]), target)
                written += 1
    if archive.select_speaker and not targets:
        log.warning("%s holds no files for %s; its clips will have no alignment", path,
                    archive.select_speaker)
    log.info("unpacked %s: %d files written, %d already present", path, written,
             len(targets) - written)


def _present(target: Path, size: int) -> bool:
    return target.is_file() and target.stat().st_size == size


def _write(source, target: Path) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        shutil.copyfileobj(source, handle, 1 << 20)
