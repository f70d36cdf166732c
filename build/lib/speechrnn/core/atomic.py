"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Checkpoints, reports and caches are written to a hidden temp file in the target's
directory, flushed and fsynced, then ``os.replace``-d onto the target (a rename is
atomic within one filesystem), and the directory is fsynced so the rename itself
survives a power cut. If the writer raises, the temp file is removed and the old
target is untouched; if it is killed outright, only a stray
``.<stem>.<host>.<pid>.<random>.tmp<ext>`` file is left beside an intact target, and
``sweep_leftovers`` removes it on the next run once that process is gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# Read once at import: os.umask can only be read by setting it, which races with threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# What a temp file or folder of this module is called: ``.<name>.<host>.<pid>.<random>`` plus
# ``.tmp<suffix>`` (files) or ``.partial`` / ``.old`` (folders, ``make_temp_dir``). The random
# part is tempfile's: 8 of [a-z0-9_].
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[a-z0-9_]{8}"
                       r"(?:\.tmp.*|\.partial|\.old)")


def _host() -> str:
    """This machine's short host name, reduced to ``[A-Za-z0-9-]`` so it is one dot-free field of a name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "localhost"


def _owner() -> str:
    """``<host>.<pid>``: who writes a temp file, so ``sweep_leftovers`` can tell whether it is still writing."""
    return f"{_host()}.{os.getpid()}"


def _make_temp(path: Path) -> tuple[int, Path]:
    """Create ``.<stem>.<host>.<pid>.<random>.tmp<suffix>`` beside ``path``; the suffix is kept so
    writers that infer a format from the extension (savefig, np.save) still work."""
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.stem}.{_owner()}.", suffix=f".tmp{path.suffix}")
    # mkstemp creates 0600; give the file the target's mode, or what open() would give it.
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK
    os.chmod(tmp, mode)
    return fd, Path(tmp)


def make_temp_dir(path: str | Path, suffix: str = ".partial") -> Path:
    """Create an empty hidden folder ``.<name>.<host>.<pid>.<random><suffix>`` beside ``path``.

    For work that is built whole and then renamed onto ``path`` (an extracted archive, a
    corpus); named like ``atomic_write``'s temp files, so ``sweep_leftovers`` removes it
    once a killed builder is gone.

    Args:
        path (str | Path): the folder the work will become; its parent must exist.
        suffix (str, optional): ``".partial"`` for work in progress, ``".old"`` for a
            replaced folder on its way out. (Default: ``".partial"``)

    Returns:
        Path: the new folder.
    """
    if suffix not in (".partial", ".old"):
        raise ValueError(f"suffix must be '.partial' or '.old', got {suffix!r}: sweep_leftovers knows no other")
    path = Path(path)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{_owner()}.", suffix=suffix))


@contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder whole in a hidden sibling, and put it at ``path`` only when the block completes.

    Yields the stage (``make_temp_dir``): write everything into it, the marker that says the
    folder is complete last. What a builder killed earlier left beside ``path`` is swept first;
    a block that raises leaves nothing. ``path`` may be absent or an empty folder: ``os.replace``
    refuses one that holds anything, so nothing that appeared there meanwhile is ever lost.

    Example:
        >>> with staged_dir("data/corpus") as stage:
        ...     (stage / "yes").mkdir()
        ...     (stage / ".complete").write_text("done")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path.parent)
    stage = make_temp_dir(path)
    try:
        yield stage
        os.replace(stage, path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def _is_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def sweep_leftovers(directory: str | Path) -> list[Path]:
    """Remove the temp files and folders that killed writers of this module left in ``directory``.

    A writer killed outright (SIGKILL, power cut, OOM) leaves its temp file beside the intact
    target, or a ``make_temp_dir`` folder beside the finished one. Only names of exactly that
    form (``.<name>.<host>.<pid>.<random>.tmp<ext>``, ``.partial``, ``.old``) are looked at,
    so a user's own files, hidden or not, are never touched; of those, only the ones made on
    this host by a process that no longer exists are removed. A temp file of a live process
    (a second run, another DDP rank, this process) is still being written and is kept; so
    is one made on another machine sharing the folder (multi-node runs), whose process
    cannot be checked from here. A PID the system has since given to a new process keeps
    its leftover until that process ends: the rule errs towards keeping. Not recursive;
    on systems without POSIX signals (Windows, where ``os.kill`` terminates) nothing is removed.

    Args:
        directory (str | Path): the folder to sweep; a missing one is left alone.

    Returns:
        list[Path]: what was removed.

    Example:
        >>> sweep_leftovers("runs/demo/checkpoints")  # before writing there again
        [PosixPath('runs/demo/checkpoints/.last.vm.4242.k2x9_a1b.tmp.ckpt')]
    """
    directory = Path(directory)
    if os.name != "posix" or not directory.is_dir():
        return []
    host, removed = _host(), []
    for entry in directory.iterdir():
        m = _LEFTOVER.fullmatch(entry.name)
        if m is None or m["host"] != host or _is_running(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)  # another sweeper may have been first
        log.info("removed %s, left by process %s, which was killed while writing it", entry, m["pid"])
        removed.append(entry)
    return removed


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory``; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temp file that replaces ``path`` only when the block exits cleanly.

    Args:
        path (str | Path): target file; its directory must exist.
        mode (str, optional): a write mode, ``"w"``/``"wt"`` or ``"wb"``. (Default: ``"w"``)
        **open_kwargs: passed to ``open`` (``encoding``, ``newline``, ...).

    Yields:
        IO: the temp file's object; write to it as to ``open(path, mode)``.

    Raises:
        ValueError: ``mode`` is not a plain write mode.

    Example:
        >>> with atomic_write("out/report.txt") as f:
        ...     f.write("accuracy 0.93\\n")
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write mode must be 'w', 'wt' or 'wb', got {mode!r}: "
                         "appending or reading cannot be made atomic by replacement")
    path = Path(path)
    fd, tmp = _make_temp(path)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Atomically replace ``path`` with ``text`` (written with ``encoding``, newlines as given)."""
    with atomic_write(path, "w", encoding=encoding, newline="") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Atomically replace ``path`` with ``obj`` as JSON (plus a trailing newline).

    ``obj`` is serialised before anything is written, so an unserialisable value
    raises ``TypeError`` and leaves no trace on disk.
    """
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save(path: str | Path, save_fn: Callable[[Path], object]) -> None:
    """Atomically replace ``path`` with whatever ``save_fn`` writes to a temp path.

    For writers that want a path rather than a file object: ``torch.save``,
    ``fig.savefig``, ``np.save``. The temp path keeps ``path``'s suffix, so
    extension-sniffing writers pick the right format and add no extension of their own.

    Args:
        path (str | Path): target file; its directory must exist.
        save_fn (Callable[[Path], object]): writes the complete file at the path it is given.

    Example:
        >>> atomic_save("ckpt/last.pt", lambda tmp: torch.save(state, tmp))
    """
    path = Path(path)
    fd, tmp = _make_temp(path)
    os.close(fd)
    try:
        save_fn(tmp)
        with open(tmp, "rb+") as f:  # save_fn may have closed without fsync
            os.fsync(f.fileno())
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
