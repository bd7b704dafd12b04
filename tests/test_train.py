import math
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import Train_SegNet
from helpers import cli_error, make_tutorial_camvid
from segnet import engine, evaluation, optim
from segnet.config import PRESETS, parse_overrides, resolve_preset
from segnet.data import sampling
from segnet.errors import UserError
from segnet.model import SegNet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def camvid(tmp_path):
    return make_tutorial_camvid(tmp_path / "CamVid")


def tiny_args(camvid, out, *extra):
    return [f"--data_root={camvid}", f"--out_dir={out}", "--model=segnet_lite", "--init_encoder=none",
            "--height=32", "--width=48", "--batch_size=2", "--num_workers=0", "--bn_recompute=false",
            "--eval_interval=0", "--log_interval=1", *extra]


def run_script(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


# -- configuration ----------------------------------------------------------------------------
def test_defaults_are_the_paper_recipe():
    d = Train_SegNet.DEFAULTS
    assert (d["lr"], d["momentum"], d["weight_decay"], d["batch_size"], d["max_iters"]) == (0.001, 0.9, 0.0005, 4, 40000)
    assert (d["init_encoder"], d["class_weights"], d["num_classes"], d["height"], d["width"]) == ("vgg16", "auto", 11, 360, 480)
    assert (d["data_root"], d["dataset"], d["model"], d["out_dir"], d["resume"]) == ("data/CamVid", "camvid", "segnet", "", "")


def test_override_parsing_types_unknown_keys_and_presets():
    d = {"config": "camvid", **Train_SegNet.DEFAULTS}
    c = parse_overrides(d, ["--lr=0.01", "--batch_size=8", "--hflip=true", "--dtype=float32"])
    assert c["lr"] == 0.01 and c["batch_size"] == 8 and c["hflip"] is True and c["dtype"] == "float32"
    assert d["lr"] == 0.001  # defaults untouched
    with pytest.raises(UserError, match="unknown key --lrr; valid keys: .*batch_size"):
        parse_overrides(d, ["--lrr=1"])
    with pytest.raises(UserError, match="--batch_size=four: expected an integer"):
        parse_overrides(d, ["--batch_size=four"])
    with pytest.raises(UserError, match="--hflip=maybe: expected a boolean"):
        parse_overrides(d, ["--hflip=maybe"])
    with pytest.raises(UserError, match="use --key=value"):
        parse_overrides(d, ["lr=1"])
    # a path after --key= is not expanded by the shell: ~ means the home folder all the same
    c = parse_overrides(d, ["--data_root=~/data/CamVid", "--out_dir=~", "--resume=a~/last.pt"])
    home = os.path.expanduser("~")
    assert (c["data_root"], c["out_dir"], c["resume"]) == (os.path.join(home, "data/CamVid"), home, "a~/last.pt")
    with pytest.raises(UserError, match="--dtype=float64: expected one of"):
        parse_overrides(d, ["--dtype=float64"], choices=Train_SegNet.CHOICES)
    # the preset applies first and explicit values still win, in any order
    c = parse_overrides(d, ["--max_iters=7", "--config=multidigit_mnist"])
    assert c["model"] == "segnet_lite" and c["height"] == 64 and c["max_iters"] == 7
    assert c["config"] == "multidigit_mnist"
    assert set(PRESETS["multidigit_mnist"]) <= set(d)
    with pytest.raises(UserError, match="unknown preset"):
        parse_overrides(d, ["--config=voc"])


# -- loss and optimisation --------------------------------------------------------------------
def test_caffe_loss_normalisation_hand_computed():
    # 1 image, 2 classes, 3 pixels: targets 0, 1, void
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])  # (1, 2, 1, 3)
    target = torch.tensor([[[0, 1, 255]]])
    w = torch.tensor([0.5, 3.0])
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))   # pixel 1, class 0
    l1 = -math.log(math.exp(1) / (math.exp(0) + math.exp(1)))  # pixel 2, class 1
    expected = (0.5 * l0 + 3.0 * l1) / 2  # divided by the 2 non-void pixels, not by 0.5 + 3.0
    got = engine.caffe_cross_entropy(logits, target, w)
    assert abs(float(got) - expected) < 1e-6
    torch_mean = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert abs(float(torch_mean) - (0.5 * l0 + 3.0 * l1) / 3.5) < 1e-6  # PyTorch's differs
    assert float(engine.caffe_cross_entropy(logits, torch.full_like(target, 255))) == 0.0


