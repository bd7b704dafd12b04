"""segnet.bench: the yardstick is the same network, the FLOP count matches a hand computation, the two
mask decoders agree, and the CLI runs end to end. No timing is asserted: that is the benchmark's job."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import make_tutorial_camvid
from segnet.bench import command, flops, pipeline
from segnet.bench.reference import PlainSegNet
from segnet.data.camvid import LABEL_COLORS, VOID, class_table, color_lut, decode_color_mask
from segnet.errors import UserError
from segnet.model import SegNet, num_parameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(*args):
    return subprocess.run([sys.executable, "-m", "segnet.bench", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


# -- the yardstick is the same network --------------------------------------------------------
def copy_weights(src, dst):
    """Copy state tensors in order, checking every shape: only the same layout can fit."""
    a, b = src.state_dict(), dst.state_dict()
    assert len(a) == len(b)
    for (ka, va), (kb, vb) in zip(a.items(), b.items()):
        assert va.shape == vb.shape, (ka, kb)
    dst.load_state_dict(dict(zip(b, a.values())))


def test_yardstick_is_segnet_written_plainly():
    hw = (45, 60)  # pools 45 -> 23 -> 12 -> 6 -> 3 -> 2: Caffe's ceil mode, and unpooling back to odd sizes
    torch.manual_seed(0)
    ours, yard = SegNet(11), PlainSegNet(11)
    assert num_parameters(yard) == num_parameters(ours) == 29_449_355  # segnet_train.prototxt, 11 classes
    for train in (False, True):
        assert flops.count_flops(yard, *hw, train=train) == flops.count_flops(ours, *hw, train=train)
    copy_weights(ours, yard)
    x = torch.randn(2, 3, *hw)
    for mode in ("eval", "train"):
        getattr(ours, mode)(), getattr(yard, mode)()
        with torch.no_grad():
            a, b = ours(x), yard(x)
        assert a.shape == b.shape == (2, 11, *hw)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


# -- FLOPs against the arithmetic -------------------------------------------------------------
def conv_flops(layers, k):
    """sum over convs of 2 * Cin * Cout * k * k * H * W (a multiply-add is 2 FLOPs; bias not counted)"""
    return sum(2 * cin * cout * k * k * h * w for cin, cout, (h, w) in layers)


def test_flops_of_full_segnet_match_hand_count():
    s0, s1, s2, s3, s4 = (32, 48), (16, 24), (8, 12), (4, 6), (2, 3)   # each pool halves 32x48
    layers = [(3, 64, s0), (64, 64, s0),                                 # encoder, VGG16's 13 convs
              (64, 128, s1), (128, 128, s1),
              (128, 256, s2), (256, 256, s2), (256, 256, s2),
              (256, 512, s3), (512, 512, s3), (512, 512, s3),
              (512, 512, s4), (512, 512, s4), (512, 512, s4),
              (512, 512, s4), (512, 512, s4), (512, 512, s4),            # decoder, each at its encoder's size
              (512, 512, s3), (512, 512, s3), (512, 256, s3),
              (256, 256, s2), (256, 256, s2), (256, 128, s2),
              (128, 128, s1), (128, 64, s1),
              (64, 64, s0),
              (64, 11, s0)]                                              # classifier conv1_1_D
    forward = conv_flops(layers, 3)
    assert forward == 1_893_335_040
    counted = flops.count_flops(SegNet(11), 32, 48)
    assert abs(counted - forward) <= 0.02 * forward
    # backward = grad w.r.t. input + grad w.r.t. weights (each one forward's worth), except that the
    # first conv needs no grad w.r.t. the image
    train = 3 * forward - conv_flops([(3, 64, s0)], 3)
    assert abs(flops.count_flops(SegNet(11), 32, 48, train=True) - train) <= 0.02 * train


def test_flops_of_segnet_lite_match_hand_count():
    layers3 = [(3, 32, (64, 64)), (32, 64, (32, 32)), (64, 128, (16, 16)), (128, 256, (8, 8)),
               (256, 128, (8, 8)), (128, 64, (16, 16)), (64, 32, (32, 32)), (32, 32, (64, 64))]
    forward = conv_flops(layers3, 3) + conv_flops([(32, 11, (64, 64))], 1)  # 1x1 classifier
    counted = flops.count_flops(SegNet(11, spec="segnet_lite"), 64, 64)
    assert abs(counted - forward) <= 0.02 * forward


def test_count_flops_leaves_the_model_alone():
    model = SegNet(11, spec="segnet_lite")
    before = [p.clone() for p in model.parameters()]
    flops.count_flops(model, 64, 64, train=True)
    assert all(p.device.type == "cpu" and p.grad is None and torch.equal(p, q)
               for p, q in zip(model.parameters(), before))


# -- mask decoding ----------------------------------------------------------------------------
def test_lut_decode_equals_per_class_loop():
    rgb = pipeline.synthetic_color_mask(45, 60, seed=1, block=4)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) >= 30  # nearly every CamVid colour occurs
    color_to_index = class_table(LABEL_COLORS, 11)[1]
    fast = decode_color_mask(rgb, color_lut(color_to_index))
    slow = pipeline.loop_decode(rgb, [c for c, _ in LABEL_COLORS], color_to_index)
    np.testing.assert_array_equal(fast, slow)
    assert set(np.unique(fast)) == set(range(11)) | {VOID}
    sky = (rgb == (128, 128, 128)).all(-1)
    assert (fast[sky] == 0).all() and sky.any()  # Sky is class 0 of CamVid-11


# -- the command line -------------------------------------------------------------------------
def test_cli_end_to_end_writes_json(tmp_path):
    camvid = make_tutorial_camvid(tmp_path / "CamVid")
    out = tmp_path / "bench.json"
    p = run_bench("--height=32", "--width=48", "--iters=1", "--warmup=0", "--modes=yardstick,float32",
                  f"--json={out}", f"--data_root={camvid}", "--loader_workers=0", "--loader_batches=2",
                  "--matmul_size=256", "--device=cpu")
    assert p.returncode == 0, p.stderr
    assert "yardstick" in p.stdout and "paper Table 6" in p.stdout and "targets (utilisation" in p.stdout and "figures: " in p.stdout
    res = json.loads(out.read_text())
    assert res["schema"] == "segnet-bench-v1"
    assert {"schema", "command", "machine", "settings", "repo_default", "paper", "flops", "matmul_peak",
            "configs", "speedup", "decode", "loader", "whole_process", "targets"} <= set(res)
    assert {"torch", "device", "device_name", "cpu_model", "threads"} <= set(res["machine"])
    assert res["settings"]["height"] == 32 and res["settings"]["modes"] == ["yardstick", "float32"]
    assert res["flops"]["forward_per_image"] == 1_893_335_040 and res["flops"]["yardstick_identical"]
    assert res["matmul_peak"]["float32"]["flops"] > 0
    assert [c["name"] for c in res["configs"]] == ["yardstick", "float32"]
    for c in res["configs"]:
        assert c["error"] is None
        for phase in ("train", "infer"):
            r = c[phase]
            assert r["images_per_s"] > 0 and r["peak_mb"] > 0 and len(r["iter_s"]) == 1
            assert r["utilisation"] == pytest.approx(r["flops_per_image"] * r["images_per_s"]
                                                     / res["matmul_peak"][c["dtype"]]["flops"])
        assert np.isfinite(c["train"]["loss"])
    assert res["configs"][1]["impl"] == "repo" and not res["configs"][1]["channels_last"]
    assert res["paper"]["forward_ms"] == 422.5 and res["paper"]["train_memory_mb"] == 6803
    assert res["loader"]["images_per_s"] > 0 and res["loader"]["images"] == 8
    sc = res["scoring"]  # the fixture's 4 test labels shifted 3 px, scored with the paper's BF
    assert sc["images"] == 4 and sc["seconds"] > 0 and 0 < sc["boundary_f1"] < 1 and "scoring 4 test" in p.stdout
    assert res["decode"]["lut_ms"] > 0 and res["decode"]["loop_ms"] > 0
    assert set(res["targets"]) == {"train_utilisation", "whole_process_vs_step", "loader_vs_training", "decode_speedup"}
    assert res["whole_process"] is None and res["targets"]["whole_process_vs_step"]["met"] is None
    # the CPU target: the repo default row's utilisation (float32 NCHW is that row only where it is the default)
    t = res["targets"]["train_utilisation"]
    assert t["at_least"] == 0.75 and t["unit"] == "%"
    default = [c for c in res["configs"] if c["name"] == res["repo_default"]["mode"]]
    assert t["value"] == (default[0]["train"]["utilisation"] if default else None)
    assert set(res["figures"]) == {"train_vs_yardstick", "infer_vs_yardstick", "whole_process_vs_straightforward"}
    assert res["figures"]["train_vs_yardstick"] == (pytest.approx(default[0]["train"]["images_per_s"] /
                                                    res["configs"][0]["train"]["images_per_s"]) if default else None)


def test_rows_at_several_batch_sizes(tmp_path):
    """--batch_sizes adds the repo default's row at each size: its own peak memory and utilisation."""
    out = tmp_path / "bench.json"
    p = run_bench("--height=32", "--width=48", "--iters=1", "--warmup=0", "--modes=yardstick",
                  "--batch_sizes=1,2,3", f"--json={out}", "--data_root=none", "--matmul_size=128", "--device=cpu")
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    rows = [(c["name"], c["batch_size"]) for c in res["configs"]]
    mode = res["repo_default"]["mode"]
    assert rows == [("yardstick", 2), (mode, 1), (mode, 3)] and res["settings"]["batch_sizes"] == [2, 1, 3]
    for c in res["configs"][1:]:
        assert c["train"]["peak_mb"] > 0 and 0 < c["train"]["utilisation"] and c["repo_default"]
    assert " b3 " in p.stdout or p.stdout.count(" b3") >= 1


