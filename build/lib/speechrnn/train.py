"""Entry point: ``python -m speechrnn.train [group=option ...] [key=value ...]`` trains a keyword spotter.

Hydra composes ``conf/train.yaml`` with the overrides; ``speechrnn.training.fit.train``
does the rest. The run folder (``runs/<time>`` unless ``hydra.run.dir`` says otherwise)
receives the checkpoints, the resolved config, the logs and curves, ``metrics.json`` and
the test report. A killed run resumes with the same overrides plus
``hydra.run.dir=runs/<run> ckpt_path=runs/<run>/checkpoints/last.ckpt``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from speechrnn.training.config import command
from speechrnn.training.fit import train


@command("train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
