"""The run loop's pieces and the one evaluation path, with explicit arguments and no globals
(pytorch/vision references/segmentation/train.py `train_one_epoch` / `evaluate`, detr `engine.py`):
data order that survives a resume, the loss, one train step, the training iterations,
predictions, streaming evaluation and BatchNorm statistics."""
import collections
import contextlib
import dataclasses
import math
import signal

import torch
import torch.nn.functional as F

from .errors import WorkerDied, one_line
from .optim import learning_rate, set_lr
from .runtime import autocast, to_device


# -- data order that survives a resume ---------------------------------------------------------
class SeededSampler(torch.utils.data.Sampler):
    """Shuffled (index, seed) pairs for one rank; epoch e's order depends only on (seed, e).

    Each sample also gets its own augmentation seed, so the data a run sees depends neither on
    the number of workers nor on where it was resumed. `start` skips samples already consumed.
    Like DistributedSampler, every rank gets ceil(n / world) samples (the order is padded).
    """

    def __init__(self, n, seed=0, shuffle=True, rank=0, world=1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.per_rank = math.ceil(n / world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def __len__(self):
        return self.per_rank - self.start

    def epoch_items(self, epoch):
        """This rank's (index, seed) pairs of `epoch`, in order: its share of one permutation."""
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        order = torch.cat([order, order[: self.per_rank * self.world - self.n]])  # pad to equal shares
        seeds = torch.randint(0, 2**62, (len(order),), generator=g)
        return list(zip(order.tolist(), seeds.tolist()))[self.rank::self.world]

    def __iter__(self):
        return iter(self.epoch_items(self.epoch)[self.start:])


class EpochBatches(torch.utils.data.Sampler):
    """Batches of `batch_size` (index, seed) pairs, endless, cut from the stream of `sampler`'s
    epochs one after another: a batch may end one epoch and begin the next, so every image is
    used exactly once per epoch and none is dropped (TPAMI Sec. 3.3: "before each epoch, the
    training set is shuffled and each mini-batch (12 images) is then picked in order thus
    ensuring that each image is used only once in an epoch"; Caffe's data layers and chainercv's
    iterators read their data the same way). Batch k holds stream positions k*B .. k*B+B-1, so
    `start_at(iteration)` resumes mid-epoch exactly. Under DDP each rank cuts its own share of
    every epoch (`SeededSampler(rank, world)`, padded as DistributedSampler pads)."""

    def __init__(self, sampler, batch_size):
        if batch_size > sampler.per_rank:
            raise ValueError(f"batch_size={batch_size} is larger than the {sampler.per_rank} images of "
                             f"an epoch{' per process' if sampler.world > 1 else ''}")
        self.sampler, self.batch_size, self.position = sampler, batch_size, 0

    def start_at(self, iteration):
        """The next iteration is `iteration` (the batches before it were consumed)."""
        self.position = iteration * self.batch_size

    def __iter__(self):
        epoch, offset = divmod(self.position, self.sampler.per_rank)
        batch = []
        while True:
            for item in self.sampler.epoch_items(epoch)[offset:]:
                batch.append(item)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            epoch, offset = epoch + 1, 0


class Seeded(torch.utils.data.Dataset):
    """Wraps a dataset so that item (i, seed) runs its random transforms under `seed`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        i, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[i]


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
    Use in the main thread; `signals` are the stop requests to handle (SIGINT, SIGTERM)."""

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
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

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _handle(self, signum, frame):
        if self.in_step:
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
        for signum in sorted(set(pending), key=lambda s: s == self.sigchld):  # a stop request first
            self._act(signum, None)


# -- the one evaluation path --------------------------------------------------------------------
def predict(model, images, device, dtype, size=None, mc_samples=0):
    """Class probabilities (B, C, H, W) in fp32, resized (bilinear, on the logits) to `size`.

    mc_samples > 0: average that many softmax samples with dropout on (Bayesian SegNet) and also
    return the per-pixel variance averaged over classes (the model uncertainty).
    """
    def once():
        with autocast(device, dtype):
            logits = model(images)
        logits = logits.float()
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.softmax(1)

    if mc_samples <= 0:
        return once(), None
    mean = sq = None
    for _ in range(mc_samples):
        p = once()
        mean = p if mean is None else mean + p
        sq = p * p if sq is None else sq + p * p
    mean, sq = mean / mc_samples, sq / mc_samples
    return mean, (sq - mean * mean).clamp_min(0).mean(1)


# One batch of predictions, from any source: images (as loaded, or None), masks (the labels on the
# device: stacked, a list where their sizes differ, or None when unlabelled), preds (one (H, W)
# class map per image, at its label's size), uncertainty (one (H, W) map per image with MC
# dropout, else None).
Batch = collections.namedtuple("Batch", "images masks preds uncertainty")


def model_predictions(model, loader, device, dtype, channels_last=False, mc_samples=0):
    """Batches of `model`'s predictions over `loader`, whose batches are (images, masks) or
    (images, masks or None, label sizes) (segnet.data.collate). Eval mode, except dropout with
    mc_samples > 0; the model's mode is restored at the end."""
    from .model import mc_dropout
    was_training = model.training
    model.eval()
    if mc_samples > 0:
        mc_dropout(model, True)
    try:
        for images, masks, *sizes in loader:
            sizes = sizes[0] if sizes else [tuple(masks.shape[-2:])] * len(images)
            x = to_device(images, device, channels_last)
            if all(s == sizes[0] for s in sizes):
                probs, unc = predict(model, x, device, dtype, sizes[0], mc_samples=mc_samples)
                preds, uncs = list(probs.argmax(1)), list(unc) if unc is not None else None
            else:  # images of different sizes (predict mode): each back to its own size
                outs = [predict(model, x[b:b + 1], device, dtype, s, mc_samples=mc_samples)
                        for b, s in enumerate(sizes)]
                preds = [p[0].argmax(0) for p, _ in outs]
                uncs = [u[0] for _, u in outs] if mc_samples > 0 else None
            if isinstance(masks, list):  # labels of different sizes (segnet.data.collate)
                masks = [m.to(device, non_blocking=True) for m in masks]
            elif masks is not None:
                masks = masks.to(device, non_blocking=True)
            yield Batch(images, masks, preds, uncs)
    finally:
        model.train(was_training)


@torch.inference_mode()
def score(batches, num_classes, device, boundary=False, on_batch=None, bf_tolerance=False):
    """The one evaluation loop: a streaming confusion matrix (and the paper's BF with `boundary`,
    the tolerance variant with `bf_tolerance`) over `batches` of predictions from any source
    (model_predictions, or files: segnet.score), all ranks together under torch.distributed.
    `on_batch(batch, first_index)` sees every batch (to write pictures).

    Returns the confusion-matrix metrics, `boundary_f1` and `per_class_boundary_f1` with
    `boundary` (`..._tolerance` with `bf_tolerance`), and `num_images`; only `num_images` when no
    batch had labels."""
    from .metrics import BoundaryF1, ConfusionMatrix
    cm = ConfusionMatrix(num_classes, device=device)
    bfs = ([BoundaryF1(num_classes, device=device)] if boundary else []) + \
        ([BoundaryF1(num_classes, device=device, method="tolerance")] if bf_tolerance else [])
    n, labelled = 0, False
    try:
        for batch in batches:
            if batch.masks is not None:
                # one stacked update, or one per image where the labels differ in size
                pairs = (zip(batch.preds, batch.masks) if isinstance(batch.masks, list)
                         else [(torch.stack(batch.preds), batch.masks)])
                for pred, masks in pairs:
                    cm.update(pred, masks)
                    for bf in bfs:  # the paper's BF queues the maps to CPU threads and returns
                        bf.update(pred, masks)
                labelled = True
            if on_batch is not None:
                on_batch(batch, n)
            n += len(batch.preds)
        if not labelled:
            return {"num_images": n}
        cm.all_reduce()
        metrics = cm.compute()
        for bf in bfs:
            bf.all_reduce()
            metrics.update(bf.compute())
        return {**metrics, "num_images": n}
    finally:
        getattr(batches, "close", lambda: None)()  # a generator source restores its model now
        for bf in bfs:
            bf.close()


def evaluate(model, loader, num_classes, device, dtype, channels_last=False, boundary=False, mc_samples=0,
             on_batch=None, bf_tolerance=False):
    """`model` scored over `loader` (training's validation and Evaluate_SegNet.py)."""
    return score(model_predictions(model, loader, device, dtype, channels_last, mc_samples),
                 num_classes, device, boundary, on_batch, bf_tolerance)


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
    for images, _ in loader:
        with autocast(device, dtype):
            model(to_device(images, device, channels_last))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in (m.running_mean, m.running_var):
                torch.distributed.all_reduce(t)
                t /= torch.distributed.get_world_size()
    model.train(was_training)
