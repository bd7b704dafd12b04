import copy
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import cli_error, train_tiny
from segnet import export
from segnet.bench import exported
from segnet.errors import UserError
from segnet.model import SegNet, max_unpool2d_scatter, use_scatter_unpool

# Pre-pool sizes that ceil-mode pooling makes odd: 45x60 -> 23x30 -> back to 45x60, and smaller.
ODD_SIZES = [(45, 60), (23, 30), (7, 5), (1, 1), (2, 3), (12, 15)]


@pytest.mark.parametrize("size", ODD_SIZES)
def test_scatter_unpool_equals_maxunpool_values_and_gradients(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    pooled, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    a = pooled.clone().requires_grad_()
    b = pooled.clone().requires_grad_()
    ref = F.max_unpool2d(a, indices, 2, 2, output_size=size)
    out = max_unpool2d_scatter(b, indices, size)
    assert out.shape == ref.shape == (2, 3, *size)
    assert torch.equal(out, ref)
    g = torch.randn_like(ref)
    ref.backward(g)
    out.backward(g)
    assert torch.equal(a.grad, b.grad)
    assert a.grad.abs().sum() > 0


def test_scatter_unpool_switch_gives_the_same_model_output():
    torch.manual_seed(0)
    model = SegNet(5, spec="segnet_lite").eval()
    other = copy.deepcopy(model)
    assert use_scatter_unpool(other) == 4
    assert all(s.scatter_unpool for s in other.decoder) and not any(s.scatter_unpool for s in model.decoder)
    for hw in [(45, 61), (17, 9), (32, 48)]:
        x = torch.rand(2, 3, *hw)
        with torch.no_grad():
            assert torch.equal(model(x), other(x))


# -- export: a small trained model, checked against PyTorch -----------------------------------------
REPO = pathlib.Path(__file__).resolve().parents[1]
SIZES = [(24, 40), (19, 31)]  # the export size, and an odd size different from it


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """SegNet-Lite trained for a few iterations on a tiny CamVid (BN statistics are not the init's)."""
    _, ckpt = train_tiny(tmp_path_factory.mktemp("export"), "--normalize=imagenet", "--lr=0.01", max_iters=6)
    model, config, names, _ = export.load_model(ckpt)
    assert not torch.allclose(model.encoder[0].convs[0][1].running_mean, torch.zeros(32))
    return ckpt, model, config, names


def _images(h, w):
    """A real-looking batch: the fixture's kind of frame (flat regions) and noise."""
    g = torch.Generator().manual_seed(h * w)
    x = torch.rand(2, 3, h, w, generator=g)
    x[0, :, : h // 2] = torch.tensor([0.5, 0.5, 0.5])[:, None, None]
    return x.numpy()


def _assert_parity(model, config, runner, sizes=SIZES):
    reference = export.exportable(model, config["normalize"], scatter=False)  # nn.MaxUnpool2d
    for h, w in sizes:
        r = export.parity(reference, runner, _images(h, w))
        assert r["shape"] == [2, 11, h, w]
        assert r["max_abs_diff"] <= export.TOLERANCE, (h, w, r)
        assert r["argmax_agreement"] == 1.0, (h, w, r)


def test_onnx_dynamic_export_parity_and_metadata(trained, tmp_path):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    ckpt, model, config, names = trained
    path, meta = export.export(model, config, names, tmp_path / "m.onnx", "onnx", 24, 40, dynamic=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # one file, no temp or weights file left
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["logits"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert "ScatterElements" in {n.op_type for n in proto.graph.node}
    _assert_parity(model, config, export.onnx_runner(path), SIZES + [(45, 61)])
    read = export.read_metadata(path)
    assert json.loads(read["class_names"]) == names and read["class_names"] == meta["class_names"]
    assert json.loads(read["palette"])[3] == [128, 64, 128]  # Road's CamVid colour


def test_onnx_static_argmax_export(trained, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    ckpt, model, config, names = trained
    path, _ = export.export(model, config, names, tmp_path / "a.onnx", "onnx", 24, 40, argmax=True)
    run = export.onnx_runner(path)
    x = _images(24, 40)
    classes = run(x)
    with torch.inference_mode():
        ref = export.exportable(model, config["normalize"], scatter=False)(torch.from_numpy(x)).argmax(1)
    assert classes.dtype == np.int64 and classes.shape == (2, 24, 40)
    assert np.array_equal(classes, ref.numpy())
    with pytest.raises(Exception):  # not dynamic: another size is refused by onnxruntime
        run(_images(19, 31))


def test_torchscript_export_parity_and_metadata(trained, tmp_path):
    ckpt, model, config, names = trained
    path, meta = export.export(model, config, names, tmp_path / "m.pt", "torchscript", 24, 40, dynamic=True)
    _assert_parity(model, config, export.torchscript_runner(path))
    read = export.read_metadata(path)
    assert json.loads(read["class_names"]) == names and read["output"] == meta["output"]


def test_command_without_onnxruntime_still_exports(trained, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxscript")
    ckpt, *_ = trained
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    out = tmp_path / "m.onnx"
    assert export.main([str(ckpt), f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "note: onnxruntime is not installed" in printed and "pip install onnxruntime" in printed


def test_command_bad_inputs_one_line(trained, tmp_path, capsys):
    ckpt, *_ = trained
    cases = [
        ([str(tmp_path / "missing.pt")], "not found"),
        ([str(ckpt), "--format=tflite"], "--format=tflite: expected one of onnx, torchscript"),
        ([str(ckpt), f"--out={tmp_path / 'no' / 'm.onnx'}"], "does not exist"),
        ([], "usage: python -m segnet.export CHECKPOINT"),
    ]
    for i, (args, message) in enumerate(cases):
        if i == 0:  # one in a process of its own, as a user runs it
            r = subprocess.run([sys.executable, "-m", "segnet.export", *args], cwd=REPO, capture_output=True,
                               text=True, timeout=120)
            code, err = r.returncode, r.stderr
        else:
            code, err = cli_error(capsys, export.main, args)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err and err.strip().count("\n") == 0, err
    with pytest.raises(UserError):
        export.main([str(tmp_path / "missing.pt")])


def test_bench_cpu_times_each_runner_the_same_number_of_times():
    calls = {"a": 0, "b": 0}

    def runner(name):
        def run(x):
            calls[name] += 1
            return x
        return run
    res = exported.bench_cpu({"a": runner("a"), "b": runner("b")}, 8, 8, reps=3, warmup=1)
    assert calls == {"a": 4, "b": 4} and set(res) == {"a", "b"}
    assert all(r["median_s"] >= r["min_s"] > 0 and r["reps"] == 3 for r in res.values())
