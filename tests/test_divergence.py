"""A run that diverges saves nothing from its bad step, and a diverged model is never written nor
loaded (docs/reliability.md, Divergence)."""
import csv

import numpy as np
import pytest
import torch

import Evaluate_SegNet
import Train_SegNet
from segnet import engine, export, weights
from segnet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from segnet.errors import UserError, run_cli

from test_reliability import HW, args, camvid  # noqa: F401  (camvid: the same tiny CamVid fixture)


def one_line_exit(capsys, main, argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1, err
    return err.splitlines()[-1]


def rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("arg", ["--lr=nan", "--lr=inf", "--momentum=nan", "--weight_decay=inf",
                                 "--scale_min=nan", "--dropout=-inf"])
def test_non_finite_hyperparameters_are_refused_at_start(camvid, tmp_path, capsys, arg):
    run = tmp_path / "run"
    err = one_line_exit(capsys, Train_SegNet.main, args(camvid, run, arg))
    assert err == f"error: {arg}: expected a finite number"
    assert not run.exists()  # refused before the run folder is made


def nan_weights_after_step(monkeypatch, nth):
    """The weights go NaN in step `nth` while its loss is still finite, as with --lr=1e9."""
    calls, real = {"n": 0}, engine.train_step

    def step(model, *a, **k):
        loss = real(model, *a, **k)
        calls["n"] += 1
        if calls["n"] == nth:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return loss
    monkeypatch.setattr(engine, "train_step", step)


def test_weights_gone_non_finite_stop_the_run_before_anything_is_saved(camvid, tmp_path, monkeypatch, capsys):
    nan_weights_after_step(monkeypatch, 4)  # the loss of step 4 is finite, the weights after it are not
    run = tmp_path / "run"  # validation at 2 saves, the one at 4 must not
    err = one_line_exit(capsys, Train_SegNet.main, args(camvid, run, "--max_iters=6"))
    assert "weights became non-finite at iteration 4" in err and f"the newest checkpoint, {run / 'last.pt'}" in err
    assert "last good" not in err
    assert [r["iter"] for r in rows(run)] == ["2"]  # no row, "(best)" or not, for the diverged model
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(run / name)["iter"] == 2
    # no checkpoint before the bad step: the stop says so, and no metrics row exists
    nan_weights_after_step(monkeypatch, 1)
    run2 = tmp_path / "run2"
    err = one_line_exit(capsys, Train_SegNet.main, args(camvid, run2, "--max_iters=6"))
    assert f"no checkpoint was saved in {run2}" in err and "newest" not in err and "last good" not in err
    assert not (run2 / "last.pt").exists() and not (run2 / "best.pt").exists()
    assert not (run2 / "metrics.csv").exists()


def test_a_huge_learning_rate_never_saves_nan_weights(camvid, tmp_path, capsys):
    run = tmp_path / "run"
    err = one_line_exit(capsys, Train_SegNet.main, args(camvid, run, "--lr=1e9", "--eval_interval=1",
                                                        "--max_iters=8"))
    assert "non-finite at iteration" in err and "stopped without saving" in err, err
    for name in ("last.pt", "best.pt"):
        if (run / name).exists():
            load_checkpoint(run / name)  # raises on non-finite weights
    if (run / "metrics.csv").exists():
        assert all(np.isfinite(float(r["train_loss"])) for r in rows(run))


@pytest.fixture(scope="module")
def trained(camvid, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert Train_SegNet.main(args(camvid, run, "--max_iters=2", "--eval_interval=0")) == 0
    return run / "last.pt"


@pytest.fixture
def diverged(trained, tmp_path):
    """A copy of the trained checkpoint with a NaN weight, written as torch.save would by a tool of
    its own (save_checkpoint refuses to)."""
    ck = torch.load(trained, weights_only=True)
    name = next(iter(ck["model"]))
    ck["model"][name] = torch.full_like(ck["model"][name], float("nan"))
    path = tmp_path / "diverged.pt"
    torch.save(ck, path)
    return path, name


def test_a_model_with_non_finite_weights_is_never_written(diverged, tmp_path):
    path, name = diverged
    ck = torch.load(path, weights_only=True)
    with pytest.raises(ValueError, match=f"not written: the model's {name} is not finite"):
        save_checkpoint(tmp_path / "last.pt", {k: v for k, v in ck.items() if k != "kind"})
    with pytest.raises(ValueError, match="not finite"):
        weights.save_weights({**weights.weights_from_checkpoint(ck), "model": ck["model"]}, tmp_path / "w.pt")
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "w.pt").exists()


def test_loading_a_model_with_non_finite_weights_is_one_line(diverged, tmp_path, capsys):
    path, name = diverged
    for load in (load_checkpoint, model_from_checkpoint):
        with pytest.raises(ValueError, match=f"checkpoint {path} holds non-finite weights"):
            load(path)
    for main, argv in ((Evaluate_SegNet.main, [str(path), f"--out_dir={tmp_path / 'e'}", "--num_workers=0"]),
                       (export.main, [str(path), "--format=torchscript", f"--out={tmp_path / 'm.pt'}"]),
                       (weights.main, [str(path), f"--out={tmp_path / 'w.pt'}"]),
                       (Train_SegNet.main, [f"--resume={path}", "--num_workers=0", "--max_iters=4"])):
        err = one_line_exit(capsys, main, argv)
        assert f"{path} holds non-finite weights ({name})" in err, err
    assert not (tmp_path / "e").exists() and not (tmp_path / "m.pt").exists() and not (tmp_path / "w.pt").exists()
    ck = torch.load(path, weights_only=True)  # a weights file, as the hub loads it
    wpath = tmp_path / "nan_weights.pt"
    torch.save({**weights.weights_from_checkpoint(ck), "model": ck["model"]}, wpath)
    with pytest.raises(ValueError, match=f"checkpoint {wpath} holds non-finite weights"):
        weights.load_weights_file(wpath)


def test_export_parity_check_fails_on_nan(trained, tmp_path, monkeypatch, capsys):
    model, ck = model_from_checkpoint(trained)

    def nan_runner(x):
        return np.full((x.shape[0], ck["config"]["num_classes"], *x.shape[2:]), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match="max \\|logit diff\\| nan"):
        export.check(model, ck["config"], nan_runner, *HW, False)
    out = tmp_path / "m.pt"
    monkeypatch.setattr(export, "torchscript_runner", lambda path: nan_runner)
    err = one_line_exit(capsys, export.main, [str(trained), "--format=torchscript", f"--out={out}"])
    assert "check" in err and "nan" in err and f"{out} removed" in err
    assert not out.exists()
