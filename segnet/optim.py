"""The optimizer and its learning-rate schedule: SGD with Caffe's parameter groups, as
SegNet-Tutorial's segnet_solver.prototxt / segnet_train.prototxt set them, or AdamW.

    opt = make_optimizer("sgd", model, lr=0.001, momentum=0.9, weight_decay=0.0005)
    set_lr(opt, learning_rate("fixed", 0.001, it, max_iters))   # each iteration
"""
import math

import torch


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


OPTIMIZERS = {
    "sgd": lambda groups, lr, momentum: torch.optim.SGD(groups, lr=lr, momentum=momentum),  # the paper
    "adamw": lambda groups, lr, momentum: torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999)),
}


def make_optimizer(name, model, lr, momentum, weight_decay, caffe_lr_mult=True):
    """SGD with momentum and Caffe's parameter groups (the paper), or AdamW (beta1 = momentum)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name}: expected one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](caffe_param_groups(model, weight_decay, caffe_lr_mult), lr, momentum)


# fixed: segnet_solver.prototxt (lr_policy step with gamma 1.0 never changes the rate); poly (power
# 0.9) and cosine are common modern options. Each maps (base lr, t = it / max_iters in [0, 1]) to a rate.
LR_SCHEDULES = {
    "fixed": lambda base_lr, t: base_lr,
    "poly": lambda base_lr, t: base_lr * (1 - t) ** 0.9,
    "cosine": lambda base_lr, t: base_lr * 0.5 * (1 + math.cos(math.pi * t)),
}


def learning_rate(schedule, base_lr, it, max_iters):
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={schedule}: expected one of {', '.join(LR_SCHEDULES)}")
    return LR_SCHEDULES[schedule](base_lr, min(it / max(max_iters, 1), 1.0))


def set_lr(optimizer, lr):
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
