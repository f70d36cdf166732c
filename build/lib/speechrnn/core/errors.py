"""The product's errors, and the one handler that prints them as one line.

Every mistake a user can make (a bad clip, a missing dataset, a wrong config value, an
unusable checkpoint) is raised where the bad value enters, as a subclass of
``SpeechRNNError`` whose message names the value and the fix. ``friendly`` wraps every
command: such an error prints ``error: <one line>`` on stderr and exits with status 2,
also when a library (Hydra instantiating a class) wrapped it in its own exception; a
closed standard output (``... | head``) ends the command quietly, as it ends any Unix
tool. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, Callable

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 128 + getattr(signal, "SIGPIPE", 13)  # 141, the status of a tool killed by SIGPIPE


class SpeechRNNError(Exception):
    """A user's mistake or unusable input; ``str(err)`` says what is wrong and what to do."""


class ConfigError(SpeechRNNError, ValueError):
    """A config value the code cannot take; the message names the key and what it expects."""


def user_error(err: BaseException) -> SpeechRNNError | None:
    """``err`` itself, or the ``SpeechRNNError`` it was raised from (``raise ... from``), if any."""
    while err is not None and not isinstance(err, SpeechRNNError):
        err = err.__cause__
    return err


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; a user error prints ``error: <one line>`` and exits with ``EXIT_USER_ERROR``.

    When the reader of standard output has gone (``python -m speechrnn.transcribe ... | head -2``),
    the command stops without a word and exits with ``EXIT_BROKEN_PIPE``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # output still buffered would meet the closed pipe after this handler
            return result
        except BrokenPipeError:
            # stdout goes to devnull, so the interpreter's last flush of what is buffered does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except Exception as err:
            mistake = user_error(err)
            if mistake is None:
                raise
            print(f"error: {' '.join(str(mistake).split())}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
