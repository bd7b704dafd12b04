import urllib.error

import pytest
import torch
import torch.nn as nn
import torchvision

from segnet.errors import INPUT_ERRORS
from segnet.model import SPECS, SegNet, load_vgg16_encoder, mc_dropout, num_parameters


@pytest.fixture(scope="module")
def segnet():
    torch.manual_seed(0)
    return SegNet(num_classes=11).eval()


def test_parameter_count_matches_caffe(segnet):
    # segnet_train.prototxt with biases on every conv: 29,449,355 for 11 classes.
    assert num_parameters(segnet) == 29_449_355


def test_full_size_shapes_pool_sizes_and_logits(segnet):
    sizes = []
    hooks = [stage.pool.register_forward_hook(lambda m, i, o: sizes.append(tuple(o[0].shape[-2:])))
             for stage in segnet.encoder]
    with torch.no_grad():
        y = segnet(torch.rand(1, 3, 360, 480))
    for h in hooks:
        h.remove()
    assert y.shape == (1, 11, 360, 480)
    # ceil-mode pooling as in Caffe: 45x60 -> 23x30, not 22x30
    assert sizes == [(180, 240), (90, 120), (45, 60), (23, 30), (12, 15)]
    # logits, not probabilities: values leave [0, 1] and don't sum to one over classes
    assert y.min() < 0 or y.max() > 1
    assert not torch.allclose(y.sum(1), torch.ones(1, 360, 480), atol=1e-3)


@pytest.mark.parametrize("hw", [(37, 53), (1, 1), (65, 31)])
def test_odd_sizes_keep_input_size(segnet, hw):
    with torch.no_grad():
        assert segnet(torch.rand(2, 3, *hw)).shape == (2, 11, *hw)


def test_layer_structure_follows_spec():
    m = SegNet(num_classes=11)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 13 + 13  # 13 encoder convs, 12 decoder convs + classifier
    assert [b[0].out_channels for s in m.decoder for b in s.convs] == \
        [512, 512, 512, 512, 512, 256, 256, 256, 128, 128, 64, 64]
    assert m.classifier.kernel_size == (3, 3) and m.classifier.out_channels == 11
    assert all(isinstance(s.unpool, nn.MaxUnpool2d) for s in m.decoder)
    # segnet_train.prototxt fillers: msra convs with zero bias, BN scale 1 and shift 0.001
    assert all(not c.bias.detach().any() for c in convs)
    bn = m.encoder[0].convs[0][1]
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.full((64,), 0.001))
    std = float(m.encoder[3].convs[1][0].weight.detach().std())
    assert abs(std - (2 / (512 * 9)) ** 0.5) < 0.002


def test_segnet_lite_spec():
    m = SegNet(num_classes=11, spec="segnet_lite")
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 128, 64, 32, 32, 11]
    assert m.classifier.kernel_size == (1, 1)
    assert len(m.encoder) == len(m.decoder) == 4
    assert m(torch.rand(2, 3, 64, 64)).shape == (2, 11, 64, 64)


def test_unpooling_puts_values_back_at_argmax():
    pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)
    unpool = nn.MaxUnpool2d(2, 2)
    x = torch.tensor([[[[1., 9., 2., 0., 5.],
                        [3., 4., 8., 7., 6.],
                        [0., 2., 1., 1., 4.]]]])
    y, idx = pool(x)
    assert y.shape[-2:] == (2, 3)
    back = unpool(y, idx, output_size=x.shape[-2:])
    expected = torch.tensor([[[[0., 9., 0., 0., 0.],
                               [0., 0., 8., 0., 6.],
                               [0., 2., 1., 0., 4.]]]])  # ties keep the first
    assert torch.equal(back, expected)


