"""Specification of speechrnn.data.speech_commands (and the download command) against a local HTTP server; the real network is never used."""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechrnn.data import speech_commands as dl
from speechrnn.download import main as download_main

from helpers import killed_writers_leftover, needs_posix_signals

MAX_REQUESTS = 20  # a runaway retry loop fails the test instead of hanging it


def _make_archive(tmp_path: Path) -> bytes:
    """A tiny .tar.gz in Speech Commands layout: ./yes/*.wav, ./no/*.wav, ./validation_list.txt."""
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for word in ("yes", "no"):
        (src / word).mkdir(parents=True)
        for i in range(2):
            clip = (rng.standard_normal(1600) * 0.1).astype(np.float32)
            sf.write(src / word / f"abcd{i:04d}_nohash_0.wav", clip, 16000, subtype="PCM_16")
    (src / "validation_list.txt").write_text("yes/abcd0000_nohash_0.wav\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname=".")  # the official archives store members as ./yes/...
    return buf.getvalue()


class _Server:
    """Serves ``files`` on 127.0.0.1 with Range support, and logs each request's Range header."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_first = False  # first request: send half the body, then close
        self.ignore_range = False  # answer 200 with the whole file even to a Range request
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None or len(server.requests) > MAX_REQUESTS:
                    self.send_error(404 if data is None else 503)
                    return
                rng = self.headers.get("Range")
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_first and len(server.requests) == 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture()
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture()
def archive_bytes(tmp_path) -> bytes:
    return _make_archive(tmp_path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- download -----------------------------------------------------------------


def test_download_verifies_and_renames(server, archive_bytes, tmp_path):
    server.files["/a.tar.gz"] = archive_bytes
    dest = tmp_path / "out" / "a.tar.gz"
    got = dl.download(f"{server.url}/a.tar.gz", dest, sha256=_sha256(archive_bytes),
                      size=len(archive_bytes), progress=False)
    assert got == dest and dest.read_bytes() == archive_bytes
    assert not Path(f"{dest}.part").exists()


def test_dropped_connection_is_resumed_with_range(server, archive_bytes, tmp_path):
    server.files["/a.tar.gz"] = archive_bytes
    server.drop_first = True
    dest = tmp_path / "a.tar.gz"
    dl.download(f"{server.url}/a.tar.gz", dest, sha256=_sha256(archive_bytes), progress=False, timeout=5)
    half = len(archive_bytes) // 2
    assert server.requests == [("/a.tar.gz", None), ("/a.tar.gz", f"bytes={half}-")]
    assert dest.read_bytes() == archive_bytes


def test_server_ignoring_range_restarts_from_zero(server, archive_bytes, tmp_path):
    server.files["/a.tar.gz"] = archive_bytes
    server.ignore_range = True
    dest = tmp_path / "a.tar.gz"
    Path(f"{dest}.part").write_bytes(b"stale bytes from another file")
    dl.download(f"{server.url}/a.tar.gz", dest, sha256=_sha256(archive_bytes), progress=False)
    assert server.requests[0][1] == "bytes=29-"
    assert dest.read_bytes() == archive_bytes


def test_part_already_whole_gets_416_and_is_kept(server, archive_bytes, tmp_path):
    server.files["/a.tar.gz"] = archive_bytes
    dest = tmp_path / "a.tar.gz"
    Path(f"{dest}.part").write_bytes(archive_bytes)
    dl.download(f"{server.url}/a.tar.gz", dest, sha256=_sha256(archive_bytes), progress=False)
    assert server.requests == [("/a.tar.gz", f"bytes={len(archive_bytes)}-")]
    assert dest.read_bytes() == archive_bytes


def test_corrupt_download_is_rejected_and_part_kept(server, archive_bytes, tmp_path):
    server.files["/a.tar.gz"] = archive_bytes
    dest = tmp_path / "a.tar.gz"
    wrong = "0" * 64
    with pytest.raises(dl.ChecksumError) as err:
        dl.download(f"{server.url}/a.tar.gz", dest, sha256=wrong, progress=False)
    message = str(err.value)
    part = Path(f"{dest}.part")
    assert "\n" not in message
    assert str(part) in message and wrong in message and _sha256(archive_bytes) in message
    assert "delete" in message
    assert part.read_bytes() == archive_bytes and not dest.exists()


# --- safe_extract ---------------------------------------------------------------


def _hostile_tar(tmp_path: Path, bad: tarfile.TarInfo) -> Path:
    """A tar whose first member is harmless and whose second is ``bad``."""
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("yes/ok.wav")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"abc"))
        bad.size = 4 if bad.isreg() else 0
        tar.addfile(bad, io.BytesIO(b"evil") if bad.isreg() else None)
    return path


def _info(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    return info


@pytest.mark.parametrize(
    "make_bad, reason",
    [
        (lambda tmp: _info("../evil.txt"), "outside the target"),
        (lambda tmp: _info("yes/../../evil.txt"), "outside the target"),
        (lambda tmp: _info(str(tmp / "evil.txt")), "absolute path"),
        (lambda tmp: _info("yes/link.wav", tarfile.SYMTYPE, "../../evil.txt"), "is a link"),
        (lambda tmp: _info("yes/hard.wav", tarfile.LNKTYPE, "yes/ok.wav"), "is a link"),
        (lambda tmp: _info("yes/dev.wav", tarfile.CHRTYPE), "special file"),
        (lambda tmp: _info("yes/fifo.wav", tarfile.FIFOTYPE), "special file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "fifo"],
)
def test_hostile_member_is_refused_before_anything_is_written(tmp_path, make_bad, reason):
    bad = make_bad(tmp_path)
    archive = _hostile_tar(tmp_path, bad)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(dl.UnsafeArchiveError) as err:
        dl.safe_extract(archive, work / "target")
    message = str(err.value)
    assert "\n" not in message and f"member {bad.name!r} " in message and reason in message
    assert list(work.iterdir()) == []  # not even the harmless member, nor a temp folder
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_marks_completion(tmp_path, archive_bytes):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(archive_bytes)
    target = dl.safe_extract(archive, tmp_path / "out")
    assert (target / dl.MARKER).is_file()
    assert sorted(p.name for p in (target / "yes").iterdir()) == [
        "abcd0000_nohash_0.wav", "abcd0001_nohash_0.wav"
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@needs_posix_signals
def test_extraction_sweeps_what_a_killed_extraction_left(tmp_path, archive_bytes):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(archive_bytes)
    half = killed_writers_leftover(tmp_path / "out", ".partial")
    dl.safe_extract(archive, tmp_path / "out")
    assert not half.exists()


def test_truncated_archive_is_a_one_line_error(tmp_path, archive_bytes):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(archive_bytes[: len(archive_bytes) // 2])
    with pytest.raises(dl.UnsafeArchiveError, match="truncated or corrupt") as err:
        dl.safe_extract(archive, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


# --- prepare_speech_commands ------------------------------------------------------


@pytest.fixture()
def official_v2_train(server, archive_bytes, monkeypatch):
    """Serve the tiny archive under the official v0.02 name, with its own checksum pinned."""
    name = dl.ARCHIVES[("v0.02", "train")].name
    server.files[f"/{name}"] = archive_bytes
    pinned = dl.Archive(name, len(archive_bytes), _sha256(archive_bytes))
    monkeypatch.setitem(dl.ARCHIVES, ("v0.02", "train"), pinned)
    return name


def test_prepare_downloads_verifies_and_extracts(server, official_v2_train, tmp_path):
    root = dl.prepare_speech_commands(None, cache_dir=tmp_path / "cache", base_url=server.url)
    assert root == tmp_path / "cache" / "speech_commands_v0.02"
    assert dl.looks_like_speech_commands(root) and (root / "validation_list.txt").is_file()
    assert (tmp_path / "cache" / official_v2_train).is_file()
    # A second call finds the extraction and asks the server nothing.
    assert dl.prepare_speech_commands(None, cache_dir=tmp_path / "cache", base_url=server.url) == root
    assert len(server.requests) == 1


def test_prepare_rejects_archive_not_matching_the_official_checksum(server, archive_bytes, tmp_path):
    name = dl.ARCHIVES[("v0.02", "test")].name
    server.files[f"/{name}"] = archive_bytes  # not the real test set, so its size is wrong
    with pytest.raises(dl.ChecksumError):
        dl.prepare_speech_commands(None, subset="test", cache_dir=tmp_path, base_url=server.url)
    assert (tmp_path / f"{name}.part").is_file()
    assert not (tmp_path / name).exists() and not (tmp_path / "speech_commands_test_set_v0.02").exists()


def test_missing_root_is_fetched_into_the_cache(server, official_v2_train, tmp_path):
    cache = tmp_path / "cache"
    root = dl.prepare_speech_commands(tmp_path / "not-there", cache_dir=cache, base_url=server.url)
    assert root == cache / "speech_commands_v0.02" and dl.looks_like_speech_commands(root)


def test_missing_root_without_download_names_it(tmp_path):
    with pytest.raises(dl.DatasetUnavailable, match="not-there") as err:
        dl.prepare_speech_commands(tmp_path / "not-there", cache_dir=tmp_path, download=False)
    assert "\n" not in str(err.value) and "data.root=" in str(err.value)


def test_offline_error_is_one_line_naming_url_and_destination(tmp_path):
    base_url = f"http://127.0.0.1:{_closed_port()}/"
    with pytest.raises(dl.DatasetUnavailable) as err:
        dl.prepare_speech_commands(None, cache_dir=tmp_path, base_url=base_url)
    message = str(err.value)
    assert "\n" not in message
    assert f"{base_url}speech_commands_v0.02.tar.gz" in message
    assert str(tmp_path / "speech_commands_v0.02.tar.gz") in message
    assert "data.root=" in message


@pytest.mark.slow
def test_offline_command_is_one_line_without_a_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "speechrnn.download", "--subset", "test", "--cache-dir", str(tmp_path),
                          "--base-url", f"http://127.0.0.1:{_closed_port()}/"],
                         cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("error: could not download Speech Commands v0.02 test") and res.stderr.count("\n") == 1


def test_download_false_raises_without_touching_the_network(tmp_path):
    with pytest.raises(dl.DatasetUnavailable, match="download=False"):
        dl.prepare_speech_commands(None, cache_dir=tmp_path, download=False,
                                   base_url="http://127.0.0.1:9/")


def test_existing_folder_is_returned_as_is(tmp_path, archive_bytes):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(archive_bytes)
    folder = dl.safe_extract(archive, tmp_path / "mine")
    assert dl.prepare_speech_commands(folder, cache_dir=tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()


def test_folder_without_word_folders_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="does not look like Speech Commands"):
        dl.prepare_speech_commands(tmp_path / "empty", cache_dir=tmp_path / "cache")


def test_local_archive_is_extracted_once(tmp_path, archive_bytes, monkeypatch):
    archive = tmp_path / "speech_commands_v0.02.tar.gz"
    archive.write_bytes(archive_bytes)
    calls = []
    real = dl.safe_extract
    monkeypatch.setattr(dl, "safe_extract", lambda *a: calls.append(a) or real(*a))
    first = dl.prepare_speech_commands(archive, cache_dir=tmp_path / "cache")
    second = dl.prepare_speech_commands(archive, cache_dir=tmp_path / "cache")
    assert first == second == tmp_path / "cache" / "speech_commands_v0.02"
    assert dl.looks_like_speech_commands(first) and len(calls) == 1


def test_unknown_version_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="version='v3'"):
        dl.prepare_speech_commands(None, version="v3", cache_dir=tmp_path)


def test_cli_fetches_the_archive_and_prints_the_folder(server, official_v2_train, tmp_path, capsys):
    download_main(["--cache-dir", str(tmp_path / "cache"), "--base-url", server.url])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / "speech_commands_v0.02")
    assert dl.looks_like_speech_commands(tmp_path / "cache" / "speech_commands_v0.02")