def test_caffe_param_groups_and_schedules():
    m = SegNet(num_classes=3, spec="segnet_lite")
    groups = optim.caffe_param_groups(m, 0.0005)
    assert [(g["lr_mult"], g["weight_decay"]) for g in groups] == [(1.0, 0.0005), (2.0, 0.0), (1.0, 0.0)]
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    assert any(p is m.classifier.bias for p in groups[1]["params"])
    opt = torch.optim.SGD(groups, lr=0.1)
    optim.set_lr(opt, 0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.02, 0.01]
    assert optim.learning_rate("fixed", 0.1, 500, 1000) == 0.1
    assert abs(optim.learning_rate("cosine", 0.1, 500, 1000) - 0.05) < 1e-12
    assert abs(optim.learning_rate("poly", 0.1, 500, 1000) - 0.1 * 0.5 ** 0.9) < 1e-12


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    y = (x[:, 0] > 0.5).long() + (x[:, 1] > 0.5).long()  # 3 classes from the colour
    y[:, 0, 0] = 255
    model = SegNet(num_classes=3, spec="segnet_lite")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(150):
        engine.train_step(model, x, y, opt, None, torch.device("cpu"), torch.float32)
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y)[y != 255].float().mean()
    assert acc > 0.95


def test_sampler_order_depends_only_on_seed_epoch_and_position():
    a = sampling.SeededSampler(10, seed=3)
    a.set_epoch(2)
    full = list(a)
    a.set_epoch(2, start=4)
    assert list(a) == full[4:]
    b = sampling.SeededSampler(10, seed=3)
    b.set_epoch(3)
    assert [i for i, _ in list(b)] != [i for i, _ in full]
    shards = [sampling.SeededSampler(10, seed=3, rank=r, world=3) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    got = [i for s in shards for i, _ in s]
    assert len(got) == 12 and set(got) == set(range(10))  # padded to equal shares, all covered


def stream(batches, n):
    it = iter(batches)
    return [next(it) for _ in range(n)]


def test_one_epoch_visits_every_index_once_and_batches_run_across_epochs():
    # CamVid's 367 training frames in batches of 12: 30 whole batches and 7 images of the 31st
    # make epoch 0; the 31st's other 5 open epoch 1. Nothing is dropped.
    sampler = sampling.SeededSampler(367, seed=0)
    got = [item for batch in stream(sampling.EpochBatches(sampler, 12), 62) for item in batch]
    assert all(len(b) == 12 for b in stream(sampling.EpochBatches(sampler, 12), 62))
    epoch0, epoch1 = [i for i, _ in got[:367]], [i for i, _ in got[367:734]]
    assert sorted(epoch0) == list(range(367)) and sorted(epoch1) == list(range(367))
    assert epoch0 != epoch1  # shuffled again before the next epoch
    assert got[:367] == sampler.epoch_items(0) and got[367:734] == sampler.epoch_items(1)
    # the old epochs of per_rank // batch_size batches skipped 7 images of every epoch
    assert len(set(epoch0[:30 * 12])) == 360


def test_epoch_batches_resume_mid_epoch_and_ranks_share_each_epoch():
    sampler = sampling.SeededSampler(10, seed=3)
    full = stream(sampling.EpochBatches(sampler, 4), 6)  # 24 positions: epochs 0, 1 and part of 2
    later = sampling.EpochBatches(sampler, 4)
    later.start_at(3)  # position 12: two images into epoch 1
    assert stream(later, 3) == full[3:]
    assert [i for i, _ in full[2][:2]] == [i for i, _ in sampler.epoch_items(0)[8:]]
    ranks = [sampling.EpochBatches(sampling.SeededSampler(10, seed=3, rank=r, world=3), 2) for r in range(3)]
    first = [i for b in ranks for batch in stream(b, 2) for i, _ in batch]  # 2 batches of 2 = a rank's 4
    assert len(first) == 12 and set(first) == set(range(10))  # one epoch: padded to equal shares
    with pytest.raises(ValueError, match="batch_size=11 is larger than the 10 images of an epoch"):
        sampling.EpochBatches(sampler, 11)


def test_segnet_basic_paper_preset_is_segnet_basic_at_batch_12():
    paper, tutorial = resolve_preset("segnet_basic_paper"), resolve_preset("segnet_basic")
    assert (paper["batch_size"], paper["max_iters"], tutorial["batch_size"], tutorial["max_iters"]) == (12, 16000, 4, 10000)
    same = {k: v for k, v in paper.items() if k not in ("batch_size", "max_iters")}
    assert same == {k: tutorial[k] for k in same} and set(same) == set(tutorial) - {"batch_size", "max_iters"}
    c = parse_overrides({"config": "camvid", **Train_SegNet.DEFAULTS}, ["--config=segnet_basic_paper"])
    assert (c["lr"], c["lr_schedule"], c["momentum"], c["normalize"], c["model"]) == (0.1, "fixed", 0.9, "raw255", "segnet_basic")
    assert (c["eval_interval"], c["bn_recompute_val"], c["best_metric"]) == (500, True, "global_accuracy")


def test_presets_resolve_to_the_recipes_they_stand_for():
    """A preset states only its changes ("extends" names the preset it changes); resolved, each
    gives exactly the recipe it gave when every preset was written out whole."""
    assert {k: v for k, v in PRESETS["segnet_basic_paper"].items()} == \
        {"extends": "segnet_basic", "batch_size": 12, "max_iters": 16000}
    assert resolve_preset("segnet_basic_paper") == {
        "model": "segnet_basic", "init_encoder": "none", "normalize": "raw255", "optimizer": "sgd",
        "batch_size": 12, "max_iters": 16000, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005,
        "lr_schedule": "fixed", "caffe_lr_mult": True, "class_weights": "auto", "eval_interval": 500,
        "best_metric": "global_accuracy", "bn_recompute_val": True}
    assert resolve_preset("segnet_basic") == {
        "model": "segnet_basic", "init_encoder": "none", "normalize": "raw255", "optimizer": "sgd",
        "batch_size": 4, "max_iters": 10000, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005,
        "lr_schedule": "fixed", "caffe_lr_mult": True, "class_weights": "auto", "eval_interval": 500,
        "best_metric": "global_accuracy", "bn_recompute_val": True}
    assert resolve_preset("camvid") == {}
    assert resolve_preset("multidigit_mnist") == PRESETS["multidigit_mnist"]
    for name, own in PRESETS.items():  # no preset restates a value of the preset it extends
        base = resolve_preset(own["extends"]) if "extends" in own else {}
        assert not [k for k, v in own.items() if k in base and base[k] == v], name


def test_segnet_basic_on_camvid_11_keeps_the_published_weights(camvid):
    """class_weights=auto is resolved by the data set: on CamVid-11 the paper's weights, as the
    preset stated them before it stopped naming one data set's weights."""
    config, _ = Train_SegNet.configure(["--config=segnet_basic", f"--data_root={camvid}"])
    assert config["class_weights"] == "paper"


# -- whole runs -------------------------------------------------------------------------------
def test_checkpoint_contents_and_resume_is_exact(camvid, tmp_path):
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert Train_SegNet.main(tiny_args(camvid, straight, "--max_iters=4")) == 0
    assert Train_SegNet.main(tiny_args(camvid, part, "--max_iters=2")) == 0
    ck2 = torch.load(part / "last.pt", weights_only=True)
    assert ck2["iter"] == 2
    assert Train_SegNet.main(tiny_args(camvid, part, f"--resume={part / 'last.pt'}", "--max_iters=4")) == 0
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(part / "last.pt", weights_only=True)
    assert {"model", "optimizer", "config", "iter", "best_metric", "class_names", "scaler", "rng"} <= set(a)
    assert a["iter"] == b["iter"] == 4 and a["class_names"][3] == "Road"
    assert isinstance(a["config"], dict) and a["config"]["normalize"] == "none"
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert not torch.equal(a["model"]["classifier.weight"], ck2["model"]["classifier.weight"])
    assert (straight / "best.pt").exists() and (straight / "metrics.csv").read_text().startswith("iter,")
    assert not list(straight.glob(".segnet-tmp-*"))


def test_resume_mid_epoch_is_bit_identical(camvid, tmp_path):
    """Batches of 3 over the fixture's 8 training frames: iteration 3 stops at stream position 9,
    one image into epoch 1, and iteration 3's batch itself spans the epochs 0 and 1 boundary."""
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert Train_SegNet.main(tiny_args(camvid, straight, "--max_iters=5", "--batch_size=3")) == 0
    assert Train_SegNet.main(tiny_args(camvid, part, "--max_iters=3", "--batch_size=3")) == 0
    assert Train_SegNet.main(tiny_args(camvid, part, f"--resume={part / 'last.pt'}", "--max_iters=5", "--batch_size=3")) == 0
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(part / "last.pt", weights_only=True)
    assert a["iter"] == b["iter"] == 5
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][i]["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])


def test_resume_keeps_the_runs_own_settings(camvid, tmp_path):
    run = tmp_path / "run"
    args = tiny_args(camvid, run, "--max_iters=2", "--hflip=true", "--lr=0.002")
    assert Train_SegNet.main(args) == 0
    # only --resume and how long: the rest (hflip, lr, data_root, sizes...) comes from the checkpoint
    assert Train_SegNet.main([f"--resume={run / 'last.pt'}", "--max_iters=3", "--num_workers=0"]) == 0
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["iter"] == 3 and ck["config"]["hflip"] is True and ck["config"]["lr"] == 0.002
    assert ck["config"]["data_root"] == str(camvid) and ck["config"]["height"] == 32
    with pytest.raises(UserError, match="--lr=0.1 cannot change when resuming"):
        Train_SegNet.main([f"--resume={run / 'last.pt'}", "--lr=0.1"])


def test_ctrl_c_saves_last_and_exits_cleanly(camvid, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = engine.train_step

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(engine, "train_step", step)
    assert Train_SegNet.main(tiny_args(camvid, tmp_path / "run", "--max_iters=10")) == 130
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iter"] == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_request_mid_step_saves_after_the_step(camvid, tmp_path, monkeypatch, signum):
    """SIGTERM or Ctrl-C arriving while step 3 updates the weights: last.pt must hold the state after
    3 whole steps, the weights of an uninterrupted 3-iteration run (it held 3 steps' weights labelled
    iteration 2 when the handler raised at once)."""
    calls = {"n": 0}
    real = engine.train_step

    def step(*a, **k):
        loss = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 3:  # the optimizer has stepped, the iteration is not counted yet
            os.kill(os.getpid(), signum)
        return loss
    monkeypatch.setattr(engine, "train_step", step)
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    assert Train_SegNet.main(tiny_args(camvid, tmp_path / "run", "--max_iters=10")) == 130
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers  # given back
    monkeypatch.setattr(engine, "train_step", real)
    assert Train_SegNet.main(tiny_args(camvid, tmp_path / "straight", "--max_iters=3")) == 0
    a = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    assert a["iter"] == b["iter"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    momenta = [(a["optimizer"]["state"][i], b["optimizer"]["state"][i]) for i in b["optimizer"]["state"]]
    assert momenta and all(torch.equal(x["momentum_buffer"], y["momentum_buffer"]) for x, y in momenta)


def test_ctrl_c_in_the_final_evaluation_keeps_the_last_iteration(camvid, tmp_path, monkeypatch):
    real = evaluation.evaluate

    def evaluate(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    run = tmp_path / "run"
    assert Train_SegNet.main(tiny_args(camvid, run, "--max_iters=3")) == 130
    assert torch.load(run / "last.pt", weights_only=True)["iter"] == 3  # not the iterations since the start
    monkeypatch.setattr(evaluation, "evaluate", real)
    assert Train_SegNet.main([f"--resume={run / 'last.pt'}", "--num_workers=0"]) == 0  # evaluates only
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["iter"] == 3 and "mean_iou" in ck["metrics"] and (run / "best.pt").exists()


def test_interrupts_hold_a_stop_until_the_step_is_done():
    before = signal.getsignal(signal.SIGTERM)
    done = []
    with engine.Interrupts((signal.SIGTERM,)) as interrupts:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.step():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("rest of the step")  # runs: the stop waits for the step's end
        assert done == ["rest of the step"]
        with pytest.raises(KeyboardInterrupt):  # outside a step it acts at once
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("never")
    assert done == ["rest of the step"] and signal.getsignal(signal.SIGTERM) is before


def test_nan_loss_stops_and_keeps_last_good(camvid, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = engine.train_step

    def step(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 3 else loss
    monkeypatch.setattr(engine, "train_step", step)
    with pytest.raises(UserError, match="non-finite at iteration 3"):
        Train_SegNet.main(tiny_args(camvid, tmp_path / "run", "--max_iters=10", "--eval_interval=2"))
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iter"] == 2
    # an evaluation between the bad step and the next log line must not save over the good checkpoint
    calls["n"] = 0
    with pytest.raises(UserError, match="non-finite at iteration 3"):
        Train_SegNet.main(tiny_args(camvid, tmp_path / "run2", "--max_iters=10", "--eval_interval=2",
                                    "--log_interval=5"))
    assert torch.load(tmp_path / "run2" / "last.pt", weights_only=True)["iter"] == 2


def test_user_errors_are_one_line(camvid, tmp_path, capsys):
    cases = [
        (["--lrr=1"], "unknown key --lrr"),
        (["--batch_size=x"], "--batch_size=x: expected an integer"),
        (["--batch_size=0"], "--batch_size=0: expected a value >= 1"),
        (["--log_interval=0"], "--log_interval=0: expected a value >= 1"),
        (["--num_workers=-1"], "--num_workers=-1: expected a value >= 0"),
        ([f"--data_root={tmp_path / 'none'}", "--download=false"], "CamVid not found at"),
        ([f"--resume={tmp_path / 'missing.pt'}"], "missing.pt not found"),
    ]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    cases.append(([f"--resume={tmp_path / 'bad.pt'}"], "cannot be read"))
    torch.save({"model": {}}, tmp_path / "other.pt")
    cases.append(([f"--resume={tmp_path / 'other.pt'}"], "not a SegNet checkpoint"))
    cases.append((tiny_args(camvid, tmp_path / "small", "--height=8", "--width=8"),  # 1x1 at the deepest stage
                  "--height=8 --width=8: segnet_lite's deepest stage would be 1x1 (the image halved 3 times), where "
                  "BatchNorm has a single value per channel for one image; give a --height or --width above 8"))
    broken = camvid / "train" / "f003.png"  # truncated: the pre-flight check names it before iteration 1
    broken.write_bytes(broken.read_bytes()[:60])
    cases.append((tiny_args(camvid, tmp_path / "w", "--num_workers=1", "--max_iters=8"),
                  f"{broken} is corrupt or not an image"))
    for i, (args, message) in enumerate(cases):
        if i == 0:  # one in a process of its own, as a user runs it
            r = run_script("Train_SegNet.py", *args)
            code, err = r.returncode, r.stderr
        else:  # the rest in this one (a second each, not a torch import each)
            code, err = cli_error(capsys, Train_SegNet.main, args)
        assert code == 2, (args, err)
        # one line, the last (a progress bar may stand above it), and no traceback
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last and "Traceback" not in err, err
    assert not (tmp_path / "small").exists()


# Runs Train_SegNet.main in each torchrun process and saves the weights that process ends with
# (the model of its last validation: parameters and BN buffers), to compare across ranks.
DDP_WRAPPER = """
import os, sys
import torch
sys.path.insert(0, {repo!r})
import Train_SegNet
from segnet import evaluation
models, evaluate = [], evaluation.evaluate
def remember(model, *args, **kwargs):
    models.append(model)
    return evaluate(model, *args, **kwargs)
evaluation.evaluate = remember
rc = Train_SegNet.main(sys.argv[1:])
torch.save({{k: v.detach().cpu() for k, v in models[-1].state_dict().items()}},
           os.path.join({out!r}, "rank" + os.environ["RANK"] + ".pt"))
sys.exit(rc)
"""


def test_ddp_two_gloo_processes(camvid, tmp_path):
    """Two processes stay in step: every parameter and buffer identical on both ranks at the end."""
    wrapper = tmp_path / "ddp_wrapper.py"
    wrapper.write_text(DDP_WRAPPER.format(repo=REPO, out=str(tmp_path)))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(wrapper), *tiny_args(camvid, tmp_path / "ddp", "--max_iters=3", "--device=cpu")],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world size 2" in r.stdout
    ranks = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]
    saved = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert saved["iter"] == 3
    assert set(ranks[0]) == set(ranks[1]) == set(saved["model"])
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        assert torch.equal(ranks[0][k], saved["model"][k]), k


@pytest.mark.realdata
def test_real_camvid_smoke_run(camvid_root, tmp_path):
    out = tmp_path / "real"
    rc = Train_SegNet.main([f"--data_root={camvid_root}", f"--out_dir={out}", "--init_encoder=none",
                            "--height=90", "--width=120", "--max_iters=3", "--num_workers=1",
                            "--eval_split=val", "--bn_recompute=false", "--log_interval=1"])
    assert rc == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["iter"] == 3 and len(ck["class_names"]) == 11
    assert 0 <= ck["metrics"]["global_accuracy"] <= 1


@pytest.mark.realdata
def test_real_mnist_short_training_lowers_the_loss(mnist_root):
    """SegNet-Lite with the multidigit_mnist preset on the real MNIST digits: the loss falls."""
    config = parse_overrides({"config": "camvid", **Train_SegNet.DEFAULTS},
                             ["--config=multidigit_mnist", f"--data_root={mnist_root}"])
    from segnet.build import build_dataset, build_model
    data = build_dataset(config, "train", train=True)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_model(config)
    opt = optim.make_optimizer("adamw", model, 0.003, 0.9, 0.0001, caffe_lr_mult=False)
    losses = []
    for i, (x, y) in zip(range(40), loader):
        losses.append(float(engine.train_step(model, x, y, opt, None, torch.device("cpu"), torch.float32)))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_bn_recompute_is_the_plain_average_of_batch_statistics():
    """compute_bn_statistics.py: running mean = average of the per-batch means (not an EMA)."""
    model = SegNet(num_classes=3, spec="segnet_lite")
    batches = [(torch.rand(2, 3, 16, 16) * s, torch.zeros(2, 16, 16, dtype=torch.long)) for s in (1.0, 3.0, 5.0)]
    bn = model.encoder[0].convs[0][1]
    conv = model.encoder[0].convs[0][0]
    with torch.no_grad():
        expected = torch.stack([conv(x).mean((0, 2, 3)) for x, _ in batches]).mean(0)
    engine.recompute_bn_statistics(model, batches, torch.device("cpu"), torch.float32)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert bn.momentum == 0.1  # restored


def test_choices_come_from_the_registries_and_flags_may_be_bare():
    from segnet import runtime
    from segnet.data import DATASETS
    from segnet.model import SPECS
    c = Train_SegNet.CHOICES
    assert c["model"] == tuple(SPECS) and tuple(c["dataset"]) == tuple(DATASETS)  # read at parse time
    assert c["optimizer"] == tuple(optim.OPTIMIZERS) and c["lr_schedule"] == tuple(optim.LR_SCHEDULES)
    assert c["dtype"] == ("auto", *runtime.DTYPES)
    d = {"config": "camvid", **Train_SegNet.DEFAULTS}
    assert parse_overrides(d, ["--hflip"])["hflip"] is True
    with pytest.raises(UserError, match="use --key=value"):
        parse_overrides(d, ["--lr"])  # only a boolean may stand alone


def test_no_library_module_imports_the_training_script():
    """The library never reads the script; the bench, a top-level tool, may read its block."""
    import pathlib
    bench = pathlib.Path(REPO, "segnet", "bench")
    for path in pathlib.Path(REPO, "segnet").rglob("*.py"):
        if bench in path.parents:
            continue
        text = path.read_text()
        assert "import Train_SegNet" not in text and "sys.path.insert" not in text, path


def test_a_v1_file_is_migrated_on_load_and_new_files_are_v2(tmp_path):
    """v1 files (written before every key was stored) load as v2: the missing keys take the frozen
    v1 defaults, compile becomes a bool, a bool channels_last a string, and conv_wgrad goes."""
    from segnet.checkpoint import CHECKPOINT_KIND, load_checkpoint, model_from_checkpoint, save_checkpoint
    net = SegNet(num_classes=3, spec="segnet_lite")
    old = {"kind": "segnet-checkpoint-v1", "model": net.state_dict(), "class_names": ["a", "b", "c"],
           "config": {"config": "mine", "model": "segnet_lite", "num_classes": 3, "init_encoder": "none",
                      "compile": "auto", "conv_wgrad": "gemm", "channels_last": True}}
    torch.save(old, tmp_path / "v1.pt")
    ck = load_checkpoint(tmp_path / "v1.pt")
    assert ck["kind"] == CHECKPOINT_KIND == "segnet-checkpoint-v2"
    c = ck["config"]
    assert "conv_wgrad" not in c and c["compile"] is False and c["channels_last"] == "true"
    assert (c["config"], c["model"], c["num_classes"]) == ("mine", "segnet_lite", 3)  # its own values stay
    assert (c["dropout"], c["bayesian"], c["normalize"], c["data_on_device"], c["seed"]) == (0.5, False, "auto", "auto", 0)
    # every key a v2 run writes, but dist_timeout, added since (a resume takes the script's value)
    assert set(c) == set(Train_SegNet.DEFAULTS) - {"dist_timeout"} | {"config"}
    old["config"]["compile"] = True
    torch.save(old, tmp_path / "v1_compiled.pt")
    assert load_checkpoint(tmp_path / "v1_compiled.pt")["config"]["compile"] is True
    model, _ = model_from_checkpoint(tmp_path / "v1.pt")
    assert model.classifier.out_channels == 3
    save_checkpoint(tmp_path / "v2.pt", {k: v for k, v in ck.items() if k != "kind"})
    assert torch.load(tmp_path / "v2.pt", weights_only=True)["kind"] == "segnet-checkpoint-v2"
