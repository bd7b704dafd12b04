"""Many processes under torchrun (gloo, 2 ranks on the CPU): Ctrl-C stops every rank at the same
iteration and saves one last.pt; a rank killed or stopped ends the others in one line
(docs/reliability.md, "Many processes")."""
import glob
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from helpers import make_tutorial_camvid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each rank runs Train_SegNet as its command line does, counts its training steps, and at the end of
# step AT does ACTION (RANKS_TEST=ACTION@AT): rank 0 presses Ctrl-C in torchrun's terminal (SIGINT
# to torchrun's process group), or rank 1 kills or stops itself.
WRAPPER = """
import os, signal, sys, time
sys.path.insert(0, {repo!r})
import Train_SegNet
from segnet import engine
from segnet.errors import run_cli
rank, out = int(os.environ["RANK"]), {out!r}
action, at = os.environ["RANKS_TEST"].split("@")
steps, step = 0, engine.train_step
open(os.path.join(out, f"pid{{rank}}"), "w").write(str(os.getpid()))
def counted(*args, **kwargs):
    global steps
    loss = step(*args, **kwargs)
    steps += 1
    if steps == int(at) and action == "ctrl-c" and rank == 0:
        os.killpg(os.getpgid(os.getppid()), signal.SIGINT)
        time.sleep(1)  # torchrun passes it on to every rank while this step is under way
    elif steps == int(at) and action in ("kill", "stop") and rank == 1:
        os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSTOP)
    return loss
engine.train_step = counted
try:
    sys.exit(run_cli(Train_SegNet.main, sys.argv[1:]))
finally:
    open(os.path.join(out, f"steps{{rank}}"), "w").write(str(steps))
"""


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    return make_tutorial_camvid(tmp_path_factory.mktemp("data") / "CamVid")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp, camvid, out, action, *extra):
    """Start two ranks of the wrapper under torchrun in a session of its own (so that its Ctrl-C
    reaches torchrun alone, as a terminal's does); each rank's output goes to a log file."""
    tmp.mkdir(exist_ok=True)
    wrapper = tmp / "wrapper.py"
    wrapper.write_text(WRAPPER.format(repo=REPO, out=str(tmp)))
    args = [f"--data_root={camvid}", f"--out_dir={out}", "--model=segnet_lite", "--init_encoder=none",
            "--height=32", "--width=48", "--batch_size=2", "--num_workers=0", "--bn_recompute=false",
            "--eval_interval=0", "--log_interval=1", "--device=cpu", "--dtype=float32", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={free_port()}", f"--log_dir={tmp / 'logs'}", "--redirects=3",
         str(wrapper), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1", "RANKS_TEST": action})


def rank_output(tmp, rank):
    """What rank `rank` printed (stdout, stderr)."""
    folder, = glob.glob(str(tmp / "logs" / "*" / "attempt_0" / str(rank)))
    return tuple(open(os.path.join(folder, f"{name}.log")).read() for name in ("stdout", "stderr"))


def finish(proc, timeout=120):
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_at_one_iteration_and_resumes_exactly(camvid, tmp_path):
    straight = torchrun(tmp_path / "a", camvid, tmp_path / "straight", "none@0", "--max_iters=6")
    finish(straight)
    assert straight.returncode == 0

    stopped = torchrun(tmp_path / "b", camvid, tmp_path / "run", "ctrl-c@3", "--max_iters=6")
    launcher = finish(stopped)
    last = tmp_path / "run" / "last.pt"
    steps = [int((tmp_path / "b" / f"steps{r}").read_text()) for r in range(2)]
    assert steps == [3, 3], launcher
    assert torch.load(last, weights_only=True)["iter"] == 3
    (out0, err0), (out1, err1) = rank_output(tmp_path / "b", 0), rank_output(tmp_path / "b", 1)
    line = f"interrupted at iteration 3: saved {last}; continue with --resume={last}"
    assert (out0 + err0).count(line) == 1 and line not in out1 + err1, (out0, err0)
    assert "Traceback" not in err0 + err1, (err0, err1)

    resumed = torchrun(tmp_path / "c", camvid, tmp_path / "run", "none@0", f"--resume={last}")
    finish(resumed)
    assert resumed.returncode == 0, rank_output(tmp_path / "c", 0)
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(last)
    assert torch.load(last, weights_only=True)["iter"] == 6
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_killed_rank_ends_the_others_in_one_line(camvid, tmp_path):
    run = torchrun(tmp_path, camvid, tmp_path / "run", "kill@2", "--max_iters=1000")
    launcher = finish(run, timeout=60)
    assert run.returncode != 0
    out0, err0 = rank_output(tmp_path, 0)
    assert "Traceback" not in err0, err0
    assert err0.strip().splitlines()[-1] == ("error: rank 0: lost rank 1: its connection closed (the process "
                                             "ended or was killed); no last.pt saved yet"), (err0, launcher)


@pytest.mark.slow
def test_a_stopped_rank_ends_the_others_after_dist_timeout(camvid, tmp_path):
    run = torchrun(tmp_path, camvid, tmp_path / "run", "stop@2", "--max_iters=1000", "--dist_timeout=4")
    pid1 = None
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:  # rank 0 ends; torchrun would wait 30 s more for rank 1
            pid0 = tmp_path / "pid0"
            if pid0.exists() and not os.path.exists(f"/proc/{pid0.read_text()}"):
                break
            if (tmp_path / "pid1").exists():
                pid1 = int((tmp_path / "pid1").read_text())
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
    finally:
        if pid1 is not None:
            try:
                os.kill(pid1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher = finish(run, timeout=60)
    out0, err0 = rank_output(tmp_path, 0)
    assert "Traceback" not in err0, err0
    assert err0.strip().splitlines()[-1] == ("error: rank 0: rank 1 did not answer within --dist_timeout=4 s "
                                             "(stopped, hung or unreachable); no last.pt saved yet"), (err0, launcher)
    assert elapsed < 30, elapsed
