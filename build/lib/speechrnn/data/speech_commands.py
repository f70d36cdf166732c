"""Get Google Speech Commands onto disk: resumable download, checksum, safe extraction.

The archives are large (2.4 GB for v0.02) and served over plain HTTP, so a download
has to survive a dropped connection (it resumes from ``<dest>.part`` with a
``Range`` request), prove it received the right bytes (sizes and SHA-256 pinned in
``ARCHIVES``) and be unpacked without trusting the paths stored in the tar.
``prepare_speech_commands`` is the one entry point the data module needs: give it an
extracted folder, a local ``.tar.gz``, or nothing (download into the cache), and it
returns a folder of word sub-folders holding ``.wav`` clips.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from tqdm import tqdm

from speechrnn.core.atomic import staged_dir
from speechrnn.core.errors import SpeechRNNError

BASE_URL = "http://download.tensorflow.org/data/"
MARKER = ".speechrnn-extracted"  # written last inside a finished extraction
_CHUNK = 1 << 20  # bytes per read and per hash update

# The errors of a server that cannot be reached or that drops the connection.
_NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


@dataclass(frozen=True)
class Archive:
    """One official archive: its file name under ``BASE_URL``, size in bytes and SHA-256.

    ``None`` means no trusted value was found, and that check is skipped.
    """

    name: str
    size: int | None
    sha256: str | None


# Sources (no value below was computed here or guessed):
# - v0.02 train and test: size and SHA-256 from tensorflow/datasets,
#   tensorflow_datasets/url_checksums/speech_commands.txt
# - v0.01 train: SHA-256 from pytorch/audio, torchaudio/datasets/speechcommands.py
#   (``_CHECKSUMS``; the same value ships in torchaudio 2.11). No size was found.
# - v0.01 test: no published checksum or size was found, so it is not verified.
ARCHIVES = {
    ("v0.01", "train"): Archive(
        "speech_commands_v0.01.tar.gz",
        None,
        "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    ),
    ("v0.01", "test"): Archive("speech_commands_test_set_v0.01.tar.gz", None, None),
    ("v0.02", "train"): Archive(
        "speech_commands_v0.02.tar.gz",
        2428923189,
        "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    ),
    ("v0.02", "test"): Archive(
        "speech_commands_test_set_v0.02.tar.gz",
        112563277,
        "cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfa9acd51df",
    ),
}


class DatasetUnavailable(SpeechRNNError):
    """The dataset is not on disk and could not be downloaded (no network, or ``download=False``)."""


class ChecksumError(SpeechRNNError, ValueError):
    """A downloaded file does not have the expected size or checksum."""


class UnsafeArchiveError(SpeechRNNError, ValueError):
    """An archive holds a member that would be written outside the target, or is not a plain file."""


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming an interrupted download and verifying it.

    Bytes go to ``<dest>.part``; a ``.part`` left by an earlier run is resumed with a
    ``Range: bytes=N-`` request (a server that answers 200 instead of 206 restarts it).
    A connection dropped mid-file is resumed up to ``retries`` times. The finished file
    is checked against ``size``, ``sha256`` and ``md5`` (each only if given), then
    renamed to ``dest`` in one step, so ``dest`` never holds a partial or corrupt file.

    Args:
        url (str): Address of the file.
        dest (str or Path): Where the finished file goes. If it exists, it is verified and returned.
        sha256 (str or None, optional): Expected SHA-256 hex digest. (Default: ``None``)
        md5 (str or None, optional): Expected MD5 hex digest. (Default: ``None``)
        size (int or None, optional): Expected size in bytes. (Default: ``None``)
        progress (bool, optional): Show a tqdm progress bar. (Default: ``True``)
        retries (int, optional): Resumes allowed after dropped connections. (Default: ``3``)
        timeout (float, optional): Seconds to wait on a silent socket. (Default: ``60.0``)

    Returns:
        Path: ``dest``.

    Raises:
        ChecksumError: the file is complete but wrong; the ``.part`` is kept for inspection.
        urllib.error.URLError, ConnectionError, TimeoutError: the server could not be
            reached, or kept dropping; the ``.part`` is kept, so running again resumes.

    Example
        >>> download("http://example.org/a.tar.gz", "data/a.tar.gz", sha256="9f86d0...")
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    dest = Path(dest)
    if dest.exists():
        _verify(dest, size=size, sha256=sha256, md5=md5)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))  # 0.5 s, 1 s, 2 s, ...
        if _fetch_once(url, part, size=size, progress=progress, timeout=timeout):
            break
    else:
        raise ConnectionError(
            f"{url}: connection dropped {retries + 1} times; {part} is kept, run again to resume"
        )
    _verify(part, size=size, sha256=sha256, md5=md5)
    os.replace(part, dest)
    return dest


_download = download  # prepare_speech_commands's `download` flag shadows the function


def _fetch_once(url: str, part: Path, *, size: int | None, progress: bool, timeout: float) -> bool:
    """One request: append the missing bytes to ``part``. True if the file is now whole."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset == size:
        return True  # nothing left to fetch, only to verify
    if size is not None and offset > size:
        part.unlink()  # longer than the real file, so not a prefix of it
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # 416: nothing at or after `offset`. Whole if the server's total is our size.
        total = (err.headers.get("Content-Range") or "").rpartition("/")[2]
        if total == str(offset):
            return True
        part.unlink()
        return False
    with response:
        if offset and response.status == 206:
            start = (response.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if start != str(offset):
                part.unlink()  # the server sent some other range: start again
                return False
        else:
            offset = 0  # a 200 carries the whole file: start again from byte 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else size
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress,
        ) as bar:
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (ConnectionError, TimeoutError, http.client.HTTPException):
                return False
    # read() returns b"" rather than raising when the server closes early.
    return expected is None or part.stat().st_size >= expected


