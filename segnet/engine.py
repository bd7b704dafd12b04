"""What the scripts share: devices and precision, data, the loss, one train step, evaluation,
BatchNorm statistics and checkpoints. Explicit arguments, no globals (pytorch/vision references)."""
import math
import os
import pathlib

import torch
import torch.nn.functional as F

from .errors import UserError

# -- devices and precision ----------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_native_bf16():
    """AVX512-BF16 / AMX: bf16 convolutions run natively (oneDNN), much faster than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name}: CUDA is not available on this machine; use device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name}: expected auto, cpu or cuda[:N]") from None


def resolve_dtype(name, device):
    """The autocast dtype (float32 = no autocast). auto: bf16 where the hardware runs it natively,
    fp16 (with a GradScaler) on older GPUs, fp32 otherwise. Master weights stay fp32 either way."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if name not in DTYPES:
        raise UserError(f"dtype={name}: expected one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


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

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        order = torch.cat([order, order[: self.per_rank * self.world - self.n]])  # pad to equal shares
        seeds = torch.randint(0, 2**62, (len(order),), generator=g)
        mine = list(zip(order.tolist(), seeds.tolist()))[self.rank::self.world]
        return iter(mine[self.start:])


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


def loader_kwargs(device, num_workers):
    return dict(num_workers=num_workers, pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)


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


# -- inference ----------------------------------------------------------------------------------
def to_device(images, device, channels_last):
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


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


@torch.inference_mode()
def evaluate(model, loader, num_classes, device, dtype, channels_last=False):
    """Confusion-matrix metrics over the whole loader (all ranks together under DDP)."""
    from .metrics import ConfusionMatrix
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, device=device)
    for images, masks in loader:
        masks = masks.to(device, non_blocking=True)
        probs, _ = predict(model, to_device(images, device, channels_last), device, dtype, masks.shape[-2:])
        cm.update(probs.argmax(1), masks)
    cm.all_reduce()
    model.train(was_training)
    return cm.compute()


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


# -- checkpoints --------------------------------------------------------------------------------
CHECKPOINT_KIND = "segnet-checkpoint-v1"


def save_checkpoint(path, checkpoint):
    """Write to a temp file next to `path`, then rename: a crash never leaves half a checkpoint."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"kind": CHECKPOINT_KIND, **checkpoint}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint written by save_checkpoint; anything else is a one-line UserError."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's own message is long and about its unpickler, not the file
        raise UserError(f"checkpoint {path} cannot be read ({e.__class__.__name__}): it is corrupt or not a "
                        f"PyTorch file; expected last.pt or best.pt written by Train_SegNet.py") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        raise UserError(f"{path} is not a SegNet checkpoint of this repo (expected a dict with "
                        f"kind={CHECKPOINT_KIND!r}, written by Train_SegNet.py)")
    return ckpt


def rng_state(device):
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- optimizer ----------------------------------------------------------------------------------
def caffe_param_groups(model, weight_decay, lr_mult=True):
    """SGD parameter groups as segnet_train.prototxt sets them: conv weights lr x1 / decay x1,
    conv biases lr x2 / decay x0, BN scale lr x1 / decay x1, BN shift lr x1 / decay x0.
    `lr_mult=False`: one group, decay on everything (PyTorch's usual default)."""
    if not lr_mult:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay, "lr_mult": 1.0}]
    groups = {"weight": [], "conv_bias": [], "bn_bias": []}
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            groups["weight"].append(m.weight)
            groups["conv_bias"].append(m.bias)
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            groups["weight"].append(m.weight)
            groups["bn_bias"].append(m.bias)
    return [{"params": groups["weight"], "weight_decay": weight_decay, "lr_mult": 1.0},
            {"params": groups["conv_bias"], "weight_decay": 0.0, "lr_mult": 2.0},
            {"params": groups["bn_bias"], "weight_decay": 0.0, "lr_mult": 1.0}]


def make_optimizer(name, model, lr, momentum, weight_decay, caffe_lr_mult=True):
    """SGD with momentum and Caffe's parameter groups (the paper), or AdamW (beta1 = momentum)."""
    groups = caffe_param_groups(model, weight_decay, caffe_lr_mult)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise UserError(f"optimizer={name}: expected sgd or adamw")


def learning_rate(schedule, base_lr, it, max_iters):
    """fixed: segnet_solver.prototxt (lr_policy step with gamma 1.0 never changes the rate);
    poly (power 0.9) and cosine are common modern options."""
    if schedule == "fixed":
        return base_lr
    t = min(it / max(max_iters, 1), 1.0)
    if schedule == "poly":
        return base_lr * (1 - t) ** 0.9
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * t))
    raise UserError(f"lr_schedule={schedule}: expected fixed, poly or cosine")


def set_lr(optimizer, lr):
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
