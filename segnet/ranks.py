"""Many processes under torchrun: the process group with a bounded wait, a stop that every rank
agrees on, and one line when a rank is lost (docs/reliability.md, "Many processes").

    torchrun --standalone --nproc_per_node=2 Train_SegNet.py --dist_timeout=600

- `init_process_group`: a collective that waits longer than `--dist_timeout` seconds for a peer
  (stopped, hung, or on a dead machine) fails instead of waiting for gloo's default 30 minutes.
- `StopVote`: at the end of every training step each rank says whether it was asked to stop
  (Ctrl-C, SIGTERM) and all learn whether any was, so all stop after the same iteration and the
  checkpoint rank 0 saves is the state of every rank.
- `watch`: a collective that fails because a peer is gone ends this rank in one line that names the
  lost rank, instead of gloo's traceback.
"""
import contextlib
import datetime
import os
import signal
import time

import torch
import torch.distributed as dist

from .errors import UserError, one_line

# What gloo's and NCCL's errors say when a peer has gone (gloo/transport/tcp/pair.cc,
# unbound_buffer.cc; c10d's timeouts); any other failure keeps its traceback.
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Connection refused")
PEER_SILENT = ("timed out", "timeout")  # compared in lower case
ROLL_CALL_S = 3.0  # how long a rank that lost a peer waits for the others to say they are still there


class PeerLost(UserError):
    """A collective failed because another rank died, was killed or stopped answering."""


def init_process_group(backend, timeout_s):
    """Join the job's process group, every collective bounded by `timeout_s` seconds; returns the
    StopVote the training loop uses."""
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend, timeout=timeout)
    # NCCL's collectives run on the GPU: the stop flag goes over a gloo group on the host, so that
    # agreeing on it never waits for the device's queue
    group = None if backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    return StopVote(group, timeout_s)


class StopVote:
    """`vote(stop)` -> whether any rank asked to stop: one all_reduce (MAX) of a one-element CPU
    tensor per call, which every rank makes at the end of every step (engine.Interrupts)."""

    def __init__(self, group=None, timeout_s=None):
        self.group, self.timeout_s = group, timeout_s
        self.flag = torch.zeros(1, dtype=torch.int32)

    def __call__(self, stop):
        self.flag.fill_(int(bool(stop)))
        dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(self.flag.item())


def lost_peer_error(error):
    """'gone' or 'silent' when `error` is a collective that failed for want of a peer, else None."""
    if not isinstance(error, RuntimeError):  # DistError and gloo's errors are RuntimeErrors
        return None
    message = str(error)
    if any(s in message for s in PEER_GONE):
        return "gone"
    if isinstance(error, dist.DistError) or any(s in message.lower() for s in PEER_SILENT):
        return "silent"
    return None


def roll_call(rank, world, wait_s=ROLL_CALL_S):
    """The ranks that do not say they are still there within `wait_s` seconds, through the job's
    store (the one torchrun's rendezvous made); None if the store cannot be reached. Of two ranks,
    the lost one is the other."""
    if world == 2:
        return [1 - rank]
    key = "segnet/alive/{}".format
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=wait_s))
        store.set(key(rank), "1")
        deadline = time.monotonic() + wait_s
        while True:
            missing = [r for r in range(world) if r != rank and not store.check([key(r)])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)
    except (AttributeError, RuntimeError, ValueError, OSError):  # a private helper of c10d's; may go
        return None


def lost_message(rank, kind, missing, timeout_s, error):
    """One line: which rank lost which, and why it thinks so."""
    if missing == []:
        return f"rank {rank}: a collective failed although every rank answered: {one_line(error)}"
    who = (f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}" if missing
           else "another rank")
    if kind == "gone":
        return f"rank {rank}: lost {who}: its connection closed (the process ended or was killed)"
    return f"rank {rank}: {who} did not answer within --dist_timeout={timeout_s:g} s (stopped, hung or unreachable)"


@contextlib.contextmanager
def watch(rt, out_dir):
    """Under torchrun: a collective that fails for want of a peer becomes PeerLost, one line naming
    the lost rank and the last.pt on disk (saved whole, or not yet saved); other errors pass."""
    if not rt.ddp:
        yield
        return
    try:
        yield
    except RuntimeError as e:
        kind = lost_peer_error(e)
        if kind is None:
            raise
        # the job is ending: torchrun's SIGTERM must not cut this line short
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        timeout_s = rt.stop_vote.timeout_s if rt.stop_vote is not None else None
        message = lost_message(rt.rank, kind, roll_call(rt.rank, rt.world), timeout_s or 0, e)
        last = os.path.join(out_dir, "last.pt")
        saved = (f"{last} on disk is whole: continue with --resume={last}" if os.path.exists(last)
                 else "no last.pt saved yet")
        raise PeerLost(f"{message}; {saved}") from None
