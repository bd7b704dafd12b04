"""The training data's order, which survives a resume: shuffled (index, seed) pairs per epoch
(SeededSampler), batches cut from their endless stream (EpochBatches), and each item's random
transforms run under its own seed (Seeded).

    sampler = SeededSampler(len(train_set), seed=0)
    loader = DataLoader(Seeded(train_set), batch_sampler=EpochBatches(sampler, 12), ...)
"""
import math

import torch


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
