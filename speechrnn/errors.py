"""One-line errors for the entry points: the product's own failures never print a traceback.

Each module raises its error where the bad value enters (``AudioError``,
``DatasetError``, ``CheckpointError``, ...); ``friendly`` turns those into one line
on stderr and exit status 2, as it does a config value that is missing (``???``) or
of the wrong type (``check_config_types``). A closed standard output (``... | head``) ends
the command quietly, as it ends any Unix tool. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import types
import typing
from typing import Any, Callable

from hydra.errors import InstantiationException
from hydra.utils import get_object
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from speechrnn.audio import AudioError
from speechrnn.checkpoint import CheckpointError
from speechrnn.dataset import DatasetError
from speechrnn.download import ChecksumError, DatasetUnavailable, UnsafeArchiveError


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient; the message names the step and files."""


class ConfigError(ValueError):
    """A config value the code cannot take; the message names the key and what it expects."""


USER_ERRORS = (AudioError, CheckpointError, ChecksumError, ConfigError, DatasetError, DatasetUnavailable,
               NonFiniteLossError, UnsafeArchiveError)
NUMBERS = {int, float, bool, type(None)}
EXIT_BROKEN_PIPE = 128 + getattr(signal, "SIGPIPE", 13)  # 141, the status of a tool killed by SIGPIPE


def _numbers_only(hint: Any) -> bool:
    """Whether a parameter annotation admits nothing but numbers, booleans or None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return all(_numbers_only(h) for h in typing.get_args(hint))
    return hint in NUMBERS


def _type_names(hint: Any) -> str:
    return " or ".join(h.__name__ for h in typing.get_args(hint) or (hint,) if h is not type(None))


def check_config_types(cfg: DictConfig, key: str = "") -> None:
    """Refuse a string given where a ``_target_`` takes only numbers (``trainer.max_epochs=abc``).

    Hydra passes ``key=value`` overrides through untyped, and a wrong type would otherwise
    surface deep inside Lightning or torch. Parameters whose annotations admit anything
    but numbers are left alone.

    Raises:
        ConfigError: names the key, the value and the expected type.
    """
    hints: dict[str, Any] = {}
    if "_target_" in cfg:
        try:
            obj = get_object(cfg._target_)
            hints = typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj)
        except Exception:  # unresolvable annotations: nothing to check against
            hints = {}
    for name in cfg:
        try:
            value = cfg[name]
        except OmegaConfBaseException:  # ??? or an interpolation: reported when it is used
            continue
        if isinstance(value, DictConfig):
            check_config_types(value, f"{key}{name}.")
        elif isinstance(value, str) and name in hints and _numbers_only(hints[name]):
            raise ConfigError(f"{key}{name}={value!r} has the wrong type: "
                              f"{key}{name} takes {_type_names(hints[name])}")


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; a user error prints ``error: <one line>`` and exits with status 2.

    When the reader of standard output has gone (``python -m speechrnn.transcribe ... | head -2``),
    the command stops without a word and exits with ``EXIT_BROKEN_PIPE``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                result = fn(*args, **kwargs)
                sys.stdout.flush()  # output still buffered would meet the closed pipe after this handler
                return result
            except InstantiationException as err:  # a user error raised in a class Hydra built
                raise (err.__cause__ if isinstance(err.__cause__, USER_ERRORS) else err) from None
        except BrokenPipeError:
            # stdout goes to devnull, so the interpreter's last flush of what is buffered does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except USER_ERRORS as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            sys.exit(2)
        except MissingMandatoryValue as err:
            print(f"error: {err.full_key} has no value (??? in the config); set it, e.g. {err.full_key}=...",
                  file=sys.stderr)
            sys.exit(2)
        except OmegaConfBaseException as err:
            print(f"error: {str(err).splitlines()[0]} (key {getattr(err, 'full_key', '?')})", file=sys.stderr)
            sys.exit(2)

    return wrapper