def _verify(path: Path, *, size: int | None, sha256: str | None, md5: str | None) -> None:
    fix = f"the download is corrupt: delete {path} and run again to download it afresh"
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{path} is {actual_size} bytes, expected {size}; {fix}")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        digest = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        actual = digest.hexdigest()
        if actual != expected.lower():
            raise ChecksumError(f"{path} has {algorithm} {actual}, expected {expected}; {fix}")


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a tar archive into ``target``, refusing members that are not plain files or folders.

    Every member is checked before anything is written: absolute paths, paths that
    escape ``target`` (``..``), symbolic and hard links, devices and FIFOs are refused.
    Files are unpacked into a hidden folder beside ``target`` that is renamed to
    ``target`` only once complete (with ``MARKER`` inside), so an interrupted
    extraction never looks finished.

    Args:
        archive (str or Path): A ``.tar``, ``.tar.gz`` or ``.tgz`` file.
        target (str or Path): Folder to create; it must not exist yet.

    Returns:
        Path: ``target``.

    Raises:
        UnsafeArchiveError: a member is unsafe (then nothing is extracted), or the archive is unreadable.
        FileExistsError: ``target`` already exists.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists: remove it to extract {archive} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")
        members = tar.getmembers()  # reads to the end, so a truncated archive fails here
    except (tarfile.TarError, EOFError, zlib.error) as err:
        reason = " ".join(str(err).split())
        raise UnsafeArchiveError(
            f"cannot read {archive} ({reason}): it is truncated or corrupt; delete it and download it again"
        ) from err
    with tar:
        root = os.path.realpath(target)
        for member in members:
            reason = _unsafe(member, root)
            if reason:
                raise UnsafeArchiveError(
                    f"refusing to extract {archive}: member {member.name!r} {reason}; "
                    "use an archive from a source you trust"
                )
        with staged_dir(target) as tmp:  # a half-extracted folder of an extraction killed earlier is swept
            # The "data" filter (Python >= 3.11.4) is a second line of defence.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **extra)
            (tmp / MARKER).write_text(f"{archive.name}\n")
    return target


def _unsafe(member: tarfile.TarInfo, root: str) -> str | None:
    """Why ``member`` must not be extracted under ``root``, or None if it is safe."""
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if not (member.isreg() or member.isdir()):
        return "is a device, FIFO or other special file"
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or PureWindowsPath(name).drive:
        return "has an absolute path"
    if os.path.commonpath([root, os.path.realpath(os.path.join(root, name))]) != root:
        return "points outside the target folder"
    return None