@pytest.mark.slow
def test_whole_process_runs_both_scripts(tmp_path):
    camvid = make_tutorial_camvid(tmp_path / "CamVid")
    out = tmp_path / "bench.json"
    p = run_bench("--height=32", "--width=48", "--iters=1", "--warmup=0", "--modes=yardstick", f"--json={out}",
                  f"--data_root={camvid}", "--loader_workers=0", "--loader_batches=1", "--matmul_size=128",
                  "--device=cpu", "--whole_process", "--whole_iters=4")
    assert p.returncode == 0, p.stderr
    wp = json.loads(out.read_text())["whole_process"]
    for name in ("repo", "straightforward"):
        r = wp[name]
        assert r["iters"] == 4 and r["trained_line"].startswith("trained 4 iterations in ")
        assert 0 < r["s_per_iter"] < r["process_s"] and r["trained_images_per_s"] > 0
    assert "Train_SegNet.py" in wp["repo"]["command"] and "--max_iters=4" in wp["repo"]["command"]
    assert wp["speedup"] == pytest.approx(wp["repo"]["images_per_s"] / wp["straightforward"]["images_per_s"])
    assert "whole process speed-up" in p.stdout
    assert "-m segnet.bench.reference" in wp["straightforward"]["command"]


def test_bad_argument_is_one_line_and_exit_2():
    p = run_bench("--bogus=1")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--bogus" in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--modes=float16"], "float16 is CUDA only"),
    (["--modes=yardstick,fp8"], "'fp8' is not a mode"),
    (["--batch_size=0"], "--batch_size=0: expected a value >= 1"),
    (["--iters=many"], "--iters=many: expected an integer"),
    (["--bogus=1"], "unknown key --bogus; valid keys: batch_size, batch_sizes, compile"),
    (["--data_root=/nonexistent/CamVid"], "no such folder"),
    (["--compile", "--warmup=0"], "--compile needs --warmup >= 1"),
    (["--batch_sizes=2,x"], "--batch_sizes=2,x: expected a comma list of integers"),
    (["--batch_sizes=0"], "--batch_sizes=0: expected batch sizes >= 1"),
])
def test_bad_values_are_user_errors(argv, message):
    with pytest.raises(UserError, match=message):
        command.main(["--device=cpu", *argv])
