"""Tables that commands keep up to date in a README, each between its own two marker lines.

A section ``name`` lies between ``<!-- name:begin -->`` and ``<!-- name:end -->``; writing it
replaces what lies between them and leaves every other byte of the file as it was
(``python -m speechrnn.ablation --readme`` and ``python -m speechrnn.footprint --readme``).
"""

from __future__ import annotations

from pathlib import Path

from speechrnn.core.atomic import atomic_write_text
from speechrnn.core.errors import SpeechRNNError


def markers(section: str) -> tuple[str, str]:
    """The begin and end lines of ``section``."""
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"


def with_table(text: str, table: str, name: str, section: str) -> str:
    """``text`` with ``table`` in place of what lies between ``section``'s marker lines; the rest is left as it is.

    Raises:
        SpeechRNNError: ``text`` (the file ``name``) lacks one begin line followed by one end line.
    """
    begin_line, end_line = markers(section)
    begin, end = text.find(begin_line), text.find(end_line)
    if text.count(begin_line) != 1 or text.count(end_line) != 1 or end < begin:
        raise SpeechRNNError(f"{name}: no place for the table: it needs one line {begin_line} and, below it, one "
                             f"line {end_line}; add them where the table goes")
    return text[:begin + len(begin_line)] + "\n" + table + "\n" + text[end:]


def read_readme(path: str) -> str:
    """The README's text, byte for byte (newlines as they are); a file that cannot be read is a one-line error."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise SpeechRNNError(f"{path}: cannot read it ({err.strerror}); --readme names the README to write "
                             "the table into") from None


def check_readme(path: str, section: str) -> None:
    """Fail now, before hours of work, if the README at ``path`` has no place for ``section``."""
    with_table(read_readme(path), "", path, section)


def write_readme(path: str, table: str, section: str) -> None:
    """Put ``table`` between ``section``'s marker lines in the README at ``path``, atomically."""
    atomic_write_text(path, with_table(read_readme(path), table, path, section))
