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


def test_weights_file_is_fp16_state_dict_config_and_names(weights_file):
    ckpt_path, path = weights_file
    w = torch.load(path, weights_only=True)
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert w["kind"] == WEIGHTS_KIND and w["class_names"][3] == "Road" and w["config"]["model"] == "segnet_basic"
    assert w["model"]["classifier.weight"].dtype == torch.float16
    assert w["model"]["encoder.0.convs.0.1.num_batches_tracked"].dtype == torch.long
    assert "optimizer" not in w and w["iter"] == 2
    model, _ = load_weights_file(path)
    for k, v in model.state_dict().items():
        assert v.dtype == ckpt["model"][k].dtype
        assert torch.equal(v, ckpt["model"][k].half().to(v.dtype) if v.is_floating_point() else ckpt["model"][k])


def test_pretrained_entry_point_loads_the_shipped_file(weights_file, monkeypatch):
    monkeypatch.setitem(hubconf.SHIPPED, "segnet_basic", weights_file[1])
    model = hubconf.segnet_basic(pretrained=True)
    assert model.class_names[:4] == ["Sky", "Building", "Pole", "Road"] and model.normalize == "raw255"
    with torch.no_grad():
        assert model(torch.rand(1, 3, 24, 40) * 255).shape == (1, 11, 24, 40)
    with pytest.raises(ValueError, match="predict 11 classes, not num_classes=5"):
        hubconf.segnet_basic(num_classes=5, pretrained=True)
