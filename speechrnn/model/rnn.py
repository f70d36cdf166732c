"""The basic (Elman) recurrent network that encodes feature frames.

    h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h),   y_t = W_hy h_t + b_y,   h_0 = 0

``ElmanCell`` holds one layer's weights and takes one step; ``ElmanRNN`` stacks
cells, unrolls them over the frames of a clip (``forward``) or one frame at a time
for streaming (``init_state``, ``step``: every encoder of ``speechrnn.model.spotter`` has the
same three calls), and owns the optional readout W_hy, b_y.

Speed: unrolling with autograd records ~5 small ops per frame. ``_ElmanScan`` instead
hoists the input projection into one matmul, updates that buffer in place frame by frame
(one ``addmm_`` and one in-place tanh, ``_tanh_``), and writes backpropagation through time by hand:
forward+backward on CPU is about 1.2x (H=256) to 1.4x (H=128) faster than torch.nn.RNN,
with the same outputs and gradients.
The catch: no double backward (gradient penalties) through ``forward``. A streaming
``step`` that nothing records (inference) takes ``ElmanCell.lean_step``: two ``addmm``
and an in-place tanh per layer, no autograd bookkeeping.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from speechrnn.core.machine import cpu_vendor

W_HH_INITS = ("orthogonal", "identity", "uniform", "spectral")
W_XH_INITS = ("xavier", "uniform")

# torch's CPU tanh calls MKL's vector math, whose optimisations Intel promises on its own CPUs only: on a 2-core
# AMD EPYC one (256, 256) tanh_ takes 72 us (one thread: 139, ~2 ns an element) against 27 us for the four passes
# of 2 sigmoid(2z) - 1 (torch's own vectorised sigmoid), where an Ice Lake Xeon's tanh_ takes 17 us against 46.
SLOW_CPU_TANH = torch.backends.mkl.is_available() and cpu_vendor() not in (None, "GenuineIntel")
# Below this many elements one tanh_ beats the four passes there too (a streaming step's (1..12, 128)):
# 2048 took 4.9 us against 6.8 on that AMD EPYC, 8192 18.0 against 8.6 (one thread).
SIGMOID_TANH_MIN_NUMEL = 4096


def _tanh_(z: Tensor) -> Tensor:
    """In-place tanh; where the CPU's tanh is slow (``SLOW_CPU_TANH``) and z is large, as 2 sigmoid(2z) - 1
    (the same values but for rounding, ~1e-7)."""
    if SLOW_CPU_TANH and z.numel() >= SIGMOID_TANH_MIN_NUMEL and z.is_cpu:
        return z.mul_(2).sigmoid_().mul_(2).sub_(1)
    return z.tanh_()


class _ElmanScan(torch.autograd.Function):
    """All frames of one layer, time-major, with hand-written backprop through time."""

    @staticmethod
    def forward(ctx, x, h0, W_xh, W_hh, b_h):  # x (T, B, I), h0 (B, H)
        T, B, _ = x.shape
        hs = torch.addmm(b_h, x.flatten(0, 1), W_xh.t()).view(T, B, -1)  # (T, B, H) W_xh x_t + b_h
        h = h0
        for t in range(T):  # frame t's slot turns into h_t in place
            h = _tanh_(hs[t].addmm_(h, W_hh.t()))  # (B, H)
        ctx.save_for_backward(x, h0, W_xh, W_hh, hs)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs):  # (T, B, H) dL/dh_t from the layer's outputs
        x, h0, W_xh, W_hh, hs = ctx.saved_tensors
        d = torch.empty_like(hs)  # (T, B, H) dL/da_t, a_t = pre-activation; grad_hs may be strided
        T = len(d)
        for t in reversed(range(T)):
            # dL/dh_t: from the output, plus through a_{t+1} = ... + W_hh h_t (written into d[t], no clone)
            g = grad_hs[t] if t + 1 == T else torch.addmm(grad_hs[t], d[t + 1], W_hh, out=d[t])
            # dL/da_t = dL/dh_t * (1 - h_t^2), one fused kernel (aten's own tanh backward)
            torch.ops.aten.tanh_backward.grad_input(g, hs[t], grad_input=d[t])
        h_prev = hs[:-1].flatten(0, 1)  # (T-1)*B rows of h_{t-1}; h_0 handled apart
        dW_hh = torch.addmm(d[0].t() @ h0, d[1:].flatten(0, 1).t(), h_prev)  # sum_t (dL/da_t)^T h_{t-1}
        d2 = d.flatten(0, 1)  # (T*B, H)
        dx = (d2 @ W_xh).view_as(x) if ctx.needs_input_grad[0] else None
        dh0 = d[0] @ W_hh if ctx.needs_input_grad[1] else None
        return dx, dh0, d2.t() @ x.flatten(0, 1), dW_hh, d2.sum(0)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class ElmanCell(nn.Module):
    r"""One Elman RNN layer: h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h).

    The new state mixes the current frame (through W_xh) with the previous state
    (through W_hh) and squashes the sum into (-1, 1). Gradients through time are
    products of W_hh^T diag(1 - h_t^2), so the spectral radius of W_hh decides whether
    they vanish (< 1) or may explode (> 1): hence the choice of ``w_hh_init``.

    Args:
        input_size (int): features per frame, I.
        hidden_size (int): state size, H.
        w_hh_init (str, optional): "orthogonal" (orthogonal times gain), "identity"
            (gain * I, IRNN-style), "uniform" (gain * U(-1/sqrt(H), 1/sqrt(H)), the
            torch.nn.RNN default when gain = 1) or "spectral" (Gaussian rescaled to
            spectral radius gain). (Default: ``"orthogonal"``)
        w_hh_gain (float, optional): scale of W_hh, > 0. (Default: ``1.0``)
        w_xh_init (str, optional): "xavier" (Glorot uniform) or "uniform"
            (U(-1/sqrt(H), 1/sqrt(H))). (Default: ``"xavier"``)

    Parameters: W_xh (H, I), W_hh (H, H), b_h (H,), with b_h = 0 at init.
    Shapes: ``forward(x_t (B, I), h_prev (B, H)) -> h_t (B, H)``.
    """

    def __init__(self, input_size: int, hidden_size: int, w_hh_init: str = "orthogonal",
                 w_hh_gain: float = 1.0, w_xh_init: str = "xavier"):
        super().__init__()
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        if w_hh_init not in W_HH_INITS:
            raise ValueError(f"w_hh_init must be one of {W_HH_INITS}, got {w_hh_init!r}")
        if w_xh_init not in W_XH_INITS:
            raise ValueError(f"w_xh_init must be one of {W_XH_INITS}, got {w_xh_init!r}")
        if isinstance(w_hh_gain, bool) or not isinstance(w_hh_gain, (int, float)) \
                or not math.isfinite(w_hh_gain) or w_hh_gain <= 0:
            raise ValueError(f"w_hh_gain must be a finite number > 0, got {w_hh_gain!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.w_hh_init, self.w_hh_gain, self.w_xh_init = w_hh_init, float(w_hh_gain), w_xh_init
        self.W_xh = nn.Parameter(torch.empty(hidden_size, input_size))
        self.W_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b_h = nn.Parameter(torch.empty(hidden_size))
        self._transposed: tuple = ()  # lean_step's (W_xh, W_hh, their data_ptrs, W_xh^T, W_hh^T), made on first use
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        H, gain, bound = self.hidden_size, self.w_hh_gain, 1 / math.sqrt(self.hidden_size)
        if self.w_xh_init == "xavier":
            nn.init.xavier_uniform_(self.W_xh)
        else:
            nn.init.uniform_(self.W_xh, -bound, bound)
        if self.w_hh_init == "orthogonal":
            nn.init.orthogonal_(self.W_hh, gain=gain)
        elif self.w_hh_init == "identity":
            self.W_hh.copy_(gain * torch.eye(H))
        elif self.w_hh_init == "uniform":
            nn.init.uniform_(self.W_hh, -gain * bound, gain * bound)
        else:  # "spectral": eigenvalues in float64 so the radius lands on gain
            W = torch.randn(H, H, dtype=torch.float64)
            self.W_hh.copy_(W * (gain / torch.linalg.eigvals(W).abs().max()))
        nn.init.zeros_(self.b_h)

    def forward(self, x_t: Tensor, h_prev: Tensor) -> Tensor:
        """One step, written as the formula (ElmanRNN.forward runs the fast _ElmanScan)."""
        return torch.tanh(F.linear(x_t, self.W_xh, self.b_h) + h_prev @ self.W_hh.t())  # (B, H)

    def lean_step(self, x_t: Tensor, h_prev: Tensor) -> Tensor:
        """The same step for when nothing records it (no autograd, no tracer): x_t (B, I), h_prev (B, H) -> (B, H).

        Two ``addmm`` (the bias is the first one's input) and an in-place tanh: three kernels
        and one new tensor where the formula takes four of each. At streaming sizes the step
        is bound by per-call overhead, not arithmetic, so it makes no call it can spare: the
        weights come from ``_parameters`` (``nn.Module.__getattr__`` costs ~0.5 us a name) and
        their transposes from ``_weights_t`` (a ``.t()`` is a dispatch, ~1 us).
        """
        W_xh_t, W_hh_t = self._weights_t()
        return _tanh_(torch.addmm(self._parameters["b_h"], x_t, W_xh_t).addmm_(h_prev, W_hh_t))

    def _weights_t(self) -> tuple[Tensor, Tensor]:
        """W_xh^T (I, H) and W_hh^T (H, H): views of the weights, made once and kept while they stay valid.

        A view shares its weight's storage, so ``load_state_dict`` and any in-place update show
        through it. It is made anew when a weight is replaced (another Parameter) or given new
        storage (``.to()``, ``.double()``, ``p.data = ...``): a new storage never has the kept
        view's address, which the view holds alive.
        """
        p = self._parameters
        W_xh, W_hh = p["W_xh"], p["W_hh"]
        kept = self._transposed
        if not kept or kept[0] is not W_xh or kept[1] is not W_hh \
                or kept[2] != W_xh.data_ptr() or kept[3] != W_hh.data_ptr():
            with torch.no_grad():  # views for inference: no link to autograd's graph
                kept = self._transposed = (W_xh, W_hh, W_xh.data_ptr(), W_hh.data_ptr(), W_xh.t(), W_hh.t())
        return kept[4], kept[5]

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, w_hh_init={self.w_hh_init!r}, "
                f"w_hh_gain={self.w_hh_gain}, w_xh_init={self.w_xh_init!r}")


class ElmanRNN(nn.Module):
    r"""Stacked Elman RNN unrolled over frames, with an optional linear readout.

    Layer l reads the hidden states of layer l-1 (layer 0 reads the frames).

    Args:
        input_size (int): features per frame, I.
        hidden_size (int): state size of every layer, H.
        output_size (int or None, optional): O; if given, ``readout`` applies
            y = W_hy h + b_y. (Default: ``None``)
        num_layers (int, optional): stacked layers, L. (Default: ``1``)
        w_hh_init, w_hh_gain, w_xh_init: as in :class:`ElmanCell`, for every layer.
        dropout (float, optional): in training, dropout on the hidden states that layer l
            passes up to layer l+1 (not on the last layer's, nor inside the recurrence),
            as ``torch.nn.RNN``'s ``dropout``. (Default: ``0``)

    Shapes:
        ``forward(x (B, T, I), h0 (L, B, H) or None) -> (hs (B, T, H), h_n (L, B, H))``;
        hs is every hidden state of the top layer, a (B, T, H) view of time-major
        storage (call ``.contiguous()`` before ``.view``).

    Example:
        >>> rnn = ElmanRNN(40, 128, output_size=12)
        >>> hs, h_n = rnn(torch.randn(8, 101, 40))
        >>> logits = rnn.readout(h_n[-1])  # (8, 12)
    """

    readout_names = ("W_hy", "b_y")  # the readout's weight (O, H) and bias (O,): row o is output o

    def __init__(self, input_size: int, hidden_size: int, output_size: int | None = None,
                 num_layers: int = 1, w_hh_init: str = "orthogonal", w_hh_gain: float = 1.0,
                 w_xh_init: str = "xavier", dropout: float = 0.0):
        super().__init__()
        _check_positive_int("num_layers", num_layers)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if output_size is not None:
            _check_positive_int("output_size", output_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.output_size, self.num_layers, self.dropout = output_size, num_layers, dropout
        self.layers = nn.ModuleList(
            ElmanCell(input_size if l == 0 else hidden_size, hidden_size, w_hh_init, w_hh_gain, w_xh_init)
            for l in range(num_layers))
        self._streamed = None  # (state, its h_t, B): what the lean one-layer step returned last (see step)
        if output_size is not None:
            readout = nn.Linear(hidden_size, output_size)  # nn.Linear's init
            self.W_hy, self.b_y = readout.weight, readout.bias

    def _initial_state(self, h: Tensor | None, B: int, like: Tensor) -> Tensor:
        if h is None:
            return like.new_zeros(self.num_layers, B, self.hidden_size)  # like x: its device and dtype
        if h.shape != (self.num_layers, B, self.hidden_size):
            raise ValueError(f"hidden state must have shape (L, B, H) = "
                             f"{(self.num_layers, B, self.hidden_size)}, got {tuple(h.shape)}")
        return h

    def init_state(self, batch: int) -> Tensor:
        """h_0 = 0 for ``batch`` sequences: ``(L, B, H)`` on the weights' device."""
        return self.layers[0].W_hh.new_zeros(self.num_layers, batch, self.hidden_size)

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Unroll over all frames: x (B, T, I), h0 (L, B, H) or zeros -> hs (B, T, H), h_n (L, B, H).

        Run eagerly, it is ``_ElmanScan`` (fast, hand-written BPTT); under a tracer or exporter
        (``torch.jit.trace``, ``torch.onnx.export``, ``torch.compile``) the same recurrence
        by ``step``, in plain ops they can record."""
        if x.dim() != 3 or x.shape[1] == 0 or x.shape[2] != self.input_size:
            raise ValueError(f"x must have shape (B, T >= 1, I={self.input_size}), got {tuple(x.shape)}")
        h0 = self._initial_state(h0, x.shape[0], x)  # (L, B, H)
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            hs, state = [], h0
            for t in range(x.shape[1]):
                h_t, state = self.step(x[:, t], state)  # (B, H), (L, B, H)
                hs.append(h_t)
            return torch.stack(hs, dim=1), state  # (B, T, H), (L, B, H)
        hs = x.transpose(0, 1).contiguous()  # (T, B, I): one frame is one contiguous slab
        h_n = []
        for l, (cell, h) in enumerate(zip(self.layers, h0)):
            if l:  # between layers only: h_t itself stays exactly tanh(W_xh x_t + W_hh h_{t-1} + b_h)
                hs = F.dropout(hs, self.dropout, self.training)
            hs = _ElmanScan.apply(hs, h, cell.W_xh, cell.W_hh, cell.b_h)  # (T, B, H)
            h_n.append(hs[-1])
        return hs.transpose(0, 1), torch.stack(h_n)  # (B, T, H), (L, B, H)

    def step(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One frame, for streaming: x_t (B, I), state (L, B, H) or zeros -> (h_t (B, H) of the top layer, new state).

        Unless something records the step (autograd on a tensor that requires grad, as the
        gradient diagnostics; a tracer or compiler, as export), every layer takes
        ``ElmanCell.lean_step``, the inference path; otherwise the formula ``ElmanCell.forward``,
        which they can record. Both give the same numbers to float rounding.

        With one layer, the lean path returns the state ``h_t.unsqueeze(0)``, a view of h_t; given
        that state back (as a stream does, ``speechrnn.inference.streaming.EncoderStream``) it
        reads h_t from where it kept it rather than selecting it again, a dispatch (~1 us) of a
        ~10 us step. A view shares h_t's storage, so a state changed in place (a row reset)
        is the same numbers either way."""
        shape = x_t.shape  # read once: each tensor attribute is a call, and this is the hot path
        if len(shape) != 2 or shape[1] != self.input_size:
            raise ValueError(f"x_t must have shape (B, I={self.input_size}), got {tuple(shape)}")
        B = shape[0]
        lean = not self._recorded(x_t, state)
        # at B=1 a step is a few microseconds, so the lean path spares every call it can: the cells
        # without nn.Module.__getattr__ (~1 us a name), and one layer without unbind and stack
        cells = self._modules["layers"]._modules.values()
        if lean and self.num_layers == 1:
            cell, = cells
            streamed = self._streamed
            if streamed is not None and state is streamed[0] and B == streamed[2]:
                h_prev = streamed[1]  # (B, H): the storage of state (1, B, H)
            else:
                h_prev = self._initial_state(state, B, x_t)[0]  # (B, H)
            h_t = cell.lean_step(x_t, h_prev)  # (B, H)
            state = h_t.unsqueeze(0)  # (1, B, H)
            self.__dict__["_streamed"] = (state, h_t, B)  # a plain attribute: not nn.Module.__setattr__ (~1 us)
            return h_t, state
        state = self._initial_state(state, B, x_t)  # (L, B, H)
        h_new = []
        for l, (cell, h_prev) in enumerate(zip(cells, state.unbind())):
            if l and self.training:  # as forward: dropout only on what a layer passes up
                x_t = F.dropout(x_t, self.dropout, self.training)
            x_t = cell.lean_step(x_t, h_prev) if lean else cell(x_t, h_prev)  # (B, H), the input of the next layer
            h_new.append(x_t)
        return x_t, torch.stack(h_new)  # (B, H), (L, B, H)

    def _recorded(self, x_t: Tensor, state: Tensor | None) -> bool:
        """Whether a step on ``x_t`` and ``state`` (or zeros) is recorded: by a tracer or compiler, or by autograd."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return True
        return torch.is_grad_enabled() and (x_t.requires_grad or (state is not None and state.requires_grad)
                                            or any(p.requires_grad for p in self.parameters()))

    @staticmethod
    def hidden(state: Tensor) -> Tensor:
        """The top layer's h in a state (or in a state's gradient): (L, B, H) -> (B, H)."""
        return state[-1]

    def readout(self, h: Tensor) -> Tensor:
        """y = W_hy h + b_y on the last axis: (..., H) -> (..., O)."""
        if self.output_size is None:
            raise RuntimeError("readout needs W_hy: build ElmanRNN with output_size")
        return F.linear(h, self.W_hy, self.b_y)  # (..., O)

    @torch.no_grad()
    def spectral_radius(self) -> Tensor:
        """max |eigenvalue| of each layer's W_hh, shape (L,): > 1 lets states and gradients grow."""
        return torch.stack([torch.linalg.eigvals(cell.W_hh).abs().max() for cell in self.layers])  # (L,)
