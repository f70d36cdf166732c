"""The Elman RNN: same numbers as torch.nn.RNN, causal, streamable, and initialised as promised."""

import contextlib
import copy
import math
import warnings

import pytest
import torch
import torch.nn as nn

import speechrnn.model.rnn as rnn_module
from speechrnn.model.rnn import SIGMOID_TANH_MIN_NUMEL, ElmanCell, ElmanRNN, _tanh_

B, T, I, H = 3, 7, 5, 6


def copied_torch_rnn(rnn: ElmanRNN) -> nn.RNN:
    """torch.nn.RNN holding our weights: its two biases sum to b_h, so bias_hh = 0."""
    ref = nn.RNN(rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers, nonlinearity="tanh",
                 batch_first=True).to(rnn.layers[0].W_hh.dtype)
    with torch.no_grad():
        for l, cell in enumerate(rnn.layers):
            getattr(ref, f"weight_ih_l{l}").copy_(cell.W_xh)
            getattr(ref, f"weight_hh_l{l}").copy_(cell.W_hh)
            getattr(ref, f"bias_ih_l{l}").copy_(cell.b_h)
            getattr(ref, f"bias_hh_l{l}").zero_()
    return ref


def random_rnn(num_layers: int = 1, dtype=torch.float64, seed: int = 0, **kwargs) -> ElmanRNN:
    """Gain 1.3 and nonzero biases, so saturation, the bias and gradient growth all show."""
    torch.manual_seed(seed)
    rnn = ElmanRNN(I, H, num_layers=num_layers, w_hh_gain=1.3, **kwargs).to(dtype)
    with torch.no_grad():
        for cell in rnn.layers:
            cell.b_h.normal_(0, 0.5)
    return rnn


