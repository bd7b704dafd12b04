"""Table 1's eight decoder variants (TPAMI 2017 Sec. 3.1) and `python -m segnet.table1`."""
import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import Evaluate_SegNet
import Train_SegNet
from helpers import make_tutorial_camvid
from segnet import export, table1
from segnet.model import SPECS, SegNet, bilinear_kernel, num_parameters
from segnet.table1 import MODELS, PAPER, storage_multiplier

# Hand counts for 11 classes. Encoder E: 7x7 conv 3->64 then three 7x7 64->64, each with bias and BN
# (scale, shift): (3*49*64 + 64 + 128) + 3 * (64*64*49 + 64 + 128) = 612,288. Classifier: 1x1 to 11.
E, DEC7, DW7 = 612_288, 64 * 64 * 49 + 64 + 128, 64 * 49 + 64 + 128
RED, DECONV_K, DECONV_64 = 64 * 11 + 11, 11 * 11 * 64, 64 * 64 * 64  # 1x1x64xK; 8x8 transposed convs, no bias
EXPECTED = {
    "bilinear_interpolation": E + RED,                                      # no decoder parameters
    "segnet_basic": E + 4 * DEC7 + RED,
    "segnet_basic_encoder_addition": E + 4 * DEC7 + RED,                    # the addition has none
    "segnet_basic_single_channel_decoder": E + 4 * DW7 + RED,              # depthwise 7x7
    "fcn_basic": E + 4 * RED + 4 * DECONV_K + (11 * 11 + 11),               # 4 reductions, K->K classifier
    "fcn_basic_no_addition": E + RED + 4 * DECONV_K + (11 * 11 + 11),       # the deepest reduction only
    "fcn_basic_no_dim_reduction": E + 4 * DECONV_64 + RED,
    "fcn_basic_no_addition_no_dim_reduction": E + 4 * DECONV_64 + RED,
}


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_is_within_3_percent_of_table1(name):
    n = num_parameters(SegNet(11, spec=name))
    assert n == EXPECTED[name]
    assert abs(n / 1e6 / PAPER[name][1] - 1) < 0.03, (name, n)


@pytest.mark.parametrize("name", MODELS)
def test_storage_multiplier_from_the_forward_pass_is_table1s(name):
    got = storage_multiplier(SegNet(11, spec=name), torch.rand(1, 3, 45, 61) * 255)
    paper = PAPER[name][2]
    # FCN-Basic-NoAddition keeps nothing from the encoder, as the two variants Table 1 gives 0;
    # the table prints n/a there (docs/reproduction.md)
    assert got == (0 if paper == "n/a" else paper)


def test_storage_multiplier_counts_what_the_decoder_receives():
    m = SegNet(11, spec="fcn_basic")
    assert storage_multiplier(m, torch.rand(1, 3, 32, 48)) == 11
    m = SegNet(7, spec="fcn_basic")  # K follows the class count
    assert storage_multiplier(m, torch.rand(1, 3, 32, 48)) == 7


def test_table1_order_and_names_cover_the_specs():
    assert set(MODELS) <= set(SPECS) and len(MODELS) == len(PAPER) == 8
    assert list(PAPER) == list(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("hw", [(45, 61), (24, 40)])
def test_every_variant_keeps_the_frame_size_and_trains(name, hw):
    torch.manual_seed(0)
    m = SegNet(5, spec=name).train()
    x = torch.rand(2, 3, *hw) * 255
    out = m(x)
    assert out.shape == (2, 5, *hw)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters()), name


def test_deconv_starts_as_bilinear_interpolation():
    """8x8 transposed conv at stride 2 (Sec. 3.1) initialised bilinear: a constant map stays constant
    away from the border, and a ramp stays a ramp (linear interpolation)."""
    w = bilinear_kernel(3, 8)
    assert torch.equal(w[0, 1], torch.zeros(8, 8)) and torch.allclose(w[0, 0], w[0, 0].T)
    x = torch.full((1, 3, 6, 7), 2.0)
    y = F.conv_transpose2d(x, w, stride=2, padding=3)
    assert y.shape == (1, 3, 12, 14)
    inner = y[..., 4:-4, 4:-4]  # outputs that all four taps of each side reach
    torch.testing.assert_close(inner, torch.full_like(inner, 2.0))
    ramp = torch.arange(7.0).expand(1, 3, 6, 7).contiguous()
    r = F.conv_transpose2d(ramp, w, stride=2, padding=3)[0, 0, 5, 4:-4]
    torch.testing.assert_close(r[1:] - r[:-1], torch.full_like(r[1:], 0.5))
    m = SegNet(11, spec="fcn_basic")
    assert torch.equal(m.decoder[0].deconv.weight, bilinear_kernel(11, 8))


# -- every variant through the commands: train, evaluate on train, predict, export ------------------
HW = (24, 40)


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    return make_tutorial_camvid(tmp_path_factory.mktemp("t1") / "CamVid", hw=HW)


