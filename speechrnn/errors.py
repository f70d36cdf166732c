"""One-line errors for the entry points: the product's own failures never print a traceback.

Each module raises its error where the bad value enters (``AudioError``,
``DatasetError``, ``CheckpointError``, ...); ``friendly`` turns those into one line
on stderr and exit status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

from speechrnn.audio import AudioError
from speechrnn.checkpoint import CheckpointError
from speechrnn.dataset import DatasetError
from speechrnn.download import ChecksumError, DatasetUnavailable, UnsafeArchiveError
from speechrnn.module import NonFiniteLossError

USER_ERRORS = (AudioError, CheckpointError, ChecksumError, DatasetError, DatasetUnavailable, NonFiniteLossError,
               UnsafeArchiveError)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; a user error prints ``error: <one line>`` and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            sys.exit(2)

    return wrapper
