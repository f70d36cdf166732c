"""speechrnn.core.timing: interleaved best-of-N timing."""

from speechrnn.core.timing import race


def test_race_interleaves_and_keeps_each_contenders_best():
    calls = {"a": 0, "b": 0}
    fns = {k: (lambda k=k: calls.__setitem__(k, calls[k] + 1)) for k in calls}
    best = race(fns, sync=lambda: None, rounds=4, min_time=0.0)
    assert set(best) == {"a", "b"} and all(0 < t < 1 for t in best.values())
    assert calls["a"] == calls["b"] >= 4 + 2  # warm-up twice, then once per round
