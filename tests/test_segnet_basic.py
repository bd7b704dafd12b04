"""SegNet-Basic, the paper's controlled-benchmark model (TPAMI Sec. 3, Table 1), against
SegNet-Tutorial Models/segnet_basic_train.prototxt and bayesian_segnet_basic_train.prototxt."""
import csv
import os
import signal

import pytest
import torch
import torch.nn as nn
from torchvision import tv_tensors

import Train_SegNet
from helpers import make_tutorial_camvid
from segnet import engine
from segnet.config import parse_overrides
from segnet.model import SegNet, num_parameters
from segnet.transforms import eval_transforms, input_to_unit, train_transforms


def call_order(model, x):
    """Leaf modules in the order forward() runs them, as class names (Identity placeholders left out)."""
    names = []
    hooks = [m.register_forward_hook(lambda m, i, o: names.append(type(m).__name__))
             for m in model.modules() if not list(m.children()) and not isinstance(m, nn.Identity)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return names


def test_parameter_count_matches_the_prototxt():
    # 4 x 7x7 encoder convs (3->64, then 64->64) + 4 x 7x7 decoder convs, each with bias and BN
    # (scale, shift), then a 1x1 classifier: 1,416,587 for 11 classes (Table 1 rounds to 1.425M).
    assert num_parameters(SegNet(11, spec="segnet_basic")) == 1_416_587
    assert num_parameters(SegNet(11, spec="segnet_basic", bayesian=True)) == 1_416_587


def test_layer_order_follows_the_prototxt():
    m = SegNet(11, spec="segnet_basic").eval()
    encoder = ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    decoder = ["MaxUnpool2d", "Conv2d", "BatchNorm2d"]  # conv_decodeN => conv_decodeN_bn, no ReLU
    assert call_order(m, torch.rand(1, 3, 45, 61) * 255) == \
        ["LocalResponseNorm"] + encoder * 4 + decoder * 4 + ["Conv2d"]
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(7, 7)] * 8 + [(1, 1)]
    assert [c.padding for c in convs[:8]] == [(3, 3)] * 8
    assert [c.out_channels for c in convs] == [64] * 8 + [11]
    assert not any(isinstance(mod, nn.ReLU) for s in m.decoder for mod in s.modules())


def test_no_relu_before_the_classifier():
    m = SegNet(11, spec="segnet_basic").eval()
    seen = []
    hooks = [m.decoder[-1].register_forward_hook(lambda mod, i, o: seen.append(o.detach().clone())),
             m.classifier.register_forward_pre_hook(lambda mod, i: seen.append(i[0].detach().clone()))]
    with torch.no_grad():
        m(torch.rand(2, 3, 32, 48) * 255)
    for h in hooks:
        h.remove()
    decoder_out, classifier_in = seen
    assert torch.equal(decoder_out, classifier_in)
    assert classifier_in.min() < 0  # a ReLU would have clipped these


def test_bayesian_dropout_sits_after_pool3_pool4_and_decoders_4_3():
    m = SegNet(11, spec="segnet_basic", bayesian=True).eval()
    order = call_order(m, torch.rand(1, 3, 32, 48) * 255)
    # bayesian_segnet_basic_train.prototxt: encoder3/4 "pool => drop", decoder4/3 "conv => BN => drop"
    enc = ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    dec = ["MaxUnpool2d", "Conv2d", "BatchNorm2d"]
    assert order == (["LocalResponseNorm"] + enc * 2 + (enc + ["Dropout"]) * 2 +
                     (dec + ["Dropout"]) * 2 + dec * 2 + ["Conv2d"])
    assert all(d.p == 0.5 for d in m.modules() if isinstance(d, nn.Dropout))


def test_input_lrn_is_caffes_formula_by_hand():
    # Caffe LRN (ACROSS_CHANNELS): y_c = x_c / (k + alpha/n * sum_{c' in [c-2, c+2]} x_c'^2)^beta,
    # n = local_size = 5, alpha = 1e-4, beta = 0.75, k = 1, zero outside the channels.
    lrn = SegNet(11, spec="segnet_basic").input_norm
    x = torch.tensor([100.0, 50.0, 200.0]).view(1, 3, 1, 1)
    # every channel's window covers all 3: 1 + 1e-4 / 5 * (100^2 + 50^2 + 200^2) = 2.05
    expected = torch.tensor([100.0, 50.0, 200.0]) / 2.05 ** 0.75  # 2.05^0.75 = 1.713229
    assert torch.allclose(lrn(x).flatten(), expected, rtol=1e-6)
    assert abs(float(lrn(x).flatten()[0]) - 58.3693) < 1e-3
    # 7 channels: the window is cut at the ends (channel 0 sees 0..2, channel 3 sees 1..5)
    x = torch.arange(1.0, 8.0).mul(30).view(1, 7, 1, 1)
    v = x.flatten()
    by_hand = [v[c] / (1 + 1e-4 / 5 * sum(v[j] ** 2 for j in range(max(0, c - 2), min(7, c + 3)))) ** 0.75
               for c in range(7)]
    assert torch.allclose(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)(x).flatten(), torch.stack(by_hand), rtol=1e-6)


