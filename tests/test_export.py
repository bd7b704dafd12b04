import copy

import pytest
import torch
import torch.nn.functional as F

from segnet.model import SegNet, max_unpool2d_scatter, use_scatter_unpool

# Pre-pool sizes that ceil-mode pooling makes odd: 45x60 -> 23x30 -> back to 45x60, and smaller.
ODD_SIZES = [(45, 60), (23, 30), (7, 5), (1, 1), (2, 3), (12, 15)]


@pytest.mark.parametrize("size", ODD_SIZES)
def test_scatter_unpool_equals_maxunpool_values_and_gradients(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    pooled, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    a = pooled.clone().requires_grad_()
    b = pooled.clone().requires_grad_()
    ref = F.max_unpool2d(a, indices, 2, 2, output_size=size)
    out = max_unpool2d_scatter(b, indices, size)
    assert out.shape == ref.shape == (2, 3, *size)
    assert torch.equal(out, ref)
    g = torch.randn_like(ref)
    ref.backward(g)
    out.backward(g)
    assert torch.equal(a.grad, b.grad)
    assert a.grad.abs().sum() > 0


def test_scatter_unpool_switch_gives_the_same_model_output():
    torch.manual_seed(0)
    model = SegNet(5, spec="segnet_lite").eval()
    other = copy.deepcopy(model)
    assert use_scatter_unpool(other) == 4
    assert all(s.scatter_unpool for s in other.decoder) and not any(s.scatter_unpool for s in model.decoder)
    for hw in [(45, 61), (17, 9), (32, 48)]:
        x = torch.rand(2, 3, *hw)
        with torch.no_grad():
            assert torch.equal(model(x), other(x))
