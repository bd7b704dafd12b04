"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017, arXiv 1511.00561) and SegNet-Lite.

    from segnet.model import SegNet
    model = SegNet(num_classes=11)                       # the paper's VGG16 SegNet, logits out
    model = SegNet(num_classes=11, spec="segnet_basic")  # the paper's controlled-benchmark model (Table 1)
    model = SegNet(num_classes=11, spec="segnet_lite")   # four stages, one conv each, 1x1 classifier
    model = SegNet(num_classes=11, spec="fcn_basic")     # Table 1's other decoders (docs/reproduction.md)

The layer layout is data (`SegNetSpec`), so variants are the same class with another spec.
Layer names, widths and fillers follow SegNet-Tutorial `Models/segnet_train.prototxt` (and
`Models/segnet_basic_train.prototxt` for SegNet-Basic).
"""
import contextlib
import dataclasses
import os
import re
import urllib.error
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import conv_weight_grad
from .files import sha256


@dataclass(frozen=True)
class SegNetSpec:
    """Output width of every conv, stage by stage (encoder shallow->deep, decoder deep->shallow).

    The classifier is not listed: it is one extra conv (`classifier_kernel`) to `num_classes`.
    Decoder stage i unpools with encoder stage (n-1-i)'s indices, so its input width must equal
    that encoder stage's width.
    """
    encoder: tuple
    decoder: tuple
    kernel_size: int = 3
    classifier_kernel: int = 3
    dropout_stages: int = 3  # Bayesian SegNet: dropout on the deepest N encoder and decoder stages
    input_lrn: bool = False  # local response normalisation of the input (SegNet-Basic's first layer)
    decoder_relu: bool = True  # SegNet-Basic's decoder convs are conv => BN, with no ReLU
    # Table 1's decoder variants (docs/reproduction.md gives each choice the paper leaves open):
    upsample: str = "indices"  # indices (max-unpool) | bilinear (fixed) | deconv (8x8 transposed conv, bilinear init)
    depthwise: bool = False    # decoder convs are single channel: each filters only its own upsampled map
    add_encoder: str = ""      # "" | conv: + the paired encoder stage's conv maps | pool: + the pooled map of that size
    reduce: bool = False       # FCN's 1x1 reduction to num_classes of the deepest map and of every added map


SPECS = {
    # Sec. 3 / Fig. 2: the 13 VGG16 convs (2, 2, 3, 3, 3), mirrored by the decoder; the last
    # decoder stage is conv1_2_D (64) then the classifier conv1_1_D (3x3, no BN, no ReLU).
    "segnet": SegNetSpec(
        encoder=((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
        decoder=((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,)),
    ),
    # Sec. 3.1 / Table 1, segnet_basic_train.prototxt: input LRN, 4 encoder stages of one 7x7 conv
    # (64) => BN => ReLU => pool, 4 decoder stages of unpool => 7x7 conv (64) => BN (no ReLU), a
    # 1x1 classifier. bayesian_segnet_basic_train.prototxt: dropout after pool3, pool4 and after
    # decoder stages 4 and 3, the deepest two.
    "segnet_basic": SegNetSpec(encoder=((64,),) * 4, decoder=((64,),) * 4, kernel_size=7, classifier_kernel=1,
                               dropout_stages=2, input_lrn=True, decoder_relu=False),
    # The multi-digit MNIST reference: 4 stages of one conv (32, 64, 128, 256), up path
    # 128, 64, 32, 32, then a 1x1 classifier.
    "segnet_lite": SegNetSpec(
        encoder=((32,), (64,), (128,), (256,)),
        decoder=((128,), (64,), (32,), (32,)),
        classifier_kernel=1,
        dropout_stages=2,
    ),
}
# Sec. 3.1 / Fig. 3 / Table 1: seven decoders on SegNet-Basic's encoder and 1x1 classifier, in the
# table's order with segnet_basic (docs/reproduction.md "Table 1's decoder variants").
_NO_CONVS = ((),) * 4
SPECS.update({
    name: dataclasses.replace(SPECS["segnet_basic"], **change) for name, change in (
        ("bilinear_interpolation", dict(decoder=_NO_CONVS, upsample="bilinear")),
        ("segnet_basic_encoder_addition", dict(add_encoder="conv")),
        ("segnet_basic_single_channel_decoder", dict(depthwise=True)),
        ("fcn_basic", dict(decoder=_NO_CONVS, upsample="deconv", reduce=True, add_encoder="pool")),
        ("fcn_basic_no_addition", dict(decoder=_NO_CONVS, upsample="deconv", reduce=True)),
        ("fcn_basic_no_dim_reduction", dict(decoder=_NO_CONVS, upsample="deconv", add_encoder="pool")),
        ("fcn_basic_no_addition_no_dim_reduction", dict(decoder=_NO_CONVS, upsample="deconv")),
    )
})


def _autocast_off(device_type):
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()  # autocast is off already, or the device has none (meta)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) that can compute its weight gradient by GEMMs
    (`segnet.conv_weight_grad`: fp32 training in channels_last on CPUs without AVX512; see
    use_gemm_weight_grad). Evaluation, export and every other case run nn.Conv2d itself."""
    gemm_weight_grad = False

    def forward(self, x):
        if self.gemm_weight_grad and self.training and conv_weight_grad.applies(self, x):
            return conv_weight_grad.conv2d(x, self)
        return super().forward(x)


