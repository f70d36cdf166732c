"""The Hydra configuration: where ``conf/`` is, composing it, and checking what it gives.

``conf/`` sits at the top of the repository and is shipped inside the installed package
as ``speechrnn/conf`` (``pyproject.toml`` maps it), so the commands find it from a source
tree and from a plain ``pip install .`` alike. The resolvers the configs use are
registered here, before anything is composed. Config mistakes become ``ConfigError``
one-liners: a value Hydra says is missing (``???``), one it cannot merge, and a string
given where a ``_target_`` takes a number (``check_config_types``).
"""

from __future__ import annotations

import functools
import types
import typing
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

import speechrnn
from speechrnn.core.cli import answers_version
from speechrnn.core.errors import ConfigError, friendly
from speechrnn.core.machine import keep_freed_memory
from speechrnn.data.synthetic import synthetic_dir, synthetic_words

NUMBERS = {int, float, bool, type(None)}

# conf/data/synthetic.yaml names the embedded corpus's folder and words by the task
OmegaConf.register_new_resolver("synthetic_dir", synthetic_dir, replace=True)
OmegaConf.register_new_resolver("synthetic_words", synthetic_words, replace=True)


def conf_dir() -> Path:
    """The ``conf/`` folder: inside the installed package, else beside the package in the source tree."""
    package = Path(speechrnn.__file__).resolve().parent
    installed = package / "conf"
    return installed if installed.is_dir() else package.parent / "conf"


def compose(name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``conf/<name>.yaml`` with ``overrides``, as the command would see it (for tests and sweeps)."""
    with hydra.initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra.compose(name, overrides=list(overrides))


def command(name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Make ``fn(cfg)`` the Hydra command of ``conf/<name>.yaml``: its mistakes one-line errors,
    ``--version`` answered as on every command, and freed memory kept for reuse (``keep_freed_memory``)."""

    def decorate(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(fn)
        def run(cfg: DictConfig) -> Any:
            keep_freed_memory()
            return fn(cfg)

        return answers_version(hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=name)(
            friendly(config_errors(run))))

    return decorate


def config_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; OmegaConf's errors for a missing or unusable value become ``ConfigError``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MissingMandatoryValue as err:
            raise ConfigError(f"{err.full_key} has no value (??? in the config); set it, e.g. {err.full_key}=...") \
                from None
        except OmegaConfBaseException as err:
            raise ConfigError(f"{str(err).splitlines()[0]} (key {getattr(err, 'full_key', '?')})") from None

    return wrapper


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
