"""BatchAugment against torchvision on the same parameters; parameter distributions; DeviceSplit."""

from __future__ import annotations

import math
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torchvision.transforms.v2.functional as TF
from PIL import Image

from harness.bench.pipeline import authors_transform
from harness.datasets.gpu import BatchAugment, DeviceSplit
from harness.datasets.gpu.shapes import SHAPES

IDENTITY3 = ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])


def smooth_images(n: int, channels: int = 3, size: int = 32) -> torch.Tensor:
    """Smooth, distinct uint8 images: resampling differences stay small, errors do not."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = []
    for i in range(n):
        planes = [
            127.5 + 120 * torch.sin(xx / 7 + i + k) * torch.cos(yy / 9 - k + 0.3 * i)
            for k in range(channels)
        ]
        images.append(torch.stack(planes))
    return torch.stack(images).round().clamp(0, 255).to(torch.uint8)


def as_float(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hflip_is_exact_and_follows_the_flag():
    images = smooth_images(16)
    aug = BatchAugment([{"op": "hflip", "p": 0.5}], *IDENTITY3)
    params = aug.sample_params(16, generator())
    out = aug.apply(images, params)
    assert 0 < int(params["0.flip"].sum()) < 16
    for i in range(16):
        expected = (
            TF.horizontal_flip(as_float(images[i])) if params["0.flip"][i] else as_float(images[i])
        )
        assert torch.equal(out[i], expected)


def test_rotation_matches_torchvision_rotate():
    images = smooth_images(12)
    aug = BatchAugment([{"op": "rotate", "degrees": 10}], *IDENTITY3, image_size=32)
    params = aug.sample_params(12, generator(1))
    out = aug.apply(images, params)
    for i in range(12):
        expected = TF.rotate(as_float(images[i]), float(params["0.angle"][i]))
        # Nearest sampling on the same grid: equal except where rounding lands on a tie.
        assert (out[i] - expected).abs().mean() < 1e-3


def test_fused_flip_rotate_translate_matches_sequential_torchvision():
    spec = [
        {"op": "hflip", "p": 0.5},
        {"op": "rotate", "degrees": 10},
        {"op": "affine", "translate": [0.1, 0.1]},
    ]
    images = smooth_images(12, channels=1, size=28)
    aug = BatchAugment(spec, [0.0], [1.0], image_size=28, interpolation="bilinear")
    params = aug.sample_params(12, generator(2))
    assert set(params["2.tx"].abs().tolist()) <= {0.0, 1.0, 2.0, 3.0}  # round(U(-2.8, 2.8))
    out = aug.apply(images, params)
    for i in range(12):
        x = as_float(images[i])
        if params["0.flip"][i]:
            x = TF.horizontal_flip(x)
        x = TF.rotate(x, float(params["1.angle"][i]), interpolation=TF.InterpolationMode.BILINEAR)
        shift = [int(params["2.tx"][i]), int(params["2.ty"][i])]
        x = TF.affine(
            x,
            angle=0.0,
            translate=shift,
            scale=1.0,
            shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
        # One resampling instead of two: differs by interpolation blur only, inside the image.
        inner = (slice(None), slice(6, 22), slice(6, 22))
        assert (out[i][inner] - x[inner]).abs().max() < 0.06


def test_pad_crop_is_exact():
    images = smooth_images(10)
    aug = BatchAugment([{"op": "pad_crop", "size": 32, "padding": 4}], *IDENTITY3, image_size=32)
    params = aug.sample_params(10, generator(3))
    out = aug.apply(images, params)
    for i in range(10):
        padded = TF.pad(as_float(images[i]), [4, 4, 4, 4])
        expected = TF.crop(padded, int(params["0.top"][i]), int(params["0.left"][i]), 32, 32)
        assert torch.equal(out[i], expected)


def test_resized_crop_matches_crop_then_resize():
    images = smooth_images(10, size=48)
    spec = [{"op": "resized_crop", "size": 48, "scale": [0.8, 1.0]}]
    aug = BatchAugment(spec, *IDENTITY3, image_size=48)
    params = aug.sample_params(10, generator(4))
    out = aug.apply(images, params)
    assert out.shape == (10, 3, 48, 48)
    for i in range(10):
        box = [int(params[f"0.{k}"][i]) for k in ("top", "left", "height", "width")]
        expected = TF.resized_crop(as_float(images[i]), *box, size=[48, 48], antialias=False)
        assert (out[i] - expected).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "hue"])
def test_colour_jitter_matches_adjust_functions(name):
    images = smooth_images(8)
    amount = 0.1 if name == "hue" else 0.4
    aug = BatchAugment([{"op": "color_jitter", name: amount}], *IDENTITY3)
    params = aug.sample_params(8, generator(5))
    out = aug.apply(images, params)
    adjust = getattr(TF, f"adjust_{name}")
    for i in range(8):
        expected = adjust(as_float(images[i]), float(params[f"0.{name}"][i]))
        assert (out[i] - expected).abs().max() < 2e-5


def test_colour_jitter_order_is_per_sample_and_matches_torchvision():
    images = smooth_images(16)
    spec = [
        {"op": "color_jitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1}
    ]
    aug = BatchAugment(spec, *IDENTITY3)
    params = aug.sample_params(16, generator(6))
    orders = {tuple(row) for row in params["0.order"].tolist()}
    assert len(orders) > 4  # different samples, different orders
    out = aug.apply(images, params)
    names = ["brightness", "contrast", "saturation", "hue"]
    for i in range(16):
        x = as_float(images[i])
        for slot in params["0.order"][i].tolist():
            x = getattr(TF, f"adjust_{names[slot]}")(x, float(params[f"0.{names[slot]}"][i]))
        assert (out[i] - x).abs().max() < 5e-5


def test_resize_and_normalisation():
    images = smooth_images(4, size=28)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    aug = BatchAugment([], mean, std, resize=64)
    out = aug(images, generator())
    for i in range(4):
        resized = TF.resize(as_float(images[i]), [64, 64], antialias=True)
        expected = TF.normalize(resized, mean, std)
        assert (out[i] - expected).abs().max() < 1e-4


def test_parameter_distributions():
    spec = [
        {"op": "hflip", "p": 0.3},
        {"op": "rotate", "degrees": 10},
        {"op": "pad_crop", "size": 32, "padding": 4},
        {"op": "resized_crop", "size": 32, "scale": [0.8, 1.0]},
    ]
    aug = BatchAugment(spec, *IDENTITY3, image_size=32)
    n = 20000
    params = aug.sample_params(n, generator(7))
    assert abs(params["0.flip"].float().mean().item() - 0.3) < 0.02
    angle = params["1.angle"]
    assert angle.min() >= -10 and angle.max() <= 10
    counts = torch.histc(angle, bins=10, min=-10, max=10)
    assert counts.min() > 0.8 * n / 10 and counts.max() < 1.2 * n / 10  # roughly uniform
    for side in ("top", "left"):
        offsets = params[f"2.{side}"]
        assert offsets.min() == 0 and offsets.max() == 8  # 32 + 2*4 - 32
    area = params["3.height"] * params["3.width"] / (32 * 32)
    # Rounded box sides: the area fraction stays in [0.8, 1.0] up to one pixel's rounding.
    assert area.min() > 0.8 - 2.5 / 32 and area.max() <= 1.0
    assert (params["3.top"] >= 0).all() and (params["3.top"] + params["3.height"] <= 32).all()
    assert (params["3.left"] >= 0).all() and (params["3.left"] + params["3.width"] <= 32).all()


def test_determinism_given_the_generator():
    spec = [
        {"op": "hflip", "p": 0.5},
        {"op": "rotate", "degrees": 10},
        {"op": "color_jitter", "brightness": 0.1, "contrast": 0.1},
    ]
    aug = BatchAugment(spec, *IDENTITY3, image_size=32)
    images = smooth_images(8)
    first, second = aug(images, generator(9)), aug(images, generator(9))
    assert torch.equal(first, second)
    assert not torch.equal(first, aug(images, generator(10)))


def test_bad_spec_names_the_valid_ops():
    with pytest.raises(ValueError, match="valid: hflip, rotate"):
        BatchAugment([{"op": "solarize"}], *IDENTITY3)
    with pytest.raises(ValueError, match="image size"):
        BatchAugment([{"op": "pad_crop", "size": 32, "padding": 4}], *IDENTITY3)


def test_device_split_batches_cover_the_split_once():
    images = (
        torch.arange(10 * 28 * 28, dtype=torch.int64)
        .remainder(256)
        .to(torch.uint8)
        .view(10, 28, 28)
    )
    labels = torch.arange(10)
    split = DeviceSplit.from_arrays(images.numpy(), labels.numpy())
    assert split.image_shape == (1, 28, 28)
    seen = []
    for batch_images, batch_labels in split.epoch(4, generator(0)):
        assert batch_images.dtype == torch.uint8
        for image, label in zip(batch_images, batch_labels, strict=True):
            assert torch.equal(image[0], images[label])  # labels travel with their images
        seen.extend(batch_labels.tolist())
    assert sorted(seen) == list(range(10)) and len(seen) == 10
    assert [len(b) for b, _ in split.epoch(4, generator(0), drop_last=True)] == [4, 4]


class LazyImages:
    """A reader like PCam's HDF5 one: shape, len and slicing, nothing else."""

    def __init__(self, images: np.ndarray) -> None:
        self._images, self.shape, self.reads = images, images.shape, 0

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index):
        self.reads += 1
        return self._images[index].copy()


