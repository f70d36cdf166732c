"""Entry point: ``python -m speechrnn.download --dataset-version v0.02 --subset test``.

Fetches a Speech Commands archive into ``--cache-dir``, verifies it and extracts it
safely (``speechrnn.data.speech_commands``), then prints the folder. ``--version``
prints speechrnn's version, as on every command.
"""

from __future__ import annotations

import argparse

from speechrnn.core.cli import version_line
from speechrnn.core.errors import friendly
from speechrnn.data.speech_commands import prepare_speech_commands


@friendly
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m speechrnn.download", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("--dataset-version", default="v0.02", choices=("v0.01", "v0.02"),
                   help="Speech Commands release (default %(default)s)")
    p.add_argument("--subset", default="train", choices=("train", "test"),
                   help="train: the dataset; test: the separately released canonical test set")
    p.add_argument("--cache-dir", default="data/", help="where archives and extracted folders go (default data/)")
    p.add_argument("--base-url", default=None, help="a mirror of the official address")
    a = p.parse_args(argv)
    print(prepare_speech_commands(None, version=a.dataset_version, subset=a.subset, cache_dir=a.cache_dir,
                                  base_url=a.base_url))


if __name__ == "__main__":
    main()