# the sigmoid form is forced as on a CPU whose tanh is slow, for a batch over SIGMOID_TANH_MIN_NUMEL states
# (float64: float32 sums over so many rows carry more rounding than the test's tolerance)
@pytest.mark.parametrize("dtype, batch, slow_cpu_tanh", [(torch.float64, B, False), (torch.float32, B, False),
                                                         (torch.float64, SIGMOID_TANH_MIN_NUMEL // H + 1, True)],
                         ids=["float64", "float32", "float64-sigmoid-tanh"])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_outputs_and_gradients_equal_torch_rnn(num_layers, with_h0, dtype, batch, slow_cpu_tanh, monkeypatch):
    monkeypatch.setattr(rnn_module, "SLOW_CPU_TANH", slow_cpu_tanh)
    rnn = random_rnn(num_layers, dtype)
    ref = copied_torch_rnn(rnn)
    x = torch.randn(batch, T, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(num_layers, batch, H, dtype=dtype, requires_grad=True) if with_h0 else None
    hs, h_n = rnn(x, h0)
    ref_hs, ref_h_n = ref(x, h0)
    torch.testing.assert_close(hs, ref_hs, atol=1e-5, rtol=0)
    torch.testing.assert_close(h_n, ref_h_n, atol=1e-5, rtol=0)

    # A loss that weights every output differently and reads both hs and h_n.
    w_hs, w_h_n = torch.randn_like(hs), torch.randn_like(h_n)
    inputs = [x] + ([h0] if with_h0 else [])
    ours = [p for cell in rnn.layers for p in (cell.W_xh, cell.W_hh, cell.b_h)]
    theirs = [getattr(ref, f"{name}_l{l}") for l in range(num_layers) for name in ("weight_ih", "weight_hh", "bias_ih")]
    grads = torch.autograd.grad((hs * w_hs).sum() + (h_n * w_h_n).sum(), inputs + ours)
    ref_grads = torch.autograd.grad((ref_hs * w_hs).sum() + (ref_h_n * w_h_n).sum(), inputs + theirs)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("slow_cpu_tanh, numel, sigmoid_form", [(False, SIGMOID_TANH_MIN_NUMEL, False),
                                                                (True, SIGMOID_TANH_MIN_NUMEL, True),
                                                                (True, SIGMOID_TANH_MIN_NUMEL - 1, False)])
def test_only_a_large_state_on_a_cpu_with_a_slow_tanh_takes_the_sigmoid_form(slow_cpu_tanh, numel, sigmoid_form,
                                                                             monkeypatch):
    monkeypatch.setattr(rnn_module, "SLOW_CPU_TANH", slow_cpu_tanh)
    z = torch.randn(numel, dtype=torch.float64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        got = _tanh_(z.clone())
    assert ("aten::sigmoid_" in {e.key for e in prof.key_averages()}) == sigmoid_form
    torch.testing.assert_close(got, torch.tanh(z), atol=1e-12, rtol=0)


def test_weight_gradients_do_not_need_an_input_gradient():
    rnn = random_rnn(num_layers=2)
    x = torch.randn(B, T, I, dtype=torch.float64)
    with_input_grad = torch.autograd.grad(rnn(x.requires_grad_())[0].sum(), list(rnn.parameters()))
    without = torch.autograd.grad(rnn(x.detach())[0].sum(), list(rnn.parameters()))
    for got, want in zip(without, with_input_grad):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_is_causal(num_layers):
    rnn = random_rnn(num_layers)
    x = torch.randn(B, T, I, dtype=torch.float64)
    t = 3
    later_changed = x.clone()
    later_changed[:, t + 1:] = torch.randn(B, T - t - 1, I, dtype=torch.float64)
    hs, _ = rnn(x)
    hs_changed, _ = rnn(later_changed)
    torch.testing.assert_close(hs_changed[:, : t + 1], hs[:, : t + 1], atol=1e-12, rtol=0)
    assert (hs_changed[:, t + 1] - hs[:, t + 1]).abs().min() > 1e-6  # every unit of h_{t+1} sees x_{t+1}


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_step_by_step_reproduces_forward(num_layers, with_h0):
    rnn = random_rnn(num_layers, dtype=torch.float32)  # float32: what streaming runs in
    x = torch.randn(B, T, I)
    h0 = torch.randn(num_layers, B, H) if with_h0 else None
    hs, h_n = rnn(x, h0)
    h = h0
    for t in range(T):
        h_t, h = rnn.step(x[:, t], h)  # (B, H), (L, B, H)
        torch.testing.assert_close(h_t, hs[:, t], atol=1e-6, rtol=0)
    torch.testing.assert_close(h, h_n, atol=1e-6, rtol=0)


NOTHING_NEEDS_GRAD = {  # how inference switches gradients off
    "no_grad": lambda rnn: torch.no_grad(),
    "inference_mode": lambda rnn: torch.inference_mode(),
    "frozen_weights": lambda rnn: contextlib.nullcontext(rnn.requires_grad_(False)),
}


@pytest.mark.parametrize("no_grad", NOTHING_NEEDS_GRAD.values(), ids=NOTHING_NEEDS_GRAD)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_step_without_grad_takes_the_lean_path_and_equals_the_formula(num_layers, no_grad, monkeypatch):
    rnn = random_rnn(num_layers, dtype=torch.float32)  # float32: what streaming runs in
    x_t, state = torch.randn(B, I), torch.randn(num_layers, B, H)
    recorded = rnn.step(x_t, state)  # the weights require grad: autograd records the formula
    assert recorded[1].grad_fn is not None
    lean_cells, lean_step = [], ElmanCell.lean_step
    monkeypatch.setattr(ElmanCell, "lean_step", lambda cell, *args: lean_cells.append(cell) or lean_step(cell, *args))
    with no_grad(rnn):
        lean = rnn.step(x_t, state)
    assert lean_cells == list(rnn.layers)
    for got, want in zip(lean, recorded):  # h_t (B, H), state (L, B, H)
        torch.testing.assert_close(got, want.detach(), atol=1e-6, rtol=0)


def test_a_state_given_back_is_read_as_it_stands_whatever_streams_interleave_or_reset(monkeypatch):
    # the one-layer lean step keeps the h_t of the state it returned last and reads it again when given
    # that state back: after an in-place reset of its rows, or another stream's step in between, it
    # must give what a copy of the model given the same numbers afresh gives
    rnn = random_rnn(1, dtype=torch.float32)
    ref = copy.deepcopy(rnn)
    built = []  # the steps that built their h_prev from the state given, not from the kept h_t
    initial_state = rnn._initial_state
    monkeypatch.setattr(rnn, "_initial_state", lambda *args: built.append(args) or initial_state(*args))
    xs = torch.randn(T, B, I)
    with torch.inference_mode():
        a = b = None
        for t in range(T):
            if t == 3:
                a[:, 1] = 0  # a row restarts, as EncoderStream.reset does
            want = ref.step(xs[t], None if a is None else a.clone())
            built.clear()
            got = rnn.step(xs[t], a)
            assert len(built) == (t == 0 or t % 2 == 0)  # a's state kept unless b stepped since
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, atol=1e-6, rtol=0)
            a = got[1]
            if t % 2:
                b = rnn.step(xs[t].flip(0), b)[1]  # another stream between two of a's steps
        with pytest.raises(ValueError, match="hidden state must have shape"):
            rnn.step(xs[0, :2], a)  # a is (1, B, H): two rows of x_t do not fit it


def test_lean_step_follows_its_weights_when_they_change_in_place_are_replaced_or_moved():
    cell = random_rnn(1, dtype=torch.float32).layers[0]
    x_t, h = torch.randn(B, I), torch.randn(B, H)

    def lean_equals_formula():
        dtype = cell.W_hh.dtype
        with torch.no_grad():
            torch.testing.assert_close(cell.lean_step(x_t.to(dtype), h.to(dtype)), cell(x_t.to(dtype), h.to(dtype)),
                                       atol=1e-6, rtol=0)

    with torch.inference_mode():  # the kept transposes are first made here, then used outside it
        cell.lean_step(x_t, h)
    lean_equals_formula()
    with torch.no_grad():
        cell.W_hh.mul_(-0.5)  # in place: the kept views see it
    lean_equals_formula()
    cell.load_state_dict({name: torch.randn_like(w) for name, w in cell.state_dict().items()})
    lean_equals_formula()
    cell.W_xh.data = torch.randn(H, I)  # the same Parameter, new storage
    lean_equals_formula()
    cell.W_hh = nn.Parameter(torch.randn(H, H))  # another Parameter
    lean_equals_formula()
    cell.double()  # every weight moved to new storage
    lean_equals_formula()


def test_traced_forward_runs_by_steps_and_matches_the_fast_scan():
    rnn = random_rnn(num_layers=2, dtype=torch.float32)
    x = torch.randn(B, T, I)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns that torch.jit is deprecated
        traced = torch.jit.trace(rnn, (x,))
    assert "ElmanScan" not in str(traced.graph)  # the autograd Function has no exportable form
    for got, want in zip(traced(x), rnn(x)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_initial_state_is_zero_by_default():
    rnn = random_rnn(num_layers=1)
    x = torch.randn(B, T, I, dtype=torch.float64)
    cell = rnn.layers[0]
    first = torch.tanh(x[:, 0] @ cell.W_xh.T + cell.b_h)  # h_1 with W_hh h_0 = 0
    torch.testing.assert_close(rnn(x)[0][:, 0], first, atol=1e-12, rtol=0)
    torch.testing.assert_close(rnn.step(x[:, 0])[0], first, atol=1e-12, rtol=0)


def test_parameters_have_the_documented_names_and_shapes():
    rnn = ElmanRNN(I, H, output_size=4, num_layers=2)
    shapes = {name: tuple(p.shape) for name, p in rnn.named_parameters()}
    assert shapes == {
        "layers.0.W_xh": (H, I), "layers.0.W_hh": (H, H), "layers.0.b_h": (H,),
        "layers.1.W_xh": (H, H), "layers.1.W_hh": (H, H), "layers.1.b_h": (H,),
        "W_hy": (4, H), "b_y": (4,),
    }
    assert all((cell.b_h == 0).all() for cell in rnn.layers)


def test_readout_is_affine_on_any_leading_shape():
    rnn = ElmanRNN(I, H, output_size=4)
    h = torch.randn(2, 3, H)
    torch.testing.assert_close(rnn.readout(h), h @ rnn.W_hy.T + rnn.b_y)
    assert rnn.readout(h).shape == (2, 3, 4)
    with pytest.raises(RuntimeError, match="output_size"):
        ElmanRNN(I, H).readout(h)


@pytest.mark.parametrize("gain", [0.9, 1.5])
def test_orthogonal_init_is_gain_times_orthogonal(gain):
    W = ElmanRNN(I, 32, w_hh_init="orthogonal", w_hh_gain=gain).layers[0].W_hh.detach()
    torch.testing.assert_close(W.T @ W, gain**2 * torch.eye(32), atol=1e-5, rtol=0)


def test_identity_init_is_gain_times_identity():
    W = ElmanRNN(I, 32, w_hh_init="identity", w_hh_gain=0.7).layers[0].W_hh.detach()
    assert torch.equal(W, 0.7 * torch.eye(32))


def test_uniform_init_fills_pytorchs_range():
    bound = 1 / math.sqrt(64)
    cell = ElmanRNN(I, 64, w_hh_init="uniform", w_xh_init="uniform").layers[0]
    for W in (cell.W_hh, cell.W_xh):
        assert W.abs().max() <= bound
        assert W.abs().max() > 0.95 * bound  # spans the range rather than sitting near 0
    doubled = ElmanRNN(I, 64, w_hh_init="uniform", w_hh_gain=2.0).layers[0].W_hh
    assert 1.9 * bound < doubled.abs().max() <= 2 * bound


def test_xavier_init_of_input_weights():
    bound = math.sqrt(6 / (I + 64))
    W = ElmanRNN(I, 64, w_xh_init="xavier").layers[0].W_xh
    assert 0.9 * bound < W.abs().max() <= bound


@pytest.mark.parametrize("gain", [0.95, 1.2])
def test_spectral_init_sets_the_spectral_radius(gain):
    rnn = ElmanRNN(I, 64, num_layers=2, w_hh_init="spectral", w_hh_gain=gain)
    radius = rnn.spectral_radius()
    assert radius.shape == (2,) and not radius.requires_grad
    torch.testing.assert_close(radius, torch.full((2,), gain), atol=1e-4, rtol=0)


def test_spectral_radius_reads_each_layer():
    rnn = ElmanRNN(I, 8, num_layers=2, w_hh_init="identity", w_hh_gain=0.5)
    with torch.no_grad():
        rnn.layers[1].W_hh.copy_(torch.diag(torch.linspace(-3, 1, 8)))  # largest |eigenvalue| is 3
    torch.testing.assert_close(rnn.spectral_radius(), torch.tensor([0.5, 3.0]))


def test_dropout_acts_between_layers_in_training_only():
    rnn = random_rnn(num_layers=2, dropout=0.5)
    ref = copied_torch_rnn(rnn)
    bottom, top = (nn.RNN(n, H, batch_first=True).to(torch.float64) for n in (I, H))
    with torch.no_grad():
        for l, layer in enumerate((bottom, top)):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(layer, f"{name}_l0").copy_(getattr(ref, f"{name}_l{l}"))
    x = torch.randn(B, T, I, dtype=torch.float64)
    torch.manual_seed(1)
    hs, h_n = rnn(x)
    torch.manual_seed(1)
    mask = torch.nn.functional.dropout(torch.ones(T, B, H, dtype=torch.float64), 0.5)  # the draw forward makes
    below, _ = bottom(x)  # (B, T, H)
    torch.testing.assert_close(h_n[0], below[:, -1], atol=1e-6, rtol=0)  # the recurrence itself is untouched
    torch.testing.assert_close(hs, top(below * mask.transpose(0, 1))[0], atol=1e-6, rtol=0)
    assert not torch.allclose(hs, ref(x)[0], atol=1e-3)
    rnn.eval()
    torch.testing.assert_close(rnn(x)[0], ref(x)[0], atol=1e-6, rtol=0)  # evaluation: no dropout


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_size=0), "input_size"),
    (dict(hidden_size=-4), "hidden_size"),
    (dict(hidden_size=2.5), "hidden_size"),
    (dict(output_size=0), "output_size"),
    (dict(num_layers=0), "num_layers"),
    (dict(num_layers=True), "num_layers"),
    (dict(w_hh_init="xavier"), "w_hh_init"),
    (dict(w_xh_init="orthogonal"), "w_xh_init"),
    (dict(w_hh_gain=0.0), "w_hh_gain"),
    (dict(w_hh_gain=-1.0), "w_hh_gain"),
    (dict(w_hh_gain=float("nan")), "w_hh_gain"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
])
def test_bad_arguments_raise(kwargs, message):
    args = dict(input_size=I, hidden_size=H) | kwargs
    with pytest.raises(ValueError, match=message):
        ElmanRNN(**args)


@pytest.mark.parametrize("call", [
    lambda rnn: rnn(torch.randn(B, I)),  # no time axis
    lambda rnn: rnn(torch.randn(B, T, I + 1)),  # wrong feature size
    lambda rnn: rnn(torch.randn(B, 0, I)),  # no frames
    lambda rnn: rnn(torch.randn(B, T, I), torch.zeros(1, B, H)),  # h0 for one layer of two
    lambda rnn: rnn.step(torch.randn(B, T, I)),  # a clip instead of a frame
    lambda rnn: rnn.step(torch.randn(B, I), torch.zeros(2, B + 1, H)),  # batch mismatch
])
def test_bad_shapes_raise(call):
    with pytest.raises(ValueError, match="shape"):
        call(ElmanRNN(I, H, num_layers=2))
