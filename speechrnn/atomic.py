"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Checkpoints, reports and caches are written to a hidden temp file in the target's
directory, flushed and fsynced, then ``os.replace``-d onto the target (a rename is
atomic within one filesystem), and the directory is fsynced so the rename itself
survives a power cut. If the writer raises, the temp file is removed and the old
target is untouched; if it is killed outright, only a stray ``.<name>.*.tmp<ext>``
file is left beside an intact target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# Read once at import: os.umask can only be read by setting it, which races with threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _make_temp(path: Path) -> tuple[int, Path]:
    """Create ``.<stem>.<random>.tmp<suffix>`` beside ``path``; the suffix is kept so
    writers that infer a format from the extension (savefig, np.save) still work."""
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    # mkstemp creates 0600; give the file the target's mode, or what open() would give it.
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK
    os.chmod(tmp, mode)
    return fd, Path(tmp)


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
