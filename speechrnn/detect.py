"""Keyword detection in recordings longer than one clip: which keywords occur, and when.

The recording is cut into 1 s windows every ``hop`` seconds, each window is
classified, and consecutive windows that agree on a keyword above ``threshold``
merge into one detection with start and end times.
"""

from __future__ import annotations

import torch

from speechrnn.labels import SILENCE, UNKNOWN
from speechrnn.model import KeywordSpotter
from speechrnn.predict import predict_proba


def detect(model: KeywordSpotter, wave: torch.Tensor, window: float = 1.0, hop: float = 0.25,
           threshold: float = 0.5) -> dict:
    """Detections in ``wave`` ``(N,)`` at the model's rate, as ``{"label", "score", "topk", "detections"}``."""
    rate = model.frontend.sample_rate
    win, step = int(window * rate), int(hop * rate)
    pad = (-(len(wave) - win)) % step if len(wave) > win else win - len(wave)
    windows = torch.nn.functional.pad(wave, (0, pad)).unfold(0, win, step)  # (K, win)
    probs = predict_proba(model, windows)  # (K, C)
    score, idx = probs.max(-1)
    events: list[dict] = []
    for k, (s, i) in enumerate(zip(score.tolist(), idx.tolist())):
        label = model.labels[i]
        if label in (SILENCE, UNKNOWN) or s < threshold:
            continue
        start, end = k * hop, k * hop + window
        if events and events[-1]["label"] == label and start <= events[-1]["end"]:
            events[-1]["end"], events[-1]["score"] = end, max(events[-1]["score"], round(s, 4))
        else:
            events.append({"label": label, "start": start, "end": end, "score": round(s, 4)})
    for e in events:
        e["end"] = min(e["end"], len(wave) / rate)
    best = max(events, key=lambda e: e["score"]) if events else None
    return {"label": " ".join(e["label"] for e in events) or SILENCE,
            "score": best["score"] if best else 0.0,
            "topk": [{"label": e["label"], "score": e["score"]} for e in events],
            "detections": events}
