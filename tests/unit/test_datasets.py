"""Registry, split helper, the embedded digits set and Table 2's transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import datasets
from harness.datasets.splits import split_indices, split_sizes


def test_registry_order_and_unknown_name(tmp_path):
    assert datasets.DATASET_NAMES == (
        "tinyimagenet",
        "svhn",
        "cifar10",
        "fashionmnist",
        "tissuemnist",
        "bloodmnist",
        "pcam",
        "padufes20",
        "digits",
    )
    with pytest.raises(ValueError, match="valid names: tinyimagenet, svhn"):
        datasets.load("imagenet", tmp_path)
    with pytest.raises(ValueError, match="valid: paper, reference-code"):
        datasets.load("digits", tmp_path, protocol="papers")
    with pytest.raises(ValueError, match="unknown option.*merge_extra.*valid options: none"):
        datasets.load("digits", tmp_path, merge_extra=True)


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (70_000, (49_000, 10_500, 10_500)),
        (60_000, (42_000, 9_000, 9_000)),
        (630_420, (441_294, 94_563, 94_563)),
        (2_298, (1_608, 345, 345)),
        (1_797, (1_257, 270, 270)),
    ],
)
def test_split_sizes_match_the_known_totals(n, sizes):
    assert split_sizes(n) == sizes


def test_split_indices_partition_and_determinism():
    a = split_indices(1000, 42)
    b = split_indices(1000, 42)
    c = split_indices(1000, 7)
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(1000))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_group_split_keeps_each_group_in_one_split():
    groups = np.repeat(np.arange(60), np.tile([1, 2, 3], 20))  # 120 items, 60 groups
    parts = split_indices(len(groups), 3, groups=groups)
    seen = [set(groups[p]) for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(p) for p in parts) == len(groups)
    assert 70 <= len(parts[0]) <= 90  # about 70% of the items, whole groups at a time


def test_digits_loads_offline_with_declared_constants(tmp_path):
    ds = datasets.load("digits", tmp_path / "nothing-here")
    assert ds.split_sizes() == (1_257, 270, 270)
    assert ds.train.images.dtype == np.uint8 and ds.train.images.shape[1:] == (1, 8, 8)
    assert ds.train.labels.dtype == np.int64 and set(ds.train.labels) == set(range(10))
    assert ds.meta.channels == 1 and ds.meta.num_classes == 10 and ds.meta.complete
    assert ds.meta.train_augment == () and ds.meta.resize is None
    everything = np.concatenate([s.images for s in (ds.train, ds.val, ds.test)]) / 255.0
    assert everything.max() == 1.0  # 16 -> 255
    assert ds.meta.mean[0] == pytest.approx(everything.mean(), abs=1e-3)
    assert ds.meta.std[0] == pytest.approx(everything.std(), abs=1e-3)
    again = datasets.load("digits", tmp_path)
    other = datasets.load("digits", tmp_path, split_seed=1)
    assert again.meta.digest == ds.meta.digest and other.meta.digest != ds.meta.digest
    assert np.array_equal(again.test.labels, ds.test.labels)


def _meta(name, channels, augment=(), resize=None, mean=(0.5,), std=(0.25,)):
    return datasets.DatasetMeta(
        name=name,
        num_classes=10,
        channels=channels,
        image_size=(8, 8),
        class_names=("a",) * 10,
        mean=mean * channels if len(mean) == 1 else mean,
        std=std * channels if len(std) == 1 else std,
        resize=resize,
        train_augment=tuple(augment),
        digest="",
        source="",
    )


def test_eval_transform_normalizes_and_resizes():
    meta = _meta("x", 3, augment=[{"op": "hflip", "p": 1.0}], resize=(16, 16))
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    image[:, :, 0] = 255
    out = datasets.build_transform(meta, train=False)(image)
    assert out.dtype == torch.float32 and out.shape == (3, 16, 16)
    assert out[0, 0, 0].item() == pytest.approx((1.0 - 0.5) / 0.25)  # left edge kept: no flip
    assert out[0, 0, -1].item() == pytest.approx((0.0 - 0.5) / 0.25)
    flipped = datasets.build_transform(meta, train=True)(image)
    assert flipped[0, 0, -1].item() == pytest.approx(2.0)  # p=1 flip applied in training only


def test_every_declared_augmentation_builds_and_keeps_shape():
    augment = [
        {"op": "hflip", "p": 0.5},
        {"op": "rotate", "degrees": 10},
        {"op": "affine", "translate": [0.1, 0.1]},
        {"op": "pad_crop", "size": 32, "padding": 4},
        {"op": "color_jitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
        {"op": "resized_crop", "size": 32, "scale": [0.8, 1.0]},
    ]
    meta = _meta("x", 3, augment=augment, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    out = datasets.build_transform(meta, train=True)(
        torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    )
    assert out.shape == (3, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="valid ops: hflip"):
        datasets.build_transform(_meta("x", 1, augment=[{"op": "cutout"}]), train=True)
    with pytest.raises(ValueError, match="CHW uint8"):
        datasets.build_transform(meta, train=False)(torch.zeros(3, 32, 32))


def test_corrupt_train_images_quirk_reproduces_topilimage_wraparound():
    from torchvision.transforms import Normalize, ToPILImage, ToTensor

    mean, std = (0.2860,), (0.3530,)
    meta = _meta("fashionmnist", 1, mean=mean, std=std)
    pixels = torch.tensor([[[0, 64, 255]]], dtype=torch.uint8)
    quirky = datasets.build_transform(meta, train=True, quirks={"corrupt_train_images": True})
    raw = quirky(pixels) * std[0] + mean[0]  # back to [0, 1] pixel values
    assert raw[0, 0, 0].item() == pytest.approx(0.196, abs=1e-3)  # raw 0.0 comes back as 0.196
    assert raw[0, 0, 2].item() == pytest.approx(0.012, abs=1e-3)  # raw 1.0 comes back as 0.012
    # The same bytes as the authors' pipeline: ToTensor + Normalize, then ToPILImage.
    ref = np.asarray(
        ToPILImage()(Normalize(mean, std)(ToTensor()(pixels.numpy().transpose(1, 2, 0))))
    )
    assert np.array_equal(np.round(raw.numpy()[0] * 255).astype(np.uint8), ref)
    # Validation/test and other datasets are untouched.
    clean = datasets.build_transform(meta, train=False, quirks={"corrupt_train_images": True})
    assert clean(pixels)[0, 0, 0].item() == pytest.approx(-mean[0] / std[0])
    other = datasets.build_transform(
        _meta("svhn", 1, mean=mean, std=std), True, {"corrupt_train_images": True}
    )
    assert other(pixels)[0, 0, 0].item() == pytest.approx(-mean[0] / std[0])


def test_torch_split_feeds_a_dataloader(tmp_path):
    ds = datasets.load("digits", tmp_path)
    data = datasets.TorchSplit(ds.val, datasets.build_transform(ds.meta, train=False))
    images, labels = next(iter(torch.utils.data.DataLoader(data, batch_size=16)))
    assert images.shape == (16, 1, 8, 8) and images.dtype == torch.float32
    assert torch.equal(labels, torch.from_numpy(ds.val.labels[:16]))
    assert len(data) == 270
