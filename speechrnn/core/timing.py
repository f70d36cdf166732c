"""Timing small calls fairly: contenders interleaved round by round, each keeping its best round.

On a shared machine the minimum is the least disturbed estimate, and interleaving gives
every contender the same disturbances, so ratios of the results hold better than the times.
"""

from __future__ import annotations

import math
import time
from typing import Callable


def race(contenders: dict[str, Callable[[], object]], sync: Callable[[], None], seconds: float = 0.0,
         rounds: int = 3, min_time: float = 2e-3) -> dict[str, float]:
    """Best seconds per call of each contender over interleaved rounds.

    Runs at least ``rounds`` rounds and goes on until ``seconds`` have passed, so that a
    burst of load from other processes cannot cover every round. Calls too short to
    time alone are repeated until one timing lasts ``min_time``.
    """
    repeats = {}
    for name, fn in contenders.items():  # warm-up: allocator, BLAS and autograd caches
        fn()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        repeats[name] = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-9)))
    best = dict.fromkeys(contenders, math.inf)
    names, start, r = list(contenders), time.perf_counter(), 0
    while r < rounds or time.perf_counter() - start < seconds:
        for name in names if r % 2 == 0 else names[::-1]:  # alternate who goes first
            fn, n = contenders[name], repeats[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
        r += 1
    return best
