"""Streaming keyword spotting: audio in chunks of any size -> keyword posteriors, state kept across chunks.

Four pieces, each carrying its own state from one chunk to the next:

* ``FeatureStream`` runs the MFCC frontend on a stream. It keeps the samples after the
  last complete frame (fewer than ``win`` of them, at least ``win - hop``), computes
  each new frame once (``center=False``: frame t covers samples [t * hop, t * hop + win)),
  delays the frames by 2 per order of deltas, because a delta needs the 2 frames after
  it, and concatenates ``stack`` frames into one RNN step. Fed a whole recording in
  chunks and then ``flush()``-ed, it gives exactly ``MFCC.forward`` of the recording
  (deltas' replicated edges included), up to a causal mean normalisation, which is:
* ``RunningMean``: the running mean of ``MFCC(cmn="causal")`` subtracted from B streams
  of steps, each with its own running sum, restarted where its window starts.
* ``EncoderStream`` advances B recurrent states one step at a time with the encoder's
  own ``step`` (the Elman RNN's, or the GRU/LSTM's with its state carried over).
* ``StreamingSpotter`` joins them and turns hidden states into posteriors.

Why several staggered states. The model was trained to classify the last hidden state
of a 1 s clip that starts from h_0 = 0. A single state that is never reset sees an
ever-longer history it was never trained on and drifts; resetting it once a second
gives one posterior per second and splits words that straddle the reset; re-running
the RNN over the last second at every step recomputes the window. Instead, a new
state starts (from zero) at every RNN step and each state lives for exactly one clip,
K = ``num_frames(1 s)`` steps (12 with the default 10 ms hop and ``stack=8``). So K
states are alive at once, staggered by one step; every step updates all of them with
the same new frame (one (K, F) x (F, H) matmul), and the state that has just seen K
steps gives the posterior of the 1 s window it covers, then restarts. Each frame is
computed once and each state update is one step: nothing is recomputed, and the
posterior of the window starting at sample s is exactly the offline model's on
``audio[s : s + 1 s]`` (with deltas, up to the window's edge frames, which offline
see replicated neighbours). Posteriors come every ``hop * stack`` samples (80 ms),
each as soon as the last frame of its window is complete (2 frames later per order of
deltas); the cost is K state updates per step, one batched matmul per layer.

A model with causal mean normalisation (``features.cmn=causal``) streams the same way:
its running mean restarts with each window, so each of the K states also carries its
window's running sum (``RunningMean`` with K rows), and its row of the (K, F) input is
the new frame minus its own window's mean, still one matmul per step. A model with the
whole clip's mean (``features.cmn=clip``) cannot: its first step needs the window's last
frame, so it streams by classifying whole windows (``WindowedSpotter``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from speechrnn.core.audio import as_float
from speechrnn.model.features import MFCC, deltas

CLIP_SECONDS = 1.0  # the length of the training clips, i.e. of the window one posterior covers


class _DeltaStream:
    """``compute_deltas`` (5-frame window, replicated edges) over a stream of frames, 2 frames late."""

    def __init__(self):
        self.buf: Tensor | None = None  # (<= 4, C): the frames the next delta still needs

    def push(self, x: Tensor, final: bool = False) -> Tensor:
        """New frames ``(n, C)`` -> the deltas now computable ``(m, C)``; ``final`` ends the stream."""
        if self.buf is None:
            if len(x) == 0:
                return x
            self.buf = x[:1].expand(2, -1)  # the replicated left edge
        buf = torch.cat([self.buf, x])  # (k, C)
        if final:
            buf = torch.cat([buf, buf[-1:].expand(2, -1)])  # the replicated right edge
        out = deltas(buf[None])[0, 2:-2] if len(buf) > 4 else buf[:0]  # full 5-frame windows only
        self.buf = buf[-4:] if not final else None
        return out  # (k - 4, C)


class FeatureStream:
    """An ``MFCC`` frontend applied to a stream: samples in chunks -> RNN steps.

    Args:
        mfcc (MFCC): the model's frontend (its settings and normalisation statistics).

    Shapes:
        ``push(samples (N,)) -> steps (T, F)`` with ``F = mfcc.dim``; ``T`` counts only steps
        whose frames (and, with deltas, 2 or 4 look-ahead frames) have all arrived. With
        ``cmn="causal"`` these are the steps before the running mean, which depends on where
        a window starts: ``RunningMean`` subtracts it.

    Example:
        >>> mfcc, wave = MFCC(stack=4), torch.randn(16000)
        >>> fs = FeatureStream(mfcc)
        >>> steps = torch.cat([fs.push(c) for c in wave.split(37)] + [fs.flush()])  # (24, 160)
        >>> torch.allclose(steps, mfcc(wave[None])[0], atol=1e-4)
        True
    """

    def __init__(self, mfcc: MFCC):
        if mfcc.cmn == "clip":
            raise ValueError("this model subtracts each clip's whole mean (features.cmn=clip), which needs the "
                             "whole clip before the first step: its frames cannot stream; use WindowedSpotter "
                             "(or train with features.cmn=causal)")
        self.mfcc = mfcc
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample is sample 0."""
        p = self.mfcc.dct
        self.tail = p.new_zeros(0)  # samples after the last complete frame, < win of them
        self.deltas = [_DeltaStream() for _ in range(self.mfcc.deltas)]
        self.pending = [p.new_zeros(0, self.mfcc.n_mfcc) for _ in range(1 + self.mfcc.deltas)]  # per part
        self.frames = p.new_zeros(0, self.mfcc.n_mfcc * (1 + self.mfcc.deltas))  # waiting to fill a stack

    @torch.no_grad()
    def push(self, samples: Tensor) -> Tensor:
        """Samples ``(N,)`` (float in [-1, 1], or int16) -> the RNN steps completed ``(T, F)``."""
        buf = torch.cat([self.tail, as_float(samples).to(self.tail)])  # (n,)
        win, hop = self.mfcc.win_length, self.mfcc.hop_length
        n = self.mfcc.frames(len(buf))  # frames complete in buf
        c = self.mfcc.cepstra(buf[None, : (n - 1) * hop + win])[0] if n else self.pending[0][:0]  # (n, C)
        self.tail = buf[n * hop:]
        return self._steps(c, final=False)

    @torch.no_grad()
    def flush(self) -> Tensor:
        """End of stream: the steps held back for the deltas' look-ahead ``(T, F)``; then ``reset``."""
        out = self._steps(self.pending[0][:0], final=True)
        self.reset()
        return out

    def _steps(self, c: Tensor, final: bool) -> Tensor:
        """Cepstra ``(n, C)`` -> normalised, deltas appended, frames aligned, stacked steps ``(T, F)``."""
        parts = [self.mfcc.normalise(c)]
        for delta in self.deltas:  # d1 from c, d2 from d1: each part 2 frames later than the one before
            parts.append(delta.push(parts[-1], final))
        self.pending = [torch.cat([p, q]) for p, q in zip(self.pending, parts)]
        n = min(len(p) for p in self.pending)  # frames with every part ready
        frames = torch.cat([self.frames, torch.cat([p[:n] for p in self.pending], dim=-1)])  # (m, C * (1 + deltas))
        self.pending = [p[n:] for p in self.pending]
        steps = self.mfcc.stack_frames(frames)  # (T, F): k consecutive frames per step, as MFCC.forward
        self.frames = frames[len(steps) * self.mfcc.stack:]
        return steps


