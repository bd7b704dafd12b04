"""The GEMM weight gradient (segnet.conv_weight_grad) against autograd through torch's own convolution."""
import pytest
import torch
import torch.nn.functional as F

from segnet import conv_weight_grad, runtime
from segnet.model import SegNet, use_gemm_weight_grad


def _conv_grads(x, weight, bias, padding, gemm, upstream):
    x = x.clone().requires_grad_()
    weight = weight.clone().requires_grad_()
    bias = bias.clone().requires_grad_()
    if gemm:
        y = conv_weight_grad._Conv2dGemmWeightGrad.apply(x, weight, bias, padding)
    else:
        y = F.conv2d(x, weight, bias, padding=padding)
    (y * upstream).sum().backward()
    return y, x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("n, ci, co, h, w, k", [
    (2, 16, 8, 9, 13, 3),    # odd sizes, the GEMM path (>= 16 input channels)
    (1, 20, 5, 7, 6, 7),     # SegNet-Basic's 7x7, an image smaller than the kernel's reach
    (3, 16, 11, 5, 8, 1),    # the 1x1 classifier of SegNet-Lite
    (2, 3, 8, 10, 12, 3),    # the RGB layer: oneDNN's own weight gradient (fewer than 16 channels)
])
def test_gradients_equal_autograd_in_double(n, ci, co, h, w, k):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, ci, h, w, generator=g, dtype=torch.double).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(co, ci, k, k, generator=g, dtype=torch.double)
    bias = torch.randn(co, generator=g, dtype=torch.double)
    upstream = torch.randn(n, co, h, w, generator=g, dtype=torch.double)
    ours = _conv_grads(x, weight, bias, k // 2, True, upstream)
    ref = _conv_grads(x, weight, bias, k // 2, False, upstream)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_weight_grad_gemm_with_small_chunks_and_any_layout():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 17, 11, 9, generator=g, dtype=torch.double)          # NCHW input works too
    grad = torch.randn(2, 4, 11, 9, generator=g, dtype=torch.double)
    weight = torch.randn(4, 17, 3, 3, dtype=torch.double)
    ref = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                              [False, True, False])[1]
    for chunk in (1, 7, 10_000):   # chunk boundaries anywhere in the pixel axis
        torch.testing.assert_close(conv_weight_grad.weight_grad_gemm(x, grad, 3, 1, chunk=chunk), ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="grad_out is 11x9; a stride-1 3x3 conv with padding 0 of 11x9 gives 9x7"):
        conv_weight_grad.weight_grad_gemm(x, grad, 3, 0)


def test_segnet_training_step_gradients_match_onednn():
    """One fp32 channels_last training step of SegNet-Basic and SegNet-Lite: the same loss and
    gradients with the GEMM weight gradient as with torch's own (up to fp32 rounding order)."""
    for spec, size in (("segnet_basic", (36, 52)), ("segnet_lite", (32, 40))):
        grads = []
        for gemm in (False, True):
            torch.manual_seed(0)
            model = SegNet(11, spec=spec).train().to(memory_format=torch.channels_last)
            assert use_gemm_weight_grad(model, gemm) == 9  # 4 encoder, 4 decoder convs, the classifier
            x = torch.rand(2, 3, *size).contiguous(memory_format=torch.channels_last) * 255
            y = torch.randint(0, 11, (2, *size))
            F.cross_entropy(model(x), y).backward()
            grads.append({n: p.grad for n, p in model.named_parameters()})
        assert grads[0].keys() == grads[1].keys()
        largest = max(g.abs().max().item() for g in grads[0].values())
        for name in grads[0]:
            ref, ours = grads[0][name], grads[1][name]
            # relative to the tensor; the conv biases before BN have only rounding noise (their true
            # gradient is 0), hence the small absolute floor relative to the largest gradient
            tol = 1e-4 * ref.abs().max().item() + 1e-6 * largest
            assert (ours - ref).abs().max().item() <= tol, (spec, name)


def test_off_when_not_applicable():
    model = SegNet(11, spec="segnet_lite").to(memory_format=torch.channels_last)
    use_gemm_weight_grad(model)
    conv = model.classifier
    x = torch.rand(1, conv.in_channels, 8, 8)
    assert conv_weight_grad.applies(conv, x)
    with torch.no_grad():
        assert not conv_weight_grad.applies(conv, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv_weight_grad.applies(conv, x)
    assert not conv_weight_grad.applies(conv, x.double())
    model.eval()
    x = torch.rand(1, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # evaluation runs nn.Conv2d itself: bit-identical to the plain model
        out = model(x)
        use_gemm_weight_grad(model, False)
        assert torch.equal(out, model(x))


@pytest.mark.parametrize("capability, wgrad_setting, dtype, cl, expected", [
    ("AVX2", "auto", torch.float32, True, True),
    ("AVX2", "auto", torch.float32, False, False),
    ("AVX2", "auto", torch.bfloat16, True, False),
    ("AVX512", "auto", torch.float32, True, False),
    ("AVX512", "gemm", torch.float32, True, True),
    ("AVX2", "onednn", torch.float32, True, False),
])
def test_resolve_conv_wgrad(monkeypatch, capability, wgrad_setting, dtype, cl, expected):
    monkeypatch.setattr(runtime, "cpu_capability", lambda: capability)
    assert runtime.resolve_conv_wgrad(wgrad_setting, torch.device("cpu"), dtype, cl) is expected
    assert runtime.resolve_conv_wgrad(wgrad_setting, torch.device("cuda"), dtype, cl) is False
    with pytest.raises(ValueError, match="conv_wgrad=blas: expected one of auto, gemm, onednn"):
        runtime.resolve_conv_wgrad("blas", torch.device("cpu"), dtype, cl)
