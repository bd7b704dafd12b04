"""--compile=true: every model compiles whole (no graph break), trains as eager does, and keeps
channels_last through unpooling. Inductor's C++ compile takes 15-55 s per test on 2 cores: those
are `slow` (the file took 2 min 11 s with an empty Inductor cache on a quiet 2-core Xeon)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from segnet import engine, optim
from segnet.model import SPECS, SegNet, max_unpool2d_channels_last

CPU = torch.device("cpu")


def pooled(hw=(45, 61), channels_last=True):
    """A pooled map and its indices from an odd-sized input (Caffe's ceil mode)."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, *hw)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y, idx = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    return y.detach().requires_grad_(), idx


def test_channels_last_unpool_equals_max_unpool_and_keeps_the_layout():
    y, idx = pooled()
    ref = F.max_unpool2d(y, idx, 2, 2, output_size=(45, 61))
    out = max_unpool2d_channels_last(y, idx, (45, 61))
    assert out.shape == ref.shape == (2, 8, 45, 61) and torch.equal(out, ref)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    g = torch.randn_like(ref)
    (ga,) = torch.autograd.grad(ref, y, g)
    (gb,) = torch.autograd.grad(out, y, g)
    assert torch.equal(ga, gb)  # both are the gather of g at the indices
    assert (out != 0).sum() == (y != 0).sum()  # every pooled value written once, the rest zeros


@pytest.mark.slow
@pytest.mark.parametrize("unpool", ["max_unpool2d", "channels_last"])
def test_compiled_unpool_keeps_channels_last(unpool):
    """Inductor's graph gives the same values in the same channels_last strides as eager."""
    y, idx = pooled()
    fn = ((lambda a, i: F.max_unpool2d(a, i, 2, 2, output_size=(45, 61))) if unpool == "max_unpool2d"
          else (lambda a, i: max_unpool2d_channels_last(a, i, (45, 61))))
    eager, compiled = fn(y, idx), torch.compile(fn, backend="inductor")(y, idx)
    assert torch.equal(eager, compiled)
    assert compiled.stride() == eager.stride() and compiled.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("spec", list(SPECS))
def test_no_graph_break_inside_the_model(spec):
    model = SegNet(5, spec=spec).to(memory_format=torch.channels_last).train()
    x = torch.rand(2, 3, 24, 40).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


@pytest.mark.slow
@pytest.mark.parametrize("spec", list(SPECS))
def test_compiled_training_agrees_with_eager(spec):
    """Three bf16 training steps (channels_last, as the CPU default here) on a 24x40 input: the
    compiled model's losses and weights follow the eager model's within bf16 rounding."""
    torch.manual_seed(0)
    eager = SegNet(5, spec=spec).to(memory_format=torch.channels_last)
    compiled = copy.deepcopy(eager)
    scale = 255.0 if spec == "segnet_basic" else 1.0  # SegNet-Basic's raw 0-255 input
    x = (torch.rand(2, 3, 24, 40) * scale).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (2, 24, 40))
    y[:, :2] = 255  # some void
    opts = [optim.make_optimizer("sgd", m, 0.01, 0.9, 0.0005) for m in (eager, compiled)]
    step_model = torch.compile(compiled)
    losses = [[float(engine.train_step(m, x, y, o, None, CPU, torch.bfloat16)) for _ in range(3)]
              for m, o in ((eager, opts[0]), (step_model, opts[1]))]
    assert losses[0][-1] < losses[0][0]  # it trains
    torch.testing.assert_close(losses[1], losses[0], rtol=2e-2, atol=2e-2)  # bf16: 8 bits of mantissa
    # the weights (BN running statistics of the deepest stages, over 1x3 maps here, amplify bf16
    # rounding differences and are left out)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=5e-2, atol=5e-2, msg=name)


def test_compile_setting_resolves():
    import Train_SegNet
    from segnet.config import parse_overrides
    from segnet.errors import UserError
    d = {"config": "camvid", **Train_SegNet.DEFAULTS}
    assert d["compile"] is False  # off until measured to win
    assert parse_overrides(d, ["--compile"], choices=Train_SegNet.CHOICES)["compile"] is True  # bare flag
    assert parse_overrides(d, ["--compile=false"], choices=Train_SegNet.CHOICES)["compile"] is False
    with pytest.raises(UserError, match="--compile=maybe: expected a boolean"):
        parse_overrides(d, ["--compile=maybe"], choices=Train_SegNet.CHOICES)