def test_device_split_from_a_lazy_dataset_split():
    from harness.datasets import Split

    images = smooth_images(25, size=8).numpy()
    lazy = LazyImages(images)
    split = DeviceSplit.from_split(Split(lazy, np.arange(25) % 3), read_chunk=10)
    assert lazy.reads == 1 + 3  # the first image for the shape, then three chunks
    assert torch.equal(split.images, torch.from_numpy(images))
    assert split.labels.tolist() == [i % 3 for i in range(25)]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_dataset_shape_runs_through_both_pipelines(name):
    shape = SHAPES[name]
    aug = BatchAugment(
        list(shape.augment), shape.mean, shape.std, shape.resize, shape.stored_size
    )
    images = smooth_images(2, channels=shape.channels, size=shape.stored_size[0])
    out = aug(images, generator())
    assert out.shape == (2, shape.channels, *shape.image_size) and out.dtype == torch.float32
    pil = Image.fromarray(images[0].permute(1, 2, 0).squeeze(-1).numpy())
    assert authors_transform(shape)(pil).shape == out.shape[1:]


def test_host_storage_streams_the_same_batches():
    images = smooth_images(20, size=8)
    labels = torch.arange(20)
    on_device = DeviceSplit(images, labels, storage="device")
    on_host = DeviceSplit(images, labels, storage="host", chunk_batches=2)
    for (a, la), (b, lb) in zip(
        on_device.epoch(3, generator(1)), on_host.epoch(3, generator(1)), strict=True
    ):
        assert torch.equal(a, b) and torch.equal(la, lb)