def _train(root, out, name):
    assert Train_SegNet.main([f"--data_root={root}", f"--out_dir={out}", "--config=segnet_basic_paper",
                              f"--model={name}", "--class_weights=median_frequency", f"--height={HW[0]}",
                              f"--width={HW[1]}", "--batch_size=2", "--num_workers=0", "--bn_recompute=false",
                              "--eval_interval=0", "--max_iters=2", "--hflip=true", "--scale_min=0.5"]) == 0
    return out / "last.pt"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_variant_trains_evaluates_on_train_predicts_and_exports(camvid, tmp_path, capsys, name):
    ckpt = _train(camvid, tmp_path / "run", name)
    # Table 1's train columns: the train split evaluated whole, without the training augmentation
    # (hflip and scale-crop above): every labelled pixel of the 8 frames, the same figures twice
    runs = []
    for i in range(2):
        out = tmp_path / f"eval{i}"
        assert Evaluate_SegNet.main([str(ckpt), "--split=train", f"--out_dir={out}", "--num_workers=0",
                                     "--collages=0", "--boundary=false"]) == 0
        runs.append(json.loads((out / "metrics.json").read_text()))
    assert runs[0]["split"] == "train" and runs[0]["num_images"] == 8
    assert np.asarray(runs[0]["confusion_matrix"]).sum() == 8 * (HW[0] * HW[1] - 4)  # 4 void pixels a frame
    assert runs[0]["confusion_matrix"] == runs[1]["confusion_matrix"]
    # predict mode loads it
    Image.fromarray(np.full((*HW, 3), 100, np.uint8)).save(tmp_path / "photo.png")
    assert Evaluate_SegNet.main([str(ckpt), f"--images={tmp_path / 'photo.png'}", f"--out_dir={tmp_path / 'pred'}",
                                 "--num_workers=0"]) == 0
    assert list((tmp_path / "pred").rglob("*.png"))
    # TorchScript export with export's own parity check
    capsys.readouterr()
    assert export.main([str(ckpt), "--format=torchscript", f"--out={tmp_path / 'm.pt'}"]) == 0
    printed = capsys.readouterr().out
    assert "check 24x40 against PyTorch" in printed and "warning" not in printed, printed


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bilinear_interpolation", "fcn_basic", "segnet_basic_encoder_addition"])
def test_variant_exports_to_onnx_with_dynamic_sizes(camvid, tmp_path, capsys, name):
    """The upsamplings new to Table 1 (fixed bilinear, 8x8 transposed conv with a crop, the encoder
    addition) export with symbolic sizes and match PyTorch at an odd size too."""
    pytest.importorskip("onnxruntime")
    ckpt = _train(camvid, tmp_path / "run", name)
    capsys.readouterr()
    assert export.main([str(ckpt), "--format=onnx", f"--out={tmp_path / 'm.onnx'}", "--dynamic=true"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("against PyTorch") == 2 and "warning" not in printed, printed


# -- python -m segnet.table1 ------------------------------------------------------------------------
def test_structure_mode_prints_every_variant(capsys):
    assert table1.main(["--structure", "--height=32", "--width=48", "--timing_runs=1", "--device=cpu"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert f"(`{name}`) | {PAPER[name][1]} / {EXPECTED[name] / 1e6:.3f} |" in out


def test_bad_options_are_one_line_errors():
    with pytest.raises(table1.UserError, match="--models=segnet_xl"):
        table1.main(["--models=segnet_xl", "--structure"])
    with pytest.raises(table1.UserError, match="--balancing"):
        table1.main(["--balancing=inverse", "--structure"])


@pytest.mark.slow
def test_whole_command_at_a_tiny_size_resumes_and_picks_up_finished_runs(tmp_path, monkeypatch):
    root = make_tutorial_camvid(tmp_path / "CamVid", hw=(24, 32))
    out = tmp_path / "t1"
    argv = ["--models=fcn_basic", "--balancing=all", "--height=24", "--width=32", "--max_iters=2",
            "--timing_runs=1", "--device=cpu", f"--data_root={root}", f"--out_dir={out}",
            "--train_args=--num_workers=0 --batch_size=2", "--eval_args=--num_workers=0"]
    # an interrupted run: one iteration of two done, last.pt written, not marked trained
    opts = table1.parse_overrides(table1.DEFAULTS, argv)
    interrupted = out / "fcn_basic-none"
    assert Train_SegNet.main([*table1.train_args("fcn_basic", "none", {**opts, "max_iters": 1}),
                              f"--out_dir={interrupted}"]) == 0
    assert table1.main(argv) == 0
    for b in ("median_frequency", "none"):
        run = out / f"fcn_basic-{b}"
        assert (run / "table1-trained.txt").exists()
        test = json.loads((run / "eval-test" / "metrics.json").read_text())
        train = json.loads((run / "eval-train" / "metrics.json").read_text())
        assert test["iter"] == train["iter"] == 2 and train["split"] == "train" and train["num_images"] == 8
        assert train["boundary_f1"] is None and test["boundary_f1"] is not None
    assert "--resume=" in (interrupted / "table1-trained.txt").read_text()
    text = (out / "table1.md").read_text()
    assert text.count("| FCN-Basic | paper | 0.65 | 11 | 24.2 |") == 2
    assert "| `fcn_basic` | ours | 0.646 | 11 |" in text and "| fcn_basic-none |" in text
    # a second start finds every run finished: no subprocess at all
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    (out / "table1.md").unlink()
    assert table1.main(argv) == 0
    assert (out / "table1.md").read_text().count("| fcn_basic-") == 2
