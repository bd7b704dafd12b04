"""FLOPs per image for `python -m segnet.bench`, counted on the meta device: the numerator of its
utilisation figures (the dense matmul peak, measured in a child process, is the denominator)."""
import copy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model, height, width, train=False):
    """FLOPs of one image (batch 1) through `model`, forward or forward+backward, counted by
    torch.utils.flop_counter on the meta device (shapes only: instant at any size).
    A model that is not on the meta device is copied there; the model itself is left alone."""
    if next(model.parameters()).device.type != "meta":
        model = copy.deepcopy(model).to_empty(device="meta")
    was_training = model.training
    model.train(train)
    cin = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    x = torch.zeros(1, cin, height, width, device="meta")
    with FlopCounterMode(display=False) as counter:
        y = model(x)
        if train:
            y.float().sum().backward()
    model.train(was_training)
    return int(counter.get_total_flops())
