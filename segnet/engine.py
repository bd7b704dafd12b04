"""The run loop's pieces, with explicit arguments and no globals
(pytorch/vision references/segmentation/train.py `train_one_epoch` / `evaluate`, detr `engine.py`):
the loss, one train step, the training iterations, the optimizer and its schedule, and BatchNorm
statistics (the data order: segnet/data/sampling.py; evaluation: segnet/evaluation.py)."""
import contextlib
import dataclasses
import signal

import torch
import torch.nn.functional as F

from .errors import WorkerDied, one_line
from .optim import learning_rate, set_lr
from .progress import size_of, track
from .runtime import autocast, to_device


# -- loss ---------------------------------------------------------------------------------------
def caffe_cross_entropy(logits, target, weight=None, ignore_index=255):
    """Weighted pixel-wise cross-entropy normalised as Caffe's SoftmaxWithLoss (normalize: true):
    sum_i w[y_i] * -log p_i(y_i) / (number of non-void pixels).

    PyTorch's weighted "mean" divides by sum_i w[y_i] instead, which rescales the gradient by a
    batch-dependent factor and so changes the effective learning rate of the paper's recipe.
    """
    total = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index,
                            reduction="sum")
    return total / (target != ignore_index).sum().clamp_min(1)


def train_step(model, images, masks, optimizer, scaler, device, dtype, weight=None):
    """Forward, loss, backward, optimizer step; returns the loss as a device tensor (no sync)."""
    with autocast(device, dtype):
        logits = model(images)
    loss = caffe_cross_entropy(logits, masks, weight)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


# -- the training iterations --------------------------------------------------------------------
@dataclasses.dataclass
class RunState:
    """What changes during a run. `iter` and `best` go into every checkpoint, with `best_iter` (the
    iteration of the best.pt on disk, -1 = none) and `validated` (the iteration of the last finished
    validation, so that a checkpoint knows whether the one due at its iteration still has to run);
    `first_bad` (the first iteration whose loss was not finite, -1 = none) and `interval_loss` (loss
    sum and count since the last validation, also checkpointed) stay on the device, so a step never
    waits for the host."""
    iter: int
    best: float
    first_bad: torch.Tensor
    interval_loss: torch.Tensor
    best_iter: int = -1
    validated: int = 0
    validation_rng: tuple = None  # (iteration, RNG state as its validation began): a loader draws from it

    @classmethod
    def start(cls, device, iter=0, best=float("-inf")):
        return cls(iter, best, torch.full((), -1, dtype=torch.long, device=device), torch.zeros(2, device=device))

    def bad_iteration(self):
        """The first non-finite iteration, or None (a host sync)."""
        bad = int(self.first_bad)
        return bad if bad >= 0 else None

    def train_loss(self):
        """The mean loss since the last validation (a host sync); `interval_loss.zero_()` starts
        counting again once that validation is finished."""
        return float(self.interval_loss[0]) / max(float(self.interval_loss[1]), 1.0)


class HostReadout:
    """Device values read on the host one log interval late, so that logging never stalls the
    device's queue: `swap(values, iteration)` starts copying `values` (a device tensor) to host
    memory and returns the previous call's (iteration, host copy), whose copy has finished long
    since (on CUDA this waits on that copy's event only, not on the steps queued after it)."""

    def __init__(self):
        self.pending = None

    def swap(self, values, iteration):
        values = values.detach()
        if values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host, done = values.clone(), None
        previous, self.pending = self.pending, (iteration, host, done)
        return self._read(previous)

    def flush(self):
        """The last swap's values (waiting for them), and nothing pending."""
        previous, self.pending = self.pending, None
        return self._read(previous)

    @staticmethod
    def _read(entry):
        if entry is None:
            return None
        iteration, host, done = entry
        if done is not None:
            done.synchronize()
        return iteration, host


