"""A convolution whose weight gradient is computed by GEMMs, for fp32 training in channels_last
on CPUs without AVX512.

Why (docs/performance.md, measured on a 2-core AMD EPYC, AVX2 only, torch 2.14.1, oneDNN
verbose and torch.profiler on a SegNet training step at 360x480): oneDNN's fp32 kernels on such a
CPU are fast in its blocked layout (nChw8c) and in NHWC for the forward pass and the input
gradient, but its NHWC weight-gradient kernel is 2.5x slower than the blocked one (7.8 s against
3.1 s per step). NCHW training avoids that kernel but pays about 1 s per step converting every
activation to the blocked layout and back. This module keeps NHWC (no conversions, faster
BN and pooling) and replaces only the weight gradient.

How: for a stride-1 k x k convolution with padding p, dL/dW[:, :, i, j] is G^T @ X shifted by
(i, j), where G is the output gradient (pixels x Co) and X the padded input (pixels x Ci). With
both laid out NHWC on the same (H+2p) x (W+2p) grid per image (G gets k-1 zero rows and columns),
a shift by (i, j) is a constant offset i*(W+2p)+j into the flattened pixel axis of the whole
batch, so every shifted X is a contiguous slice: k*k GEMMs on views, no im2col. The pixel axis is cut into chunks so that a
chunk of G and X stays in cache across the k*k GEMMs. The sums equal autograd's up to fp32
rounding order (tests/test_conv_weight_grad.py).
"""
import torch
import torch.nn.functional as F

CHUNK = 8192       # pixels per GEMM (AVX2 EPYC: 4096-16384 within 7%; unchunked 34% slower at 64 channels)
MIN_CHANNELS = 16  # fewer input channels (the RGB layer): oneDNN's own weight gradient is faster


def _pad_flat(t, bottom, right, pad=0, extra=0):
    """(N, C, H, W) in any memory format -> (N*(H+2*pad+bottom)*(W+2*pad+right) + extra, C): each
    image's NHWC pixels with zero borders (`pad` on every side, plus `bottom` rows and `right`
    columns), the images one after another, then `extra` zero pixels. Only the borders are zeroed."""
    n, c, h, w = t.shape
    hp, wp = h + 2 * pad + bottom, w + 2 * pad + right
    out = t.new_empty(n * hp * wp + extra, c)
    grid = out[:n * hp * wp].view(n, hp, wp, c)
    grid[:, :pad].zero_()
    grid[:, pad + h:].zero_()
    grid[:, pad:pad + h, :pad].zero_()
    grid[:, pad:pad + h, pad + w:].zero_()
    out[n * hp * wp:].zero_()
    grid[:, pad:pad + h, pad:pad + w].copy_(t.permute(0, 2, 3, 1))
    return out


def weight_grad_gemm(x, grad_out, kernel_size, padding, chunk=CHUNK):
    """dL/dW (Co, Ci, k, k) of a stride-1, dilation-1, ungrouped conv2d from its input x (N, Ci, H, W)
    and output gradient (N, Co, Ho, Wo), Ho = H + 2p - k + 1."""
    k, p = kernel_size, padding
    n, ci, h, w = x.shape
    co, ho, wo = grad_out.shape[1:]
    if (ho, wo) != (h + 2 * p - k + 1, w + 2 * p - k + 1):
        raise ValueError(f"grad_out is {ho}x{wo}; a stride-1 {k}x{k} conv with padding {p} of {h}x{w} gives "
                         f"{h + 2 * p - k + 1}x{w + 2 * p - k + 1}")
    wp = w + 2 * p
    # Both as one pixel axis over the whole batch, every image (H+2p) x (W+2p): X padded by p, G by
    # k-1 zero rows and columns, so a shift never mixes pixels from outside an image's window.
    xf = _pad_flat(x, 0, 0, pad=p, extra=(k - 1) * (wp + 1))
    gf = _pad_flat(grad_out, k - 1, k - 1)
    length = gf.shape[0]
    out = x.new_zeros(k * k, co, ci)
    for s in range(0, length, chunk):
        e = min(s + chunk, length)
        gt = gf[s:e].t()                                   # (Co, pixels)
        for i in range(k):
            for j in range(k):
                off = i * wp + j
                out[i * k + j].addmm_(gt, xf[s + off:e + off])
    return out.permute(1, 2, 0).reshape(co, ci, k, k)


class _Conv2dGemmWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        p, k = ctx.padding, weight.shape[-1]
        grad = grad.contiguous(memory_format=torch.channels_last)
        small = x.shape[1] < MIN_CHANNELS
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and small, False]
        grad_x = grad_w = grad_b = None
        if any(mask):
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [p, p], [1, 1],
                                                                     False, [0, 0], 1, mask)
        if ctx.needs_input_grad[1] and not small:
            grad_w = weight_grad_gemm(x, grad, k, p).contiguous(memory_format=torch.channels_last)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def applies(conv, x):
    """Whether conv(x) can take the GEMM weight gradient: fp32 on the CPU, autocast off, a square
    kernel with stride 1, dilation 1, one group and symmetric zero padding, gradients wanted."""
    k = conv.kernel_size
    return (x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and torch.is_grad_enabled() and conv.weight.requires_grad and not torch.is_autocast_enabled("cpu")
            and k[0] == k[1] and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1])


def conv2d(x, conv):
    """conv(x) with the GEMM weight gradient (call only where `applies(conv, x)`)."""
    return _Conv2dGemmWeightGrad.apply(x, conv.weight, conv.bias, conv.padding[0])
