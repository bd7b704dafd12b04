"""The CUDA path in one command: `python -m pytest -m cuda` (skips with the reason on a CPU).

Training steps under each autocast dtype, channels_last, exact resume on the GPU, checkpoints
moving between GPU and CPU, evaluation and predict mode, the benchmark in CUDA mode, and DDP over
NCCL when two GPUs are visible. Sizes are tiny: these check that the path works and agrees with
the CPU, not how fast it is (that is `python -m segnet.bench --device=cuda`).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import Evaluate_SegNet
import Train_SegNet
from helpers import make_tutorial_camvid
from segnet import engine, optim
from segnet.model import SegNet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")]


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    return make_tutorial_camvid(tmp_path_factory.mktemp("cuda") / "CamVid", hw=(32, 48))


def tiny(camvid, out, *extra):
    return [f"--data_root={camvid}", f"--out_dir={out}", "--model=segnet_lite", "--init_encoder=none",
            "--height=32", "--width=48", "--batch_size=2", "--num_workers=0", "--bn_recompute=false",
            "--eval_interval=0", "--log_interval=1", *extra]


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_train_step_under_each_autocast_dtype(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = SegNet(5, spec="segnet_lite").to(device)
    opt = optim.make_optimizer("sgd", model, 0.05, 0.9, 0.0)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    x = torch.rand(2, 3, 32, 48, device=device)
    y = torch.randint(0, 5, (2, 32, 48), device=device)
    before = [p.detach().clone() for p in model.parameters()]
    losses = [float(engine.train_step(model, x, y, opt, scaler, device, dtype)) for _ in range(8)]
    assert all(map(lambda v: v == v and v < 1e4, losses)), losses  # finite
    assert losses[-1] < losses[0]  # it learns the batch
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if scaler is not None:
        assert scaler.get_scale() > 0 and scaler.state_dict()["_growth_tracker"] >= 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_channels_last_matches_nchw(monkeypatch):
    # fp32 for real: with TF32 convolutions (cuDNN's default) the two layouts pick different
    # kernels, and through an untrained net's 26 layers the rounding grew to 0.06 on an H100
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = SegNet(5, spec="segnet_lite").to(device).eval()
    x = torch.rand(2, 3, 45, 61, device=device)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == ref.shape == (2, 5, 45, 61)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_resume_on_the_gpu_continues_exactly(camvid, tmp_path):
    # 2 + 2 iterations give the weights of 4: the same data, seeds and RNG state. cuDNN's autotuner
    # and the atomics of the pooling backward may differ in the last bits, so close, not equal.
    args = ("--device=cuda", "--dtype=float32")
    assert Train_SegNet.main(tiny(camvid, tmp_path / "a", *args, "--max_iters=4")) == 0
    assert Train_SegNet.main(tiny(camvid, tmp_path / "b", *args, "--max_iters=2")) == 0
    assert Train_SegNet.main(tiny(camvid, tmp_path / "b", f"--resume={tmp_path / 'b' / 'last.pt'}",
                                  "--max_iters=4", "--device=cuda")) == 0
    a, b = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt")
    assert a["iter"] == b["iter"] == 4 and "cuda" in a["rng"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_moves_between_gpu_and_cpu(camvid, tmp_path, first, then):
    run = tmp_path / "run"
    assert Train_SegNet.main(tiny(camvid, run, f"--device={first}", "--dtype=float32", "--max_iters=2")) == 0
    saved = weights(run / "last.pt")
    assert all(t.device.type == "cpu" for t in saved["model"].values())  # loads anywhere
    assert Train_SegNet.main(tiny(camvid, run, f"--resume={run / 'last.pt'}", "--max_iters=3",
                                  f"--device={then}")) == 0
    assert weights(run / "last.pt")["iter"] == 3


def test_evaluation_and_predict_mode_agree_with_the_cpu(camvid, tmp_path):
    run = tmp_path / "run"
    assert Train_SegNet.main(tiny(camvid, run, "--device=cuda", "--max_iters=4")) == 0
    m = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / f"eval-{device}"
        assert Evaluate_SegNet.main([str(run / "last.pt"), f"--out_dir={out}", f"--device={device}",
                                     "--dtype=float32", "--num_workers=0"]) == 0
        m[device] = json.loads((out / "metrics.json").read_text())
    assert m["cuda"]["global_accuracy"] == pytest.approx(m["cpu"]["global_accuracy"], abs=2e-3)
    assert m["cuda"]["mean_iou"] == pytest.approx(m["cpu"]["mean_iou"], abs=5e-3)
    # by default evaluation is true fp32: TF32 off, so its figures are fp32's on any GPU
    assert Evaluate_SegNet.main([str(run / "last.pt"), f"--out_dir={tmp_path / 'default'}", "--device=cuda",
                                 "--num_workers=0"]) == 0
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    pred = tmp_path / "pred"
    assert Evaluate_SegNet.main([str(run / "last.pt"), f"--images={camvid / 'test'}", f"--out_dir={pred}",
                                 "--device=cuda", "--num_workers=0"]) == 0
    assert len(list((pred / "predictions").glob("*.png"))) == len(list((camvid / "test").glob("*.png")))


def test_bench_in_cuda_mode(camvid, tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "segnet.bench", "--device=cuda", "--height=32", "--width=48",
                        "--iters=1", "--warmup=1", f"--data_root={camvid}", "--loader_workers=0",
                        "--loader_batches=1", "--matmul_size=256", f"--json={out}"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["machine"]["device"].startswith("cuda") and res["machine"]["device_name"]
    assert all(c["error"] is None for c in res["configs"]), res["configs"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs two visible GPUs")
def test_ddp_over_nccl(camvid, tmp_path):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "Train_SegNet.py", *tiny(camvid, tmp_path / "ddp", "--max_iters=3", "--device=cuda")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert weights(tmp_path / "ddp" / "last.pt")["iter"] == 3


def test_unpooling_stays_channels_last_on_the_gpu():
    import torch.nn.functional as F
    from segnet.model import DecoderStage
    torch.manual_seed(0)
    x = torch.randn(2, 8, 45, 61, device="cuda").contiguous(memory_format=torch.channels_last)
    y, idx = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    stage = DecoderStage(8, (8,), 3).cuda().to(memory_format=torch.channels_last)
    ref = F.max_unpool2d(y, idx, 2, 2, output_size=(45, 61))
    captured = {}
    stage.convs.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    stage(y, idx, (45, 61))
    assert torch.equal(captured["x"], ref) and captured["x"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("spec", ["segnet_lite", "segnet_basic", "segnet"])
def test_compiled_training_agrees_with_eager_on_the_gpu(spec):
    import copy
    device = torch.device("cuda")
    torch.manual_seed(0)
    eager = SegNet(5, spec=spec).to(device).to(memory_format=torch.channels_last)
    compiled = copy.deepcopy(eager)
    x = torch.rand(2, 3, 32, 48, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (2, 32, 48), device=device)
    opts = [optim.make_optimizer("sgd", m, 0.01, 0.9, 0.0005) for m in (eager, compiled)]
    step_model = torch.compile(compiled)
    losses = [[float(engine.train_step(m, x, y, o, None, device, torch.bfloat16)) for _ in range(20)]
              for m, o in ((eager, opts[0]), (step_model, opts[1]))]
    torch.testing.assert_close(losses[1], losses[0], rtol=3e-2, atol=3e-2)  # 20 steps within bf16
