"""hubconf.py entry points and the shipped-weights format (segnet/weights.py)."""
import os

import pytest
import torch

import hubconf
import Train_SegNet
from helpers import make_tutorial_camvid
from segnet.weights import WEIGHTS_KIND, load_weights_file, main as weights_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name, params", [("segnet", 29_449_355), ("segnet_basic", 1_416_587),
                                          ("segnet_lite", None)])
def test_entry_points_load_through_torch_hub(name, params):
    model = torch.hub.load(REPO, name, source="local", num_classes=11)
    assert not model.training
    with torch.no_grad():
        assert model(torch.rand(1, 3, 45, 61)).shape == (1, 11, 45, 61)
    if params:
        assert sum(p.numel() for p in model.parameters()) == params


def test_weights_that_are_not_shipped_are_one_clear_error():
    with pytest.raises(ValueError, match=r"pretrained segnet weights are not shipped; train them with "
                                         r"python Train_SegNet.py"):
        hubconf.segnet(pretrained=True)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    camvid = make_tutorial_camvid(tmp / "CamVid", hw=(24, 40))
    run = tmp / "run"
    assert Train_SegNet.main(["--config=segnet_basic", f"--data_root={camvid}", f"--out_dir={run}",
                              "--height=24", "--width=40", "--batch_size=2", "--num_workers=0",
                              "--bn_recompute=false", "--eval_interval=0", "--max_iters=2"]) == 0
    out = tmp / "segnet_basic_camvid.pt"
    assert weights_main([str(run / "last.pt"), f"--out={out}"]) == 0
    return run / "last.pt", out


def test_weights_file_is_an_fp32_state_dict_with_config_and_names_and_fp16_on_request(weights_file, tmp_path):
    ckpt_path, path = weights_file
    w = torch.load(path, weights_only=True)
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert w["kind"] == WEIGHTS_KIND and w["class_names"][3] == "Road" and w["config"]["model"] == "segnet_basic"
    assert w["model"]["classifier.weight"].dtype == torch.float32  # the default: the checkpoint's own values
    assert w["model"]["encoder.0.convs.0.1.num_batches_tracked"].dtype == torch.long
    assert "optimizer" not in w and w["iter"] == 2
    half = tmp_path / "fp16.pt"
    assert weights_main([str(ckpt_path), f"--out={half}", "--dtype=float16"]) == 0
    assert torch.load(half, weights_only=True)["model"]["classifier.weight"].dtype == torch.float16
    for file, cast in ((path, lambda t: t), (half, lambda t: t.half())):
        model, _ = load_weights_file(file)
        for k, v in model.state_dict().items():
            assert v.dtype == ckpt["model"][k].dtype  # loaded back to fp32
            assert torch.equal(v, cast(ckpt["model"][k]).to(v.dtype) if v.is_floating_point() else ckpt["model"][k])


def test_pretrained_entry_point_loads_the_shipped_file(weights_file, monkeypatch):
    monkeypatch.setitem(hubconf.SHIPPED, "segnet_basic", weights_file[1])
    model = hubconf.segnet_basic(pretrained=True)
    assert model.class_names[:4] == ["Sky", "Building", "Pole", "Road"] and model.normalize == "raw255"
    with torch.no_grad():
        assert model(torch.rand(1, 3, 24, 40) * 255).shape == (1, 11, 24, 40)
    with pytest.raises(ValueError, match="predict 11 classes, not num_classes=5"):
        hubconf.segnet_basic(num_classes=5, pretrained=True)


def test_a_weights_file_evaluates_like_a_checkpoint_and_writes_the_results_card(weights_file, tmp_path):
    import json

    import Evaluate_SegNet
    ckpt_path, path = weights_file
    camvid = ckpt_path.parent.parent / "CamVid"
    fp16 = tmp_path / "fp16.pt"
    assert weights_main([str(ckpt_path), f"--out={fp16}", "--dtype=float16"]) == 0
    out = {}
    for name, src in (("ckpt", ckpt_path), ("weights", path), ("weights16", fp16)):
        assert Evaluate_SegNet.main([str(src), f"--data_root={camvid}", f"--out_dir={tmp_path / name}",
                                     "--num_workers=0", "--dtype=float32"]) == 0
        out[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    # fp32 weights (the default): the checkpoint's predictions exactly; fp16: close (rounding flips
    # near-ties; on the shipped model it moved test mIoU by 0.01 point, docs/weights.md)
    assert out["weights"]["confusion_matrix"] == out["ckpt"]["confusion_matrix"]
    assert abs(out["weights16"]["global_accuracy"] - out["ckpt"]["global_accuracy"]) < 0.05
    card = (tmp_path / "weights" / "results.md").read_text()
    assert "| **ours**: segnet_basic, 24x40 input, iteration 2" in card
    assert "| SegNet-Basic, TPAMI 2017 Table 1 (median frequency balancing) | 82.70 | 62.00 | 47.70 | 35.78 |" in card
    assert "chainercv" in card and "python Evaluate_SegNet.py" in card


def test_resuming_from_a_weights_file_is_one_line(weights_file):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "Train_SegNet.py", f"--resume={weights_file[1]}"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "is a weights file (model only, no optimizer state)" in r.stderr and "Traceback" not in r.stderr
