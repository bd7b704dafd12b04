"""data_on_device: the training split on the device gives the DataLoader's batches exactly (on CPU
tensors, as CI runs it), augmentation included; num_workers=auto."""
import os

import pytest
import torch

import Train_SegNet
from helpers import make_tutorial_camvid
from segnet import device_data, runtime
from segnet.build import build_dataset
from segnet.data import DATASETS
from segnet.data import sampling
from segnet.transforms import to_float, train_geometry


def config_for(root, **kw):
    return {**Train_SegNet.DEFAULTS, "data_root": str(root), "height": 24, "width": 40, "normalize": "imagenet",
            **kw}


def both_paths(config, batch_size=3, n=4, workers=0):
    """The first `n` batches of the DataLoader path and of the device path (CPU tensors)."""
    sampler = sampling.SeededSampler(8, config["seed"])
    batches = sampling.EpochBatches(sampler, batch_size)
    loader = torch.utils.data.DataLoader(sampling.Seeded(build_dataset(config, "train", train=True)),
                                         batch_sampler=batches, num_workers=workers)
    raw = device_data.raw_dataset(lambda t: DATASETS["camvid"].build(config["data_root"], "train", 11, t, False))
    on_device = device_data.DeviceData.load(
        raw, torch.device("cpu"), train_geometry(config["height"], config["width"], config["hflip"], config["scale_min"]),
        to_float(config["normalize"]))
    take = lambda it: [b for b, _ in zip(it, range(n))]
    return take(iter(loader)), take(iter(on_device.loader(batches)))


@pytest.mark.parametrize("augment", [dict(hflip=False, scale_min=1.0), dict(hflip=True, scale_min=0.5)])
def test_device_batches_equal_the_loaders(tmp_path, augment):
    # 4 batches of 3 over 8 frames: the third batch spans the first epoch's end
    root = make_tutorial_camvid(tmp_path / "CamVid", hw=(32, 48))
    config = config_for(root, **augment)
    from_files, on_device = both_paths(config)
    for (a_img, a_mask), (b_img, b_mask) in zip(from_files, on_device):
        assert a_img.shape == b_img.shape == (3, 3, 24, 40) and b_img.dtype == torch.float32
        assert b_mask.dtype == torch.int64 and b_mask.shape == (3, 24, 40)
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    if augment["hflip"]:  # the augmentation did something: some sample differs from its plain resize
        plain, _ = both_paths(config_for(root), n=4)
        assert any(not torch.equal(a[0], b[0]) for a, b in zip(plain, on_device))


def test_device_data_is_stacked_uint8_and_sized(tmp_path):
    root = make_tutorial_camvid(tmp_path / "CamVid", hw=(32, 48))
    raw = device_data.raw_dataset(lambda t: DATASETS["camvid"].build(str(root), "train", 11, t, False))
    assert device_data.split_bytes(raw) == 8 * (3 * 32 * 48 + 32 * 48)
    data = device_data.DeviceData.load(raw, torch.device("cpu"), train_geometry(24, 40), to_float("none"))
    assert data.images.shape == (8, 3, 32, 48) and data.images.dtype == data.masks.dtype == torch.uint8
    assert data.nbytes == device_data.split_bytes(raw) and int(data.masks.max()) == 255  # void kept as 255


def test_resolving_data_on_device():
    cpu = torch.device("cpu")
    assert device_data.resolve_data_on_device("auto", cpu, lambda: 1) is False  # the loader on a CPU
    assert device_data.resolve_data_on_device("true", cpu, lambda: 1) is True
    assert device_data.resolve_data_on_device("false", cpu, lambda: 1) is False
    with pytest.raises(ValueError, match="data_on_device=maybe: expected one of auto, true, false"):
        device_data.resolve_data_on_device("maybe", cpu, lambda: 1)


def test_training_on_device_data_is_bit_identical_to_the_loader(tmp_path):
    """A whole run, flips and BN recomputation before each validation included: the same weights."""
    root = make_tutorial_camvid(tmp_path / "CamVid", hw=(32, 48))
    runs = {}
    for where, workers in (("true", "0"), ("false", "1")):
        out = tmp_path / where
        assert Train_SegNet.main([f"--data_root={root}", f"--out_dir={out}", "--model=segnet_lite",
                                  "--init_encoder=none", "--height=24", "--width=40", "--batch_size=3",
                                  f"--num_workers={workers}", "--hflip=true", "--scale_min=0.7",
                                  "--bn_recompute_val=true", "--eval_interval=2", "--max_iters=4",
                                  f"--data_on_device={where}"]) == 0
        runs[where] = torch.load(out / "last.pt", weights_only=True)
    a, b = runs["true"], runs["false"]
    assert a["iter"] == b["iter"] == 4 and a["metrics"] == b["metrics"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_num_workers_auto_scales_with_the_cores(monkeypatch):
    for cores, processes, expected in ((2, 1, 2), (1, 1, 2), (16, 1, 15), (16, 2, 7), (64, 1, 16)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert runtime.resolve_num_workers("auto", processes) == expected
    assert runtime.resolve_num_workers("3") == 3 and runtime.resolve_num_workers(0) == 0
    for bad in ("-1", "two", "1.5"):
        with pytest.raises(ValueError, match=f"--num_workers={bad}: expected a value >= 0 or auto"):
            runtime.resolve_num_workers(bad)