def test_raw255_input_is_the_pixel_values():
    image = tv_tensors.Image(torch.tensor([[[0, 17, 255]]], dtype=torch.uint8).expand(3, 1, 3).clone())
    mask = tv_tensors.Mask(torch.zeros(1, 3, dtype=torch.uint8))
    x, _ = train_transforms(1, 3, normalize="raw255")(image, mask)
    assert x.dtype == torch.float32 and torch.equal(x[0, 0], torch.tensor([0.0, 17.0, 255.0]))
    x, _ = eval_transforms(1, 3, normalize="raw255")(image, mask)
    assert torch.equal(x[0, 0], torch.tensor([0.0, 17.0, 255.0]))
    mean, std = input_to_unit("raw255")
    assert abs(255 * std[0] + mean[0] - 1.0) < 1e-9


def test_preset_is_the_tutorial_solver():
    c = parse_overrides({"config": "camvid", **Train_SegNet.DEFAULTS}, ["--config=segnet_basic"])
    # segnet_basic_solver.prototxt: base_lr 0.1 fixed, momentum 0.9, weight_decay 0.0005,
    # max_iter 10000; segnet_basic_train.prototxt: batch 4, raw input, from scratch.
    assert (c["model"], c["lr"], c["lr_schedule"], c["momentum"], c["weight_decay"]) == \
        ("segnet_basic", 0.1, "fixed", 0.9, 0.0005)
    assert (c["batch_size"], c["max_iters"], c["normalize"], c["init_encoder"]) == (4, 10000, "raw255", "none")
    # the median-frequency weights: auto, which CamVid-11 resolves to the published ones
    # (test_train.test_segnet_basic_on_camvid_11_keeps_the_published_weights)
    assert (c["class_weights"], c["optimizer"], c["caffe_lr_mult"], c["hflip"]) == ("auto", "sgd", True, False)
    assert c["best_metric"] == "global_accuracy"  # TPAMI Sec. 3.3
    assert (c["height"], c["width"]) == (360, 480)


@pytest.fixture
def camvid(tmp_path):
    return make_tutorial_camvid(tmp_path / "CamVid")


def basic_args(camvid, out, *extra):
    return ["--config=segnet_basic", f"--data_root={camvid}", f"--out_dir={out}", "--height=32", "--width=48",
            "--batch_size=2", "--num_workers=0", "--bn_recompute=false", "--log_interval=1", *extra]


def test_a_short_run_writes_the_loss_and_the_curves(camvid, tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    assert Train_SegNet.main(basic_args(camvid, run, "--max_iters=4", "--eval_interval=2")) == 0
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iter"]) for r in rows] == [2, 4]
    assert all(float(r["train_loss"]) > 0 for r in rows)
    png = (run / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["config"]["model"] == "segnet_basic" and ck["config"]["normalize"] == "raw255"


def test_sigterm_saves_last_like_ctrl_c(camvid, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = engine.train_step

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)
    monkeypatch.setattr(engine, "train_step", step)
    before = signal.getsignal(signal.SIGTERM)
    assert Train_SegNet.main(basic_args(camvid, tmp_path / "run", "--max_iters=10", "--eval_interval=0")) == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["iter"] in (2, 3)  # the signal lands during step 3, or just after it


@pytest.mark.parametrize("before_each, calls", [(True, 2), (False, 1)])
def test_bn_statistics_recomputed_before_every_validation(camvid, tmp_path, monkeypatch, before_each, calls):
    seen = []
    real = engine.recompute_bn_statistics
    monkeypatch.setattr(engine, "recompute_bn_statistics", lambda *a, **k: (seen.append(1), real(*a, **k))[1])
    assert Train_SegNet.main(basic_args(camvid, tmp_path / "run", "--max_iters=4", "--eval_interval=2",
                                        "--bn_recompute=true", f"--bn_recompute_val={before_each}")) == 0
    assert len(seen) == calls  # iterations 2 and 4, or only at the end
    assert parse_overrides({"config": "camvid", **Train_SegNet.DEFAULTS},
                           ["--config=segnet_basic"])["bn_recompute_val"] is True
