"""Training through CUDA graphs (speechrnn.training.graphs): which calls replay a graph, and, on a GPU,
that the graphs train exactly as the eager loop does."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from speechrnn.model.rnn import ElmanRNN
from speechrnn.training.graphs import GraphedEncoder
from speechrnn.training.module import KeywordModule

I, H, C = 5, 8, 3


class FakeCapture:
    """Stands in for torch.cuda.make_graphed_callables on a CPU: records each capture, and which
    calls then went through a captured module."""

    def __init__(self):
        self.captured, self.replays = [], []

    def __call__(self, module: nn.Module, sample_args: tuple[torch.Tensor, ...]) -> nn.Module:
        self.captured.append((module, sample_args))
        replays = self.replays

        class Replay(nn.Module):
            def forward(self, x):
                replays.append(tuple(x.shape))
                return module(x)

        return Replay()


def test_one_capture_per_training_shape_then_replays_and_eager_beyond_max_shapes():
    rnn, fake = ElmanRNN(I, H, output_size=C), FakeCapture()
    graphed = GraphedEncoder(rnn, max_shapes=2, capture=fake)
    x = torch.randn(4, 6, I)
    for got, want in zip(graphed(x), rnn(x)):  # the captured module is the encoder's own forward
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    module, (sample,) = fake.captured[0]
    assert module.encoder is rnn and torch.equal(sample, x) and sample.data_ptr() != x.data_ptr()
    graphed(torch.randn(4, 6, I))
    graphed(torch.randn(2, 6, I))  # an epoch's shorter last batch: a second graph
    graphed(torch.randn(3, 6, I))  # a third shape: eager
    assert [tuple(s.shape) for _, (s,) in fake.captured] == [(4, 6, I), (2, 6, I)]
    assert fake.replays == [(4, 6, I), (4, 6, I), (2, 6, I)]


def test_a_capture_that_fails_warns_once_and_training_goes_on_eagerly(caplog):
    rnn, attempts = ElmanRNN(I, H), []

    def refuse(module, sample_args):
        attempts.append(module)
        raise RuntimeError("make_graphed_callables does not support the autocast caching")

    graphed, x = GraphedEncoder(rnn, capture=refuse), torch.randn(2, 6, I)
    for _ in range(3):
        torch.testing.assert_close(graphed(x)[0], rnn(x)[0], atol=0, rtol=0)
    assert len(attempts) == 1 and graphed.graphs == {}
    assert [r.levelname for r in caplog.records if "CUDA graphs off" in r.getMessage()] == ["WARNING"]


@pytest.mark.parametrize("mode", ["eval", "no_grad"])
def test_evaluation_runs_the_encoder_eagerly(mode):
    rnn, fake = ElmanRNN(I, H), FakeCapture()
    graphed, x = GraphedEncoder(rnn, capture=fake), torch.randn(2, 6, I)
    if mode == "eval":
        rnn.eval()
        graphed(x)
    else:
        with torch.no_grad():
            graphed(x)
    assert fake.captured == [] and fake.replays == []


def test_the_training_step_encodes_through_the_graphs_and_stays_eager_on_a_cpu():
    module = KeywordModule(["yes", "no", "up"], features=dict(n_mfcc=4, n_mels=8, stack=2), cuda_graphs=True,
                           encoder=dict(kind="rnn", hidden_size=H), optimizer={"_target_": "torch.optim.SGD", "lr": 0.1})
    module.log_dict = lambda *a, **k: None
    module.on_fit_start()  # on a CPU: no graphs
    assert module.graphed is None
    fake = FakeCapture()
    module.graphed = GraphedEncoder(module.model.encoder, capture=fake)
    batch = (torch.randn(2, 16000), torch.tensor([0, 2]), torch.arange(2))
    module._step(batch, "train")
    module.eval()  # as Lightning validates: eval mode, no gradients
    with torch.no_grad():
        module._step(batch, "val")
    assert len(fake.captured) == 1 and len(fake.replays) == 1  # training replays, validation does not


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("num_layers", [1, 2])
def test_on_a_gpu_graphed_training_matches_the_eager_loop(num_layers):
    torch.manual_seed(0)
    eager = ElmanRNN(I, H, output_size=C, num_layers=num_layers).cuda()
    model = copy.deepcopy(eager)
    graphed = GraphedEncoder(model)
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (eager, model)]
    for step in range(4):  # replays after the capture, with weights the optimiser changed in place
        x, y = torch.randn(16, 12, I, device="cuda"), torch.randint(C, (16,), device="cuda")
        for encode, m, opt in ((eager, eager, opts[0]), (graphed, model, opts[1])):
            opt.zero_grad()
            hs, h_n = encode(x)
            F.cross_entropy(m.readout(hs).flatten(0, 1), y.repeat_interleave(12)).backward()
            opt.step()
        for (name, p), q in zip(eager.named_parameters(), model.parameters()):
            torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-5, msg=f"{name} after step {step}")
    assert len(graphed.graphs) == 1
