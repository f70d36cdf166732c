"""Entry point: ``python -m speechrnn.synth --root data/synthetic --seed 0`` generates (or reuses) a corpus.

Without arguments it builds the embedded default corpus that ``python -m speechrnn.train``
synthesises by itself (``speechrnn.data.synthetic``; its defaults are ``conf/data/synthetic.yaml``'s),
so training then reuses it; its options build one with other settings up front.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from speechrnn.core.cli import version_line
from speechrnn.core.errors import friendly
from speechrnn.data.synthetic import MARKER, generate_corpus
from speechrnn.training.config import compose


@friendly
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m speechrnn.synth", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=version_line())
    data = compose("train").data  # the embedded default: what training would synthesise by itself
    embedded = OmegaConf.to_container(data.synth, resolve=True)
    p.add_argument("--root", default=data.root, help="corpus folder (default: %(default)s)")
    p.add_argument("--words", default=",".join(embedded.pop("words")),
                   help="comma-separated (default: the 35 of v0.02)")
    for name, default in {**embedded, "clips_per_speaker": 1, "noise_seconds": 60.0}.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                       help="(default: %(default)s)")
    a = vars(p.parse_args(argv))
    marker = Path(a["root"]) / MARKER
    before = marker.stat().st_mtime_ns if marker.exists() else None
    start = time.perf_counter()
    root = generate_corpus(a.pop("root"), words=a.pop("words").split(","), **a)
    seconds, clips = time.perf_counter() - start, json.loads((root / MARKER).read_text())["clips"]
    n, v, t = a["num_speakers"], a["val_speakers"], a["test_speakers"]
    neural = f" + {a['neural_speakers']} neural speakers (train)" if a["neural_speakers"] else ""
    print(f"{root}: {clips} clips, {n} speakers ({n - v - t} train / {v} val / {t} test){neural}, {seconds:.1f} s"
          + (" (already complete, reused)" if marker.stat().st_mtime_ns == before else ""))


if __name__ == "__main__":
    main()