def _write_pixel(split: DeviceSplit, value: int) -> None:
    split.images[0, 0, 0, 0] = value


def test_shared_split_is_mapped_not_copied_by_a_child_process():
    # fork, not spawn: a fresh interpreter would spend most of this test importing torch.
    # Without share_memory_() the child's write would stay in its copy-on-write pages.
    split = DeviceSplit(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4), storage="host")
    split.share_memory_()
    child = mp.get_context("fork").Process(target=_write_pixel, args=(split, 77))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert int(split.images[0, 0, 0, 0]) == 77


def test_pickled_split_shares_its_storage():
    # What a spawned worker receives: torch's multiprocessing pickler sends a handle to the
    # shared memory, not the pixels.
    split = DeviceSplit(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4), storage="host")
    split.share_memory_()
    received = ForkingPickler.loads(ForkingPickler.dumps(split))
    received.images[1, 0, 2, 2] = 5
    assert int(split.images[1, 0, 2, 2]) == 5 and received.storage == "host"


def test_rotation_keeps_angles_in_degrees():
    aug = BatchAugment([{"op": "rotate", "degrees": [-30, 5]}], *IDENTITY3, image_size=8)
    angle = aug.sample_params(1000, generator(11))["0.angle"]
    assert (
        angle.min() >= -30
        and angle.max() <= 5
        and math.isclose(float(angle.mean()), -12.5, abs_tol=1.5)
    )


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
def test_cuda_augmentation_equals_the_cpu_on_the_same_parameters():
    spec = [
        {"op": "hflip", "p": 0.5},
        {"op": "rotate", "degrees": 10},
        {"op": "color_jitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
        {"op": "resized_crop", "size": 32, "scale": [0.8, 1.0]},
    ]
    aug = BatchAugment(spec, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], image_size=32)
    images = smooth_images(16)
    params = aug.sample_params(16, generator(12))
    on_cpu = aug.apply(images, params)
    on_gpu = aug.apply(images.cuda(), {k: v.cuda() for k, v in params.items()})
    assert (on_gpu.cpu() - on_cpu).abs().mean() < 1e-3
    cuda_gen = torch.Generator(device="cuda").manual_seed(3)
    assert aug(images.cuda(), cuda_gen).device.type == "cuda"


@CUDA
def test_cuda_host_storage_streams_the_same_batches_as_device_storage():
    images, labels = smooth_images(40, size=8), torch.arange(40)
    on_device = DeviceSplit(images, labels, device="cuda", storage="device")
    on_host = DeviceSplit(images, labels, device="cuda", storage="host", chunk_batches=2)
    pairs = zip(on_device.epoch(6, generator(1)), on_host.epoch(6, generator(1)), strict=True)
    for (a, la), (b, lb) in pairs:
        assert b.device.type == "cuda" and torch.equal(a, b) and torch.equal(la, lb)