class ConvBNReLU(nn.Sequential):
    """conv kxk (with bias, as Caffe) => BN => ReLU (the ReLU left out with relu=False)"""

    def __init__(self, cin, cout, k, relu=True, groups=1):
        layers = [Conv2d(cin, cout, k, padding=k // 2, bias=True, groups=groups), nn.BatchNorm2d(cout)]
        super().__init__(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class EncoderStage(nn.Module):
    """(conv => BN => ReLU) * n, then 2x2 max-pool (ceil mode) that also returns its indices"""

    def __init__(self, cin, widths, k, dropout=0.0):
        super().__init__()
        convs = []
        for w in widths:
            convs.append(ConvBNReLU(cin, w, k))
            cin = w
        self.convs = nn.Sequential(*convs)
        # Caffe's pooling rounds the output size up: 45x60 pools to 23x30, not 22x30.
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True, return_indices=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        conv = self.convs(x)                                # the maps before pooling (EncoderAddition adds them)
        x, indices = self.pool(conv)
        return self.dropout(x), indices, conv


def _is_channels_last(x):
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def max_unpool2d_scatter(x, indices, size):
    """MaxUnpool2d(x, indices, output_size=size) as one scatter on flattened indices.

    Same values as nn.MaxUnpool2d (non-overlapping 2x2 windows: every index is written once) and
    the same gradient (scatter's backward is a gather), but it exports: ONNX ScatterElements
    with the output size taken from a tensor shape, so a dynamic-shape export keeps odd sizes
    (45x60 -> 23x30 -> 45x60) symbolic instead of baking in the example's.
    """
    b, c = x.shape[:2]                                           # x, indices: (B, C, h, w)
    h, w = size
    out = x.new_zeros(b, c, h * w)                               # (B, C, H*W)
    out = out.scatter(2, indices.flatten(2), x.flatten(2))      # indices count within one H*W plane
    return out.view(b, c, h, w)                                  # (B, C, H, W)


def max_unpool2d_channels_last(x, indices, size):
    """MaxUnpool2d(x, indices, output_size=size) for a channels_last `x`, returned channels_last:
    one scatter along the flattened H*W of the (B, H*W, C) view, which is the memory order itself.

    CUDA's max_unpool2d returns a contiguous (NCHW) map even for a channels_last input, and so does
    Inductor's decomposition on CUDA (pytorch/pytorch#187173): two layout copies of a full-size map
    per decoder stage. Same values and gradient (a gather) as nn.MaxUnpool2d.
    """
    b, c, h_in, w_in = x.shape                                     # x, indices: (B, C, h, w), NHWC in memory
    h, w = size
    src = x.permute(0, 2, 3, 1).reshape(b, h_in * w_in, c)         # (B, h*w, C), a view
    index = indices.permute(0, 2, 3, 1).reshape(b, h_in * w_in, c)
    out = x.new_zeros(b, h * w, c).scatter(1, index, src)          # (B, H*W, C)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)                # (B, C, H, W), channels_last


def bilinear_kernel(channels, k):
    """(channels, channels, k, k) diagonal weights of a stride-2 transposed conv that interpolates
    bilinearly: Caffe's "bilinear" filler (FCN's init) for a k x k kernel, scaled so that a constant
    map stays constant (the filler's 8x8 tent at stride 2 would double each side)."""
    f = (k + 1) // 2
    c = (2 * f - 1 - f % 2) / (2 * f)
    t = 1 - (torch.arange(k) / f - c).abs()
    t = t / t[::2].sum()                                         # each output sums the taps 2 apart to 1
    w = torch.zeros(channels, channels, k, k)
    w[range(channels), range(channels)] = t[:, None] * t[None, :]
    return w


class DecoderStage(nn.Module):
    """upsample (2x2 max-unpool with the encoder's indices, fixed bilinear, or an 8x8 transposed
    conv), then (conv => BN => ReLU) * n, then + the encoder's map of that size (where given)"""

    def __init__(self, cin, widths, k, dropout=0.0, relu=True, upsample="indices", depthwise=False):
        super().__init__()
        # Sec. 3: the decoder upsamples with the memorised max-pool indices (no learned upsampling).
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.scatter_unpool = False  # True: max_unpool2d_scatter, which exports (see use_scatter_unpool)
        self.mode = upsample
        if upsample == "deconv":  # Sec. 3.1: "We set the kernel size to 8 x 8"; no bias, as FCN's deconvolutions
            self.deconv = nn.ConvTranspose2d(cin, cin, 8, stride=2, padding=3, bias=False)  # exactly 2x the size
        convs = []
        for w in widths:
            convs.append(ConvBNReLU(cin, w, k, relu, groups=cin if depthwise else 1))
            cin = w
        self.convs = nn.Sequential(*convs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x, indices, size, skip=None):
        if self.mode == "bilinear":
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        elif self.mode == "deconv":
            x = self.deconv(x)[..., : size[0], : size[1]]      # ceil-mode pooling's odd sizes: crop the extra row
        else:
            # Unpooling only moves values, so it is exact in any dtype; CPU autocast would run it in
            # fp32 and cast the full-size map back for the next conv (24% of a bf16 CPU train step).
            with _autocast_off(x.device.type):
                if self.scatter_unpool:
                    x = max_unpool2d_scatter(x, indices, size)
                elif x.device.type == "cuda" and x.dim() == 4 and _is_channels_last(x):
                    x = max_unpool2d_channels_last(x, indices, size)
                else:
                    x = self.unpool(x, indices, output_size=size)  # sparse map at the encoder's pre-pool size
        x = self.dropout(self.convs(x))
        return x if skip is None else x + skip                  # Table 1's EncoderAddition and FCN decoders


class SegNet(nn.Module):
    """Encoder (VGG16 convs + indexed max-pools) => decoder (index unpooling + convs) => classifier.

    `forward` returns logits (B, num_classes, H, W): the softmax belongs to the loss.
    `bayesian=True` adds dropout (p=`dropout`) after the deepest encoder and decoder stages, as in
    Bayesian SegNet (Kendall et al. 2015, "central" placement); see `mc_dropout` for test time.
    """

    def __init__(self, num_classes=11, in_channels=3, spec="segnet", bayesian=False, dropout=0.5):
        super().__init__()
        if isinstance(spec, str):
            if spec not in SPECS:
                raise ValueError(f"unknown model spec {spec!r}; expected one of {sorted(SPECS)}")
            spec = SPECS[spec]
        if len(spec.encoder) != len(spec.decoder):
            raise ValueError("encoder and decoder need the same number of stages")
        self.spec, self.num_classes, self.in_channels = spec, num_classes, in_channels
        n, p = len(spec.encoder), (dropout if bayesian else 0.0)
        deep = spec.dropout_stages

        # segnet_basic_train.prototxt "norm": LRN across channels, local_size 5, alpha 1e-4,
        # beta 0.75 (k = 1), on the raw 0-255 pixels; torch's LRN computes Caffe's formula.
        self.input_norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if spec.input_lrn else nn.Identity()
        self.encoder = nn.ModuleList()
        cin = in_channels
        for i, widths in enumerate(spec.encoder):
            self.encoder.append(EncoderStage(cin, widths, spec.kernel_size, p if i >= n - deep else 0.0))
            cin = widths[-1]
        # Sec. 3.1: FCN-Basic compresses the deepest encoder map, and each map it adds, to K = num_classes
        # channels with 1x1x64xK filters; the pooled maps of stages 0..n-2 are the ones added.
        self.reduce_input = Conv2d(cin, num_classes, 1) if spec.reduce else nn.Identity()
        self.reduce_skips = nn.ModuleList(Conv2d(w[-1], num_classes, 1) for w in spec.encoder[:-1]) \
            if spec.reduce and spec.add_encoder == "pool" else None
        cin = num_classes if spec.reduce else cin
        self.decoder = nn.ModuleList()
        for i, widths in enumerate(spec.decoder):
            if spec.upsample == "indices" and cin != spec.encoder[n - 1 - i][-1]:
                raise ValueError(f"decoder stage {i} gets {cin} channels but its indices have "
                                  f"{spec.encoder[n - 1 - i][-1]}")
            self.decoder.append(DecoderStage(cin, widths, spec.kernel_size, p if i < deep else 0.0,
                                             spec.decoder_relu, spec.upsample, spec.depthwise))
            cin = widths[-1] if widths else cin
        k = spec.classifier_kernel
        self.classifier = Conv2d(cin, num_classes, k, padding=k // 2)  # no BN, no ReLU
        self.reset_parameters()

    def reset_parameters(self):
        # segnet_train.prototxt: conv weight_filler "msra" (He, fan-in), bias_filler constant 0;
        # BN scale_filler 1, shift_filler 0.001.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):  # Sec. 3.1: "initialized using bilinear interpolation weights"
                with torch.no_grad():
                    m.weight.copy_(bilinear_kernel(m.in_channels, m.kernel_size[0]))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.constant_(m.bias, 0.001)

    def skip(self, stage, pooled, conv):
        """What decoder stage `stage` adds to its output: the encoder map of that size, or None."""
        j = len(self.encoder) - 1 - stage                     # the encoder stage it pairs with
        if self.spec.add_encoder == "conv":
            return conv[j]                                      # (B, 64, h, w) before that stage's pooling
        if self.spec.add_encoder == "pool" and j > 0:           # Fig. 3: the max-pool output of that size
            return pooled[j - 1] if self.reduce_skips is None else self.reduce_skips[j - 1](pooled[j - 1])
        return None

    def forward(self, x):                                   # (B, 3, H, W)
        x = self.input_norm(x)                              # SegNet-Basic only
        pools, pooled, conv = [], [], []
        keep_pooled, keep_conv = self.spec.add_encoder == "pool", self.spec.add_encoder == "conv"
        for stage in self.encoder:
            x, indices, c = stage(x)                        # segnet: (B, 512, H/32, W/32) at the end
            pools.append((indices, c.shape[-2:]))
            pooled.append(x if keep_pooled else None)       # only what the decoder uses stays referenced
            conv.append(c if keep_conv else None)
        x = self.reduce_input(x)                            # FCN-Basic: (B, K, H/16, W/16)
        for i, (stage, (indices, size)) in enumerate(zip(self.decoder, reversed(pools))):
            skip = self.skip(i, pooled, conv)
            x = stage(x, indices, size) if skip is None else stage(x, indices, size, skip)  # to (B, 64, H, W)
        return self.classifier(x)                           # (B, num_classes, H, W) logits

    def encoder_convs(self):
        """The encoder's (conv, bn) pairs in order: 13 for the VGG16 spec."""
        return [(block[0], block[1]) for stage in self.encoder for block in stage.convs]


def use_scatter_unpool(model, enabled=True):
    """Switch every decoder stage to the export-friendly unpool (same values and gradients);
    returns how many stages were switched."""
    stages = [m for m in model.modules() if isinstance(m, DecoderStage)]
    for m in stages:
        m.scatter_unpool = enabled
    return len(stages)


def use_gemm_weight_grad(model, enabled=True):
    """Switch every conv to the GEMM weight gradient (segnet.conv_weight_grad; same gradients up to fp32
    rounding, faster in channels_last on AVX2-only CPUs); returns how many convs were switched."""
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    for m in convs:
        m.gemm_weight_grad = enabled
    return len(convs)


def mc_dropout(model, enabled=True):
    """Keep the dropout layers sampling (Bayesian SegNet test time); returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in layers:
        m.train(enabled)
    return len(layers)


def num_parameters(model):
    return sum(p.numel() for p in model.parameters())


# torchvision's ImageNet weights (RGB input, ImageNet mean/std normalisation). The 8 hex digits in
# each file name are the start of the file's sha256: the hash torchvision publishes and checks
# (torch.hub's check_hash=True); vgg16_hash() reads it from the name.
VGG_URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg16_bn": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
}


def vgg16_hash(source):
    """(file name, the sha256 prefix torchvision publishes for it) of VGG_URLS[source]."""
    name = VGG_URLS[source].rsplit("/", 1)[1]
    return name, re.search(r"-([0-9a-f]{8,})\.", name).group(1)


def _unreadable(path, e):
    # torch's own message for a refused pickle advises weights_only=False, i.e. running the file's
    # code; only say what the file is
    return ValueError(f"could not read VGG16 weights file {path} ({e.__class__.__name__}): it is not a plain "
                      f"state dict of tensors (corrupt, or a pickle that would run code, which is never loaded)")


def _imagenet_vgg_state(source):
    """torchvision's ImageNet weights from torch.hub's cache (downloaded on first use): the file's
    sha256 is checked before anything reads it, and it is loaded with weights_only=True."""
    name, expected = vgg16_hash(source)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", name)
    if os.path.isfile(cached):
        digest = sha256(cached)
        if not digest.startswith(expected):
            raise ValueError(f"ImageNet {source} weights file {cached} has sha256 {digest[:16]}..., expected "
                             f"{expected}... (torchvision's published hash): it is damaged or not torchvision's "
                             f"file; delete it to download it again, or train with --init_encoder=none")
    try:
        return torch.hub.load_state_dict_from_url(VGG_URLS[source], progress=True, map_location="cpu",
                                                  check_hash=True, weights_only=True)
    except Exception as e:
        if os.path.isfile(cached):  # the download worked (its hash was checked): the load failed
            raise _unreadable(cached, e) from None
        if isinstance(e, RuntimeError) and "hash" in str(e):  # download_url_to_file's check
            raise ValueError(f"the downloaded ImageNet {source} weights do not have torchvision's published "
                             f"sha256 {expected}... ({e}); try again later, or train with --init_encoder=none") from None
        if not isinstance(e, (urllib.error.URLError, OSError, RuntimeError)):
            raise
        raise ConnectionError(
            f"could not download the ImageNet {source} weights ({e.__class__.__name__}: {e}); "
            f"either put {name} (sha256 {expected}...) in {os.path.dirname(cached)} (or pass "
            f"--init_encoder=PATH to a local VGG16 state-dict file), or train from scratch "
            f"with --init_encoder=none") from None


def _vgg_layers(state):
    """Split a VGG16(-BN) state dict into its conv layers and BN layers, in order."""
    convs, bns = [], []
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 4:
            prefix = key[: -len(".weight")]
            convs.append((prefix, value, state.get(prefix + ".bias")))
        elif key.endswith(".running_mean"):
            prefix = key[: -len(".running_mean")]
            bns.append((prefix, {k: state[f"{prefix}.{k}"] for k in
                                 ("weight", "bias", "running_mean", "running_var")}))
    return convs, bns


def load_vgg16_encoder(model, source="vgg16"):
    """Initialise the 13 encoder convs from ImageNet VGG16 (Sec. 3.2 of the paper).

    source: "vgg16" (torchvision's weights: conv weights and biases, the paper's choice),
    "vgg16_bn" (convs and BN), a path to a saved VGG16(-BN) state dict, or a state dict.
    Every shape is checked before anything is copied; a misfit names the layer.
    """
    if isinstance(source, str) and source in VGG_URLS:
        state = _imagenet_vgg_state(source)
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"VGG16 weights file not found: {source} (expected a state-dict file, "
                                    f"or one of {sorted(VGG_URLS)} or 'none')")
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as e:
            raise _unreadable(source, e) from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    else:
        state = source
    if not isinstance(state, dict):
        raise ValueError(f"VGG16 weights {source!r}: expected a state dict, got {type(state).__name__}")

    convs, bns = _vgg_layers(state)
    ours = model.encoder_convs()
    if len(convs) != len(ours):
        raise ValueError(f"VGG16 weights {source!r}: expected {len(ours)} conv layers, found {len(convs)}")
    if bns and len(bns) != len(ours):
        raise ValueError(f"VGG16 weights {source!r}: expected {len(ours)} BatchNorm layers, found {len(bns)}")
    for i, ((name, w, b), (conv, _)) in enumerate(zip(convs, ours)):
        if w.shape != conv.weight.shape or b is None or b.shape != conv.bias.shape:
            got = tuple(w.shape), None if b is None else tuple(b.shape)
            raise ValueError(f"VGG16 layer {name} (encoder conv {i + 1}) has shape {got}, expected "
                             f"{tuple(conv.weight.shape), tuple(conv.bias.shape)}")
    for i, ((name, t), (_, bn)) in enumerate(zip(bns, ours)):
        if t["weight"].shape != bn.weight.shape:
            raise ValueError(f"VGG16 layer {name} (encoder BN {i + 1}) has {t['weight'].numel()} "
                             f"channels, expected {bn.num_features}")
    with torch.no_grad():
        for (_, w, b), (conv, _) in zip(convs, ours):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        for (_, t), (_, bn) in zip(bns, ours):
            for k, v in t.items():
                getattr(bn, k).copy_(v)
    return model
