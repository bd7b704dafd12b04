"""The training split held on the training device (`data_on_device` in Train_SegNet.py).

The split is decoded once into tensors (uint8 frames for image files, uint8 masks with void 255)
on the device; each batch is then cut from them, augmented, resized and normalised there. This is
how small-data trainers keep a GPU fed (cifar10-airbench keeps CIFAR-10 on the GPU): no loader
workers, no host-to-device copy per step, nothing for a step to wait on.

The batches are the training DataLoader's, exactly: the same `EpochBatches` (index, seed) order,
and for each sample the same torchvision v2 ops (`transforms.train_geometry`, then `to_float`)
run under the same per-sample seed as `sampling.Seeded` runs them, on device tensors instead of
CPU ones. On CPU tensors the two paths give equal batches, flips and crops included; on CUDA the
resampling kernels are CUDA's (the crop boxes and flips are drawn on the CPU, so the same).

    data = DeviceData.load(dataset_fn, "cuda", geometry, to_float, workers=8)
    for images, masks in data.batches(epoch_batches):   # like the DataLoader over EpochBatches
        ...
"""
import torch
from torchvision import tv_tensors

from .transforms import train_geometry

DATA_ON_DEVICE_CHOICES = ("auto", "true", "false")
FREE_MEMORY_SHARE = 0.25  # auto: on CUDA when the split takes under a quarter of free memory


class _Keep:
    """Transforms that keep the decoded pair as it is (uint8 frame and mask for image files)."""

    def __call__(self, image, mask):
        return image, mask


def raw_dataset(make_dataset):
    """`make_dataset(transforms)` built to return each pair as decoded: (image, mask int64)."""
    return make_dataset(_Keep())


def split_bytes(dataset):
    """The memory the decoded split takes, estimated from its first pair."""
    image, mask = dataset[0]
    return len(dataset) * (image.numel() * image.element_size() + mask.numel())


def resolve_data_on_device(value, device, nbytes):
    """true / false, or auto: on CUDA when `nbytes` is under a quarter of the device's free memory
    (CPU training reads from host memory either way, so the DataLoader's workers stay)."""
    if value not in DATA_ON_DEVICE_CHOICES:
        raise ValueError(f"data_on_device={value}: expected one of {', '.join(DATA_ON_DEVICE_CHOICES)}")
    if value != "auto":
        return value == "true"
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < FREE_MEMORY_SHARE * free


class DeviceData:
    """A data set's pairs as tensors on `device`, and batches made from them there."""

    def __init__(self, images, masks, geometry, to_float, device):
        self.images, self.masks = images, masks  # a stacked tensor when all pairs share a size, else lists
        self.geometry, self.to_float, self.device = geometry, to_float, device

    @classmethod
    def load(cls, dataset, device, geometry, to_float, workers=0):
        """Decode `dataset` (a raw_dataset) once, `workers` processes at a time, onto `device`."""
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
        images, masks = [], []
        with torch.random.fork_rng(devices=[]):  # a loader draws its workers' seed: the run's RNG stays as it was
            for image, mask in loader:
                if mask.min() < 0 or mask.max() > 255:
                    raise ValueError(f"a mask of the training split has labels outside 0..255 (pair {len(masks)})")
                images.append(image.to(device))
                masks.append(mask.to(torch.uint8).to(device))
        if len({tuple(t.shape) for t in images}) == 1 and len({tuple(t.shape) for t in masks}) == 1:
            images, masks = torch.stack(images), torch.stack(masks)  # one allocation each
        return cls(images, masks, geometry, to_float, device)

    def __len__(self):
        return len(self.images)

    @property
    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in (*self.images, *self.masks))

    def sample(self, i, seed):
        """Pair i through the geometric transforms under `seed`, as sampling.Seeded runs them."""
        with torch.random.fork_rng(devices=[]):  # the ops draw their parameters on the CPU
            torch.manual_seed(seed)
            image, mask = self.geometry(tv_tensors.Image(self.images[i]), tv_tensors.Mask(self.masks[i]))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def batches(self, batch_indices):
        """(images float, masks int64) on the device for each list of (index, seed) pairs."""
        for batch in batch_indices:
            pairs = [self.sample(i, seed) for i, seed in batch]
            images = self.to_float(tv_tensors.Image(torch.stack([p[0] for p in pairs])))
            yield images.as_subclass(torch.Tensor), torch.stack([p[1] for p in pairs]).long()

    def eval_batches(self, indices, batch_size, height, width):
        """Batches of `indices` in order, resized and normalised as evaluation's transforms do
        (no augmentation): compute_bn_statistics.py's pass over the training split."""
        view = DeviceData(self.images, self.masks, train_geometry(height, width), self.to_float, self.device)
        indices = list(indices)
        return view.batches([[(i, 0) for i in indices[k:k + batch_size]] for k in range(0, len(indices), batch_size)])

    def loader(self, batch_indices):
        """An iterable over `batch_indices` (EpochBatches), in the DataLoader's place."""
        return _Batches(self, batch_indices)


class _Batches:
    def __init__(self, data, batch_indices):
        self.data, self.batch_indices = data, batch_indices

    def __iter__(self):
        return self.data.batches(self.batch_indices)