def train_iterations(model, loader, batches, optimizer, rt, weight, lr_schedule, base_lr,
                     max_iters, state, guard=contextlib.nullcontext):
    """Iterations (as the Caffe solver counts them) from `state.iter` to `max_iters`, yielding each
    step's loss (a device tensor) after `state` has counted it. `loader` reads the endless
    `batches` (EpochBatches), whose order depends only on the iteration, so a resumed run sees
    what an uninterrupted one would have. Each step, from its learning rate to its count, runs
    inside `guard()` (`Interrupts.step`). Nothing here waits for the device."""
    model.train()
    if state.iter >= max_iters:
        return
    batches.start_at(state.iter)
    for images, masks in loader:
        with guard():
            set_lr(optimizer, learning_rate(lr_schedule, base_lr, state.iter, max_iters))
            images = rt.images(images)
            masks = masks.to(rt.device, non_blocking=True)
            loss = train_step(model, images, masks, optimizer, rt.scaler, rt.device, rt.dtype, weight)
            state.first_bad = torch.where((state.first_bad < 0) & ~torch.isfinite(loss), state.iter + 1,
                                          state.first_bad)
            state.interval_loss[0] += loss.float()
            state.interval_loss[1] += 1
            state.iter += 1
        yield loss
        if state.iter >= max_iters:
            return


class Interrupts:
    """Ctrl-C, SIGTERM and a DataLoader worker's death, held back while a training step is under way
    (`with interrupts.step():`) and acted on as soon as it is done, so that a checkpoint saved on the
    way out holds a whole number of steps (weights, optimizer, iteration and RNG agree) and resumes
    exactly. Outside a step (waiting for a batch, validating) they act at once. A stop request
    raises KeyboardInterrupt; a dead worker raises WorkerDied, as torch's own SIGCHLD handler would
    have raised RuntimeError wherever the main process happened to be, mid optimizer step included.
    Use in the main thread; `signals` are the stop requests to handle (SIGINT, SIGTERM).
    With `vote` (under torchrun: ranks.StopVote) every rank calls `vote(asked)` at the end of every
    step and stops if any rank was asked, so all stop after the same iteration; a stop request then
    waits for the next step's end (or the last vote, as the iterations end) wherever it arrives (a
    rank that left alone would strand the others in their next collective)."""

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM), vote=None):
        self.signals, self.vote = tuple(signals), vote
        self.sigchld = getattr(signal, "SIGCHLD", None)  # not on Windows, nor is torch's handler
        self.in_step, self.pending, self.previous = False, [], {}

    def __enter__(self):
        if self.sigchld is not None:
            # torch installs its SIGCHLD handler once per process, with the first multi-worker loader;
            # install it now so that it does not go on top of this one, which calls it when it is safe
            from torch.utils.data._utils import signal_handling
            getattr(signal_handling, "_set_SIGCHLD_handler", lambda: None)()
        for s in self.signals + ((self.sigchld,) if self.sigchld is not None else ()):
            self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, exc_type, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}
        pending, self.pending = self.pending, []
        # a stop held after the last step: every rank leaves together, with one last vote
        if exc_type is None and self.vote is not None and self.vote(any(s != self.sigchld for s in pending)):
            raise KeyboardInterrupt

    def _handle(self, signum, frame):
        if self.in_step or (self.vote is not None and signum != self.sigchld):
            self.pending.append(signum)
        else:
            self._act(signum, frame)

    def _act(self, signum, frame):
        if signum != self.sigchld:
            raise KeyboardInterrupt
        check = self.previous.get(signum)
        if callable(check):  # torch's: raises RuntimeError if one of its workers has died
            try:
                check(signum, frame)
            except RuntimeError as e:
                raise WorkerDied(one_line(e)) from None

    @contextlib.contextmanager
    def step(self):
        self.in_step = True
        try:
            yield
        finally:
            self.in_step = False
        pending, self.pending = self.pending, []
        asked = any(signum != self.sigchld for signum in pending)
        if (self.vote(asked) if self.vote is not None else asked):  # a stop request first
            raise KeyboardInterrupt
        for signum in set(pending):
            self._act(signum, None)




@torch.no_grad()
def recompute_bn_statistics(model, loader, device, dtype, channels_last=False):
    """Caffe's compute_bn_statistics.py: BN running statistics as the plain (cumulative) average
    of the batch statistics over the training set, with the final weights; dropout stays off.
    Under torch.distributed each rank passes its share of the set and the averages are averaged."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative moving average
    was_training = model.training
    model.eval()
    for m in bns:
        m.train()
    for images, _ in track(loader, "BN recompute", size_of(loader), count=lambda batch: len(batch[0])):
        with autocast(device, dtype):
            model(to_device(images, device, channels_last))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in (m.running_mean, m.running_var):
                torch.distributed.all_reduce(t)
                t /= torch.distributed.get_world_size()
    model.train(was_training)
