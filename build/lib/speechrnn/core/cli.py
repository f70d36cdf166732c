"""What every command shares on its command line: the ``--version`` answer."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

from speechrnn import __version__


def version_line() -> str:
    """What ``--version`` prints on every command: ``speechrnn <version> (torch <version>)``.

    torch's own ``__version__`` names its build (``+cpu``, ``+cu130``), which its package
    metadata leaves out; every command but ``download`` has imported torch by then anyway.
    """
    import torch

    return f"speechrnn {__version__} (torch {torch.__version__})"


def answers_version(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``@hydra.main`` entry point so that ``--version`` prints ``version_line()`` and exits 0.

    Hydra owns the command line of ``train`` and ``evaluate``, and its own ``--version``
    prints Hydra's version; the argparse commands use ``action="version"`` instead.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "--version" in sys.argv[1:]:
            print(version_line())
            sys.exit(0)
        return main(*args, **kwargs)

    return wrapper
