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
from segnet import engine, ranks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each rank runs Train_SegNet as its command line does and counts its training steps; rank 1 does
# ACTION after step AT (RANKS_TEST=ACTION@AT): kills or stops itself, or, between two steps, presses
# Ctrl-C in torchrun's terminal (SIGINT to torchrun's process group) and takes a second before the
# next step, so that torchrun's SIGINT reaches rank 1 between steps and rank 0 within one (waiting
# for rank 1's gradients).
WRAPPER = """
import os, signal, sys, time
sys.path.insert(0, {repo!r})
import Train_SegNet
from segnet import engine
from segnet.errors import run_cli
rank, out = int(os.environ["RANK"]), {out!r}
action, at = os.environ["RANKS_TEST"].split("@")
steps, step, swap = 0, engine.train_step, engine.HostReadout.swap
open(os.path.join(out, f"pid{{rank}}"), "w").write(str(os.getpid()))
def counted(*args, **kwargs):
    global steps
    loss = step(*args, **kwargs)
    steps += 1
    if steps == int(at) and action in ("kill", "stop") and rank == 1:
        os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSTOP)
    return loss
def between_steps(self, values, iteration):  # the loop logs each iteration (log_interval=1)
    if iteration == int(at) and action == "ctrl-c" and rank == 1:
        os.killpg(os.getpgid(os.getppid()), signal.SIGINT)
        time.sleep(1)
    return swap(self, values, iteration)
engine.train_step, engine.HostReadout.swap = counted, between_steps
code = 1
try:
    code = run_cli(Train_SegNet.main, sys.argv[1:])
except SystemExit as e:
    code = e.code
finally:
    open(os.path.join(out, f"end{{rank}}"), "w").write(f"{{steps}} {{code}}")
sys.exit(code)
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
    stopped = torchrun(tmp_path / "b", camvid, tmp_path / "run", "ctrl-c@2", "--max_iters=6")
    finish(straight)
    assert straight.returncode == 0
    launcher = finish(stopped)
    last = tmp_path / "run" / "last.pt"
    (out0, err0), (out1, err1) = rank_output(tmp_path / "b", 0), rank_output(tmp_path / "b", 1)
    assert last.exists(), (err0, err1, launcher)
    # every rank stopped after the step under way at rank 0 (3, unless torchrun was slow to pass
    # the signal on), and last.pt holds it
    stop = torch.load(last, weights_only=True)["iter"]
    assert [(tmp_path / "b" / f"end{r}").read_text() for r in range(2)] == [f"{stop} 130"] * 2
    assert 3 <= stop < 6
    line = f"interrupted at iteration {stop}: saved {last}; continue with --resume={last}"
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
    run = torchrun(tmp_path, camvid, tmp_path / "run", "kill@3", "--max_iters=1000", "--eval_interval=2")
    launcher = finish(run, timeout=60)
    assert run.returncode != 0
    out0, err0 = rank_output(tmp_path, 0)
    assert "Traceback" not in err0, err0
    assert (tmp_path / "end0").read_text() == "3 2"  # rank 0 saw step 4 fail for want of rank 1
    last = tmp_path / "run" / "last.pt"
    assert err0.strip().splitlines()[-1] == (f"error: rank 0: lost rank 1: its connection closed (the process "
                                             f"ended or was killed); {last} on disk is whole: continue with "
                                             f"--resume={last}"), (err0, launcher)
    assert torch.load(last, weights_only=True)["iter"] == 2  # the validation's, whole


@pytest.mark.slow
def test_a_stopped_rank_ends_the_others_after_dist_timeout(camvid, tmp_path):
    run = torchrun(tmp_path, camvid, tmp_path / "run", "stop@2", "--max_iters=1000", "--dist_timeout=5")
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
    assert (tmp_path / "end0").read_text() == "2 2"
    assert err0.strip().splitlines()[-1] == ("error: rank 0: rank 1 did not answer within --dist_timeout=5 s "
                                             "(stopped, hung or unreachable); no last.pt saved yet"), (err0, launcher)
    assert elapsed < 30, elapsed


# -- the pieces, in one process -------------------------------------------------------------------
def test_a_stop_request_waits_for_the_vote_at_the_end_of_a_step():
    """With a vote, a stop request outside a step is held (not raised) until the next step's end
    (or the end of the iterations), and a rank stops there when any rank asked, even if it was not
    asked itself."""
    votes, reached = [], []
    def vote(asked, others=(False, False, True)):  # the other rank asks at the third step's end
        votes.append(asked)
        return asked or others[len(votes) - 1]
    with pytest.raises(KeyboardInterrupt):
        with engine.Interrupts(vote=vote) as interrupts:
            os.kill(os.getpid(), signal.SIGTERM)  # between steps: held
            reached.append("step")
            with interrupts.step():
                pass
    assert reached == ["step"] and votes == [True]
    votes.clear()
    with pytest.raises(KeyboardInterrupt):
        with engine.Interrupts(vote=vote) as interrupts:
            for _ in range(3):
                with interrupts.step():
                    pass
    assert votes == [False, False, False]
    votes.clear()
    with pytest.raises(KeyboardInterrupt):  # asked after the last step: the vote on the way out
        with engine.Interrupts(vote=vote) as interrupts:
            with interrupts.step():
                pass
            os.kill(os.getpid(), signal.SIGINT)
    assert votes == [False, True]


def test_gloo_errors_for_a_lost_peer_become_one_line():
    closed = RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:26524. "
                          "This is typically caused by a remote worker crashing.")
    silent = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 3000ms for recv "
                          "operation to complete")
    assert [ranks.lost_peer_error(e) for e in (closed, silent, RuntimeError("CUDA out of memory"), ValueError("x"))] \
        == ["gone", "silent", None, None]
    assert ranks.roll_call(1, 2) == [0]
    assert ranks.lost_message(2, "silent", [0, 3], 5, silent) == \
        "rank 2: ranks 0, 3 did not answer within --dist_timeout=5 s (stopped, hung or unreachable)"
    assert ranks.lost_message(0, "gone", None, 5, closed) == \
        "rank 0: lost another rank: its connection closed (the process ended or was killed)"


def test_the_roll_call_names_the_ranks_that_do_not_answer(tmp_path):
    """Of more than two ranks, the lost ones are those that do not check in through the job's store."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.distributed.distributed_c10d._get_default_store().set("segnet/alive/2", "1")  # rank 2 is there
        assert ranks.roll_call(0, 4, wait_s=0.3) == [1, 3]
    finally:
        torch.distributed.destroy_process_group()