class RunningMean:
    """``MFCC.subtract_running_mean`` (``cmn="causal"``) over B streams of steps, each with its own sum.

    Args:
        mfcc (MFCC): the model's frontend.
        batch (int, optional): parallel streams, B; each restarts (frame 0 of a clip) at ``reset``. (Default: ``1``)

    Shapes:
        ``push(steps (B, T, F)) -> (B, T, F)``: the steps of ``FeatureStream``, each stream
        minus its own running mean.
    """

    def __init__(self, mfcc: MFCC, batch: int = 1):
        self.mfcc = mfcc
        self.total = mfcc.dct.new_zeros(batch, 1, mfcc.n_mfcc)  # (B, 1, C): sum of each stream's cepstra
        self.seen = mfcc.dct.new_zeros(batch, 1, 1)  # (B, 1, 1): frames in that sum

    def reset(self, rows: int | slice = slice(None)) -> None:
        """Restart the streams ``rows``: their next frame is frame 0 of a clip."""
        self.total[rows] = 0
        self.seen[rows] = 0

    @torch.no_grad()
    def push(self, steps: Tensor) -> Tensor:
        """Steps ``(B, T, F)`` -> the same minus each stream's running mean, frame by frame."""
        B, T, F = steps.shape
        frames = steps.reshape(B, T * self.mfcc.stack, F // self.mfcc.stack)  # (B, T0, D): undo stack_frames
        out, self.total = self.mfcc.subtract_running_mean(frames, self.total, self.seen)
        self.seen = self.seen + frames.shape[1]
        return out.reshape(B, T, F)


class EncoderStream:
    """B recurrent states of an encoder, advanced one step at a time.

    Args:
        encoder (nn.Module): any encoder of ``speechrnn.model.spotter`` (``init_state``, ``step``).
        batch (int, optional): parallel states, B. (Default: ``1``)

    Shapes:
        ``step(x_t (B, F)) -> h_t (B, H)``, the top layer's new hidden state.
    """

    def __init__(self, encoder: nn.Module, batch: int = 1):
        self.encoder = encoder
        self.state = encoder.init_state(batch)  # (..., B, H)

    def reset(self, rows: int | slice = slice(None)) -> None:
        """Set the states ``rows`` back to zero (h_0 = 0, and c_0 = 0 for an LSTM)."""
        self.state[..., rows, :] = 0

    @torch.no_grad()
    def step(self, x_t: Tensor) -> Tensor:
        """One step of every state: ``x_t (B, F) -> h_t (B, H)``."""
        h_t, self.state = self.encoder.step(x_t, self.state)
        return h_t


def window_geometry(fe: MFCC, clip_seconds: float = CLIP_SECONDS) -> tuple[int, int, int, int]:
    """How 1 s windows tile a stream: (clip samples, K RNN steps per clip, stride, context).

    Windows start every ``stride = hop * stack`` samples; a window's frames reach
    ``context = (K * stack - 1) * hop + win`` samples into it, so its posterior is ready then.
    """
    clip_samples = round(clip_seconds * fe.sample_rate)
    window = fe.num_frames(clip_samples)  # K
    if window < 1:
        raise ValueError(f"clip_seconds={clip_seconds} is shorter than one RNN step "
                         f"({fe.win_length + (fe.stack - 1) * fe.hop_length} samples)")
    return clip_samples, window, fe.hop_length * fe.stack, (window * fe.stack - 1) * fe.hop_length + fe.win_length


class StreamingSpotter:
    """Posteriors of every 1 s window of a stream, one per RNN step, from K staggered states.

    Args:
        model (KeywordSpotter): a trained model (frontend, encoder, labels).
        clip_seconds (float, optional): the window a posterior covers, the training clip
            length. (Default: ``1.0``)

    Shapes:
        ``push(samples (N,)) -> (starts (P,), probs (P, C))``: ``starts[i]`` is the first
        sample of the window whose posterior is ``probs[i]``; one every ``stride`` samples.

    Example:
        >>> spotter = StreamingSpotter(model)
        >>> for chunk in chunks:  # any sizes
        ...     starts, probs = spotter.push(chunk)
        >>> starts, probs = spotter.flush()
    """

    def __init__(self, model: nn.Module, clip_seconds: float = CLIP_SECONDS):
        fe = model.frontend
        self.model, self.rate = model.eval(), fe.sample_rate
        self.clip_samples, self.window, self.stride, self.context = window_geometry(fe, clip_seconds)
        self.features = FeatureStream(fe)
        self.states = EncoderStream(model.encoder, batch=self.window)
        self.means = RunningMean(fe, batch=self.window) if fe.cmn == "causal" else None  # one sum per state
        self.steps = 0  # RNN steps taken since the start of the stream

    def push(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        """A chunk of samples ``(N,)`` -> posteriors of the windows it completes."""
        return self._run(self.features.push(samples))

    def flush(self, pad: bool = True) -> tuple[Tensor, Tensor]:
        """End of stream; ``pad`` adds silence so the last samples are covered by whole windows.

        Afterwards the spotter is ready for a new stream."""
        x = self.features.push(torch.zeros(self.clip_samples - self.stride)) if pad else None
        x = torch.cat([x, self.features.flush()]) if x is not None else self.features.flush()
        out = self._run(x)
        self.states.reset()
        if self.means is not None:
            self.means.reset()
        self.steps = 0
        return out

    @torch.no_grad()
    def _run(self, x: Tensor) -> tuple[Tensor, Tensor]:
        K, starts, hidden = self.window, [], []
        for x_t in x:  # (F,)
            self.states.reset(self.steps % K)  # the window starting at this step begins from h_0 = 0
            x_k = x_t.expand(K, -1)  # (K, F): every state sees the new step
            if self.means is not None:  # ... minus its own window's running mean, which starts here for this one
                self.means.reset(self.steps % K)
                x_k = self.means.push(x_k[:, None])[:, 0]
            h = self.states.step(x_k)  # (K, H)
            if self.steps >= K - 1:  # the state started K - 1 steps ago has now seen a whole clip
                starts.append((self.steps - K + 1) * self.stride)
                hidden.append(h[(self.steps + 1) % K].clone())  # its row restarts at the next step
            self.steps += 1
        C = len(self.model.labels)
        if not hidden:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, C)
        probs = self.model.encoder.readout(torch.stack(hidden)).softmax(-1)  # (P, H) -> (P, C)
        return torch.tensor(starts), probs


class WindowedSpotter:
    """The posteriors of ``StreamingSpotter``, computed by classifying each 1 s window whole.

    For a model that only takes whole clips, such as an exported ONNX graph of fixed
    length: every window is recomputed (K times the work of the staggered states), but
    the windows, their start samples and so their posteriors are the same.

    Args:
        predict (Callable[[Tensor], Tensor]): clips ``(B, clip_samples)`` -> probabilities ``(B, C)``.
        num_labels (int): C.
        rate (int): samples per second.
        clip_samples (int): samples per clip.
        stride (int): samples between window starts (``hop * stack``).
        context (int): samples a window's features reach, ``(K * stack - 1) * hop + win``;
            a window is classified once these have arrived, as its last state completes.
        batch_size (int, optional): windows per ``predict`` call. (Default: ``64``)
    """

    def __init__(self, predict: Callable[[Tensor], Tensor], num_labels: int, rate: int, clip_samples: int,
                 stride: int, context: int, batch_size: int = 64):
        self.predict, self.num_labels, self.rate, self.clip_samples = predict, num_labels, rate, clip_samples
        self.stride, self.context, self.batch_size = stride, context, batch_size
        self.buf, self.offset, self.next_start = torch.zeros(0), 0, 0  # buf[0] is sample `offset`

    def push(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        """A chunk of samples ``(N,)`` -> ``(starts (P,), probs (P, C))`` of the windows it completes."""
        self.buf = torch.cat([self.buf, as_float(samples)])
        end = self.offset + len(self.buf)  # samples seen
        starts = list(range(self.next_start, end - self.context + 1, self.stride))
        windows = [self.buf[s - self.offset: s - self.offset + self.clip_samples] for s in starts]
        windows = [torch.nn.functional.pad(w, (0, self.clip_samples - len(w))) for w in windows]  # (clip,)
        probs = [self.predict(torch.stack(windows[i: i + self.batch_size]))
                 for i in range(0, len(windows), self.batch_size)]
        self.next_start += self.stride * len(starts)
        self.buf, self.offset = self.buf[self.next_start - self.offset:], self.next_start
        if not probs:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, self.num_labels)
        return torch.tensor(starts), torch.cat(probs)  # (P,), (P, C)

    def flush(self, pad: bool = True) -> tuple[Tensor, Tensor]:
        """End of stream, padded with silence as ``StreamingSpotter.flush``."""
        out = self.push(torch.zeros(self.clip_samples - self.stride) if pad else torch.zeros(0))
        self.buf, self.offset, self.next_start = torch.zeros(0), 0, 0
        return out