def looks_like_speech_commands(folder: str | os.PathLike) -> bool:
    """True if ``folder`` holds at least one word sub-folder containing ``.wav`` files."""
    folder = Path(folder)
    return folder.is_dir() and any(
        sub.is_dir() and next(sub.glob("*.wav"), None) is not None for sub in folder.iterdir()
    )


def prepare_speech_commands(
    root_or_archive: str | os.PathLike | None = None,
    *,
    version: str = "v0.02",
    subset: str = "train",
    cache_dir: str | os.PathLike = "data/",
    download: bool = True,
    base_url: str | None = None,
) -> Path:
    """Return the folder of an extracted copy of Speech Commands, fetching it if needed.

    Args:
        root_or_archive (str, Path or None, optional): An extracted folder (returned as
            is), or a ``.tar.gz`` (extracted once into ``cache_dir``, then reused). With
            ``None`` or a path that does not exist, the official archive is looked for in,
            or downloaded to, ``cache_dir``. (Default: ``None``)
        version (str, optional): ``"v0.01"`` or ``"v0.02"``. (Default: ``"v0.02"``)
        subset (str, optional): ``"train"`` (the main archive, which also holds the
            validation and test lists) or ``"test"`` (the separately released test set).
            (Default: ``"train"``)
        cache_dir (str or Path, optional): Where archives are downloaded and extracted.
            (Default: ``"data/"``)
        download (bool, optional): Allow downloading when nothing is on disk. (Default: ``True``)
        base_url (str or None, optional): Server to download from instead of ``BASE_URL``.
            (Default: ``None``)

    Returns:
        Path: A folder of word sub-folders (``yes/``, ``no/``, ...) holding ``.wav`` clips.

    Raises:
        DatasetUnavailable: nothing on disk and the download failed or was not allowed.

    Example
        >>> prepare_speech_commands(None, version="v0.02", subset="test")
        PosixPath('data/speech_commands_test_set_v0.02')
    """
    if (version, subset) not in ARCHIVES:
        raise ValueError(
            f"no Speech Commands archive for version={version!r}, subset={subset!r}: "
            f"expected version in ('v0.01', 'v0.02') and subset in ('train', 'test')"
        )
    cache_dir = Path(cache_dir)
    where = f"in {cache_dir}"
    if root_or_archive is not None:
        path = Path(root_or_archive)
        if path.is_dir():
            if not looks_like_speech_commands(path):
                raise ValueError(
                    f"{path} does not look like Speech Commands (expected word folders such as yes/ "
                    "holding .wav files): point data.root at the extracted folder or at the .tar.gz"
                )
            return path
        if path.is_file():
            if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
                raise ValueError(f"{path} is neither a Speech Commands folder nor a .tar.gz: fix data.root")
            return _extract_once(path, cache_dir / _stem(path.name))
        where = f"at {path} nor in {cache_dir}"  # a missing root is fetched into the cache

    entry = ARCHIVES[(version, subset)]
    target, archive = cache_dir / _stem(entry.name), cache_dir / entry.name
    if (target / MARKER).is_file() or looks_like_speech_commands(target):
        return target
    if not archive.is_file():
        url = (base_url or BASE_URL).rstrip("/") + "/" + entry.name
        hint = (
            f"download {url} and put it at {archive}, or point at an existing copy with "
            "data.root=/path/to/folder_or.tar.gz"
        )
        if not download:
            raise DatasetUnavailable(
                f"Speech Commands {version} {subset} is not {where} and download=False: {hint}"
            )
        try:
            _download(url, archive, sha256=entry.sha256, size=entry.size)
        except _NETWORK_ERRORS as err:
            reason = " ".join(str(err).split())  # keep the message on one line
            raise DatasetUnavailable(
                f"could not download Speech Commands {version} {subset} ({reason}): {hint}"
            ) from err
    return _extract_once(archive, target)


def _extract_once(archive: Path, target: Path) -> Path:
    if (target / MARKER).is_file():
        return target
    return safe_extract(archive, target)


def _stem(name: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
