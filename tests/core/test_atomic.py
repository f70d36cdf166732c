"""atomic.py: a target is either the old file or the complete new one, never partial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from speechrnn.core.atomic import (
    atomic_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    make_temp_dir,
    sweep_leftovers,
)

from helpers import killed_writers_leftover, needs_posix_signals


def leftovers(directory: Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def test_atomic_write_writes_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write(target) as f:
        f.write("hello\n")
    assert target.read_text() == "hello\n"
    assert leftovers(tmp_path, "out.txt") == []


def test_target_is_untouched_until_the_block_exits(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_write(target) as f:
        f.write("new")
        f.flush()
        assert target.read_text() == "old"
    assert target.read_text() == "new"


def test_exception_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "wb") as f:
            f.write(b"partial" * 1000)
            raise RuntimeError("boom")
    assert target.read_bytes() == b"good"
    assert leftovers(tmp_path, "ckpt.bin") == []


def test_exception_without_previous_file_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "new.txt") as f:
            f.write("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_rejects_non_write_modes(tmp_path):
    for mode in ("a", "r", "w+", "x"):
        with pytest.raises(ValueError, match="mode"):
            with atomic_write(tmp_path / "f", mode):
                pass
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "f.txt", "x")


def test_new_file_gets_umask_mode_and_replacement_keeps_existing_mode(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    umask = os.umask(0)
    os.umask(umask)
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    kept.chmod(0o640)
    atomic_write_text(kept, "new")
    assert kept.stat().st_mode & 0o777 == 0o640


def test_text_bytes_and_json_helpers(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "line1\nline2\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\xffdata")
    atomic_write_json(tmp_path / "c.json", {"acc": 0.5, "labels": ["yes", "no"]})
    assert (tmp_path / "a.txt").read_bytes() == b"line1\nline2\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xffdata"
    text = (tmp_path / "c.json").read_text()
    assert json.loads(text) == {"acc": 0.5, "labels": ["yes", "no"]}
    assert text.endswith("\n") and '\n  "acc"' in text  # indent=2


def test_unserialisable_json_leaves_old_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text('{"ok": true}')
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == '{"ok": true}'
    assert leftovers(tmp_path, "r.json") == []


def test_atomic_save_with_path_writers_keeps_extension(tmp_path):
    # np.save appends ".npy" to paths not ending in it: the temp path must keep the suffix.
    target = tmp_path / "feats.npy"
    atomic_save(target, lambda tmp: np.save(tmp, np.arange(5)))
    np.testing.assert_array_equal(np.load(target), np.arange(5))
    assert leftovers(tmp_path, "feats.npy") == []


def test_atomic_save_with_torch_save(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "last.ckpt"
    atomic_save(target, lambda tmp: torch.save({"w": torch.ones(3)}, tmp))
    assert torch.equal(torch.load(target)["w"], torch.ones(3))


def test_atomic_save_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"good")

    def half_then_fail(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(target, half_then_fail)
    assert target.read_bytes() == b"good"
    assert leftovers(tmp_path, "last.pt") == []


WRITER = textwrap.dedent("""
    import sys, time
    from speechrnn.core.atomic import atomic_write
    with atomic_write(sys.argv[1], "wb") as f:
        for i in range(10_000):
            f.write(b"x" * 65536)
            f.flush()
            if i == 10:
                print("writing", flush=True)
            time.sleep(0.01)
""")


@contextmanager
def writer_in_the_middle_of(target: Path):
    """A process that is writing ``target`` with ``atomic_write``; it is SIGKILLed when the block exits."""
    repo_root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")])}
    with subprocess.Popen([sys.executable, "-c", WRITER, str(target)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        try:
            line = proc.stdout.readline()
            assert line == b"writing\n", proc.stderr.read().decode()
            yield
        finally:
            proc.send_signal(signal.SIGKILL)  # mid-write on success; cleanup on failure
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_write_leaves_previous_file_intact(tmp_path):
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs SIGKILL")
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"previous good checkpoint")
    with writer_in_the_middle_of(target):
        pass
    assert target.read_bytes() == b"previous good checkpoint"
    # The killed writer's partial data sits in a hidden temp file, not in the target.
    (stray,) = leftovers(tmp_path, "model.ckpt")
    assert stray.startswith(".model.") and stray.endswith(".tmp.ckpt")
    assert (tmp_path / stray).stat().st_size >= 11 * 65536


# --- sweeping what killed writers left -------------------------------------------------------

@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_writers_temp_file_is_swept_only_once_the_writer_is_dead(tmp_path):
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"previous good checkpoint")
    with writer_in_the_middle_of(target):
        (stray,) = leftovers(tmp_path, "model.ckpt")
        assert sweep_leftovers(tmp_path) == []  # another run (or DDP rank) still writing it
        assert (tmp_path / stray).is_file()
    assert sweep_leftovers(tmp_path) == [tmp_path / stray]  # killed: nobody will finish it
    assert leftovers(tmp_path, "model.ckpt") == []
    assert target.read_bytes() == b"previous good checkpoint"


def test_a_sweep_during_this_processs_own_write_lets_the_write_finish(tmp_path):
    target = tmp_path / "report.json"
    with atomic_write(target) as f:
        f.write("{}")
        assert sweep_leftovers(tmp_path) == []
    assert target.read_text() == "{}"


@needs_posix_signals
def test_a_sweep_removes_a_killed_builders_folder(tmp_path):
    stage = killed_writers_leftover(tmp_path / "corpus", ".partial")
    assert sweep_leftovers(tmp_path) == [stage]
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_never_touches_files_the_product_did_not_make(tmp_path, monkeypatch):
    mine = [".hidden", ".model.tmp.ckpt", "model.1234.abcdefgh.tmp.ckpt", ".model.vm.1.abcdefgh.ckpt", "notes.txt"]
    for name in mine:
        (tmp_path / name).write_text("the user's")
    (tmp_path / ".corpus.partial").mkdir()
    # a temp file of another machine sharing the folder: its writer cannot be checked from here
    monkeypatch.setattr("speechrnn.core.atomic._host", lambda: "othermachine")
    other = killed_writers_leftover(tmp_path / "model.ckpt")
    monkeypatch.undo()
    assert sweep_leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*mine, ".corpus.partial", other.name])


def test_make_temp_dir_refuses_a_suffix_the_sweep_would_not_know(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        make_temp_dir(tmp_path / "corpus", ".tmp")
    assert list(tmp_path.iterdir()) == []