def test_bayesian_dropout_placement_and_mc():
    m = SegNet(num_classes=11, bayesian=True)
    enc = [not isinstance(s.dropout, nn.Identity) for s in m.encoder]
    dec = [not isinstance(s.dropout, nn.Identity) for s in m.decoder]
    assert enc == [False, False, True, True, True] and dec == [True, True, True, False, False]
    assert num_parameters(m) == 29_449_355
    assert mc_dropout(SegNet(num_classes=11), True) == 0
    lite = SegNet(num_classes=3, spec="segnet_lite", bayesian=True).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(lite(x), lite(x))  # eval: deterministic
        assert mc_dropout(lite, True) == 4
        assert not torch.equal(lite(x), lite(x))  # sampling


@pytest.mark.parametrize("arch", ["vgg16", "vgg16_bn"])
def test_vgg_transfer_is_exact(tmp_path, arch):
    vgg = getattr(torchvision.models, arch)(weights=None)
    if arch == "vgg16_bn":  # give BN non-default values so the copy is visible
        for m in vgg.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_()
                m.running_var.uniform_(1, 2)
                m.weight.data.uniform_()
    path = tmp_path / f"{arch}.pth"
    torch.save(vgg.state_dict(), path)
    model = load_vgg16_encoder(SegNet(num_classes=11), str(path))
    vconvs = [m for m in vgg.features if isinstance(m, nn.Conv2d)]
    vbns = [m for m in vgg.features if isinstance(m, nn.BatchNorm2d)]
    ours = model.encoder_convs()
    assert len(vconvs) == len(ours) == 13
    for i, (conv, bn) in enumerate(ours):
        assert torch.equal(conv.weight, vconvs[i].weight) and torch.equal(conv.bias, vconvs[i].bias)
        if vbns:
            for k in ("weight", "bias", "running_mean", "running_var"):
                assert torch.equal(getattr(bn, k), getattr(vbns[i], k))
        else:
            assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    # a state dict in memory works the same
    load_vgg16_encoder(SegNet(num_classes=11), vgg.state_dict())


def test_vgg_wrong_shape_names_the_layer():
    state = torchvision.models.vgg16(weights=None).state_dict()
    state["features.10.weight"] = torch.zeros(256, 64, 3, 3)
    with pytest.raises(INPUT_ERRORS, match=r"features\.10.*encoder conv 5"):
        load_vgg16_encoder(SegNet(num_classes=11), state)
    del state["features.10.weight"]
    with pytest.raises(INPUT_ERRORS, match="expected 13 conv layers, found 12"):
        load_vgg16_encoder(SegNet(num_classes=11), state)


def test_vgg_offline_message(monkeypatch, tmp_path):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(INPUT_ERRORS) as e:
        load_vgg16_encoder(SegNet(num_classes=11), "vgg16")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and "--init_encoder=none" in msg and "--init_encoder=PATH" in msg
    with pytest.raises(INPUT_ERRORS, match="not found"):
        load_vgg16_encoder(SegNet(num_classes=11), str(tmp_path / "missing.pth"))


def test_specs_are_data():
    assert set(SPECS) >= {"segnet", "segnet_lite"}
    with pytest.raises(INPUT_ERRORS, match="unknown model spec"):
        SegNet(spec="segnet_xl")


def test_unpool_runs_in_the_activation_dtype_under_autocast():
    """CPU autocast would run MaxUnpool2d in fp32 (and cast back); ours keeps bf16, bit-identical."""
    torch.manual_seed(0)
    m = SegNet(num_classes=5, spec="segnet_lite").eval()
    x = torch.rand(2, 3, 32, 48)
    dtypes = []
    hook = m.decoder[0].unpool.register_forward_hook(lambda mod, i, o: dtypes.append(o.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = m(x)
        hook.remove()
        plain = []  # the same model with autocast's own unpooling policy (fp32)
        for stage in m.decoder:
            plain.append(stage.forward)
            stage.forward = (lambda s: lambda y, i, size: s.dropout(s.convs(s.unpool(y, i, output_size=size))))(stage)
        reference = m(x)
    assert dtypes == [torch.bfloat16]
    assert torch.equal(ours, reference)
