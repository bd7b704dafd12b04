"""A diverged model is never saved nor loaded: one check of a state dict's floating tensors, and
the words a stopped run ends with (docs/reliability.md, Divergence)."""
import os

import torch


def first_nonfinite(state_dict):
    """The name of the first floating tensor of `state_dict` holding a NaN or an infinity, or None.
    One host sync whatever the number of tensors: every flag is gathered before it is read."""
    items = [(k, v) for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not items:
        return None
    finite = torch.stack([torch.isfinite(v).all() for _, v in items])
    if bool(finite.all()):
        return None
    return items[int((~finite).nonzero()[0])][0]


def newest_checkpoint(run_dir):
    """The words naming the newest checkpoint in `run_dir` (every one saved is finite), or saying
    there is none."""
    saved = [os.path.join(run_dir, n) for n in ("last.pt", "best.pt") if os.path.isfile(os.path.join(run_dir, n))]
    if not saved:
        return f"no checkpoint was saved in {run_dir} before it (try a lower --lr)"
    return f"the newest checkpoint, {max(saved, key=os.path.getmtime)}, is kept"


def check_run(bad_iteration, iteration, net, run_dir):
    """Stop a run (ValueError) whose loss went non-finite at `bad_iteration` (None: it did not), or
    whose weights are not finite after step `iteration` (`net`: None to check the loss only)."""
    if bad_iteration is not None:
        raise ValueError(f"loss became non-finite at iteration {bad_iteration}; stopped without saving, "
                         f"{newest_checkpoint(run_dir)}")
    name = None if net is None else first_nonfinite(net.state_dict())
    if name is not None:
        raise ValueError(f"weights became non-finite at iteration {iteration} ({name}); stopped without "
                         f"saving, {newest_checkpoint(run_dir)}")
