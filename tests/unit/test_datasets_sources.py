"""Each source read through its real loading code from tiny files in the exact format."""

from __future__ import annotations

import gzip

import dataset_files as files
import numpy as np
import pytest

from harness import datasets


def _all_labels(ds):
    return np.concatenate([ds.train.labels, ds.val.labels, ds.test.labels])


def _check_split_shapes(ds, channels, side):
    for split in (ds.train, ds.val, ds.test):
        assert split.images.dtype == np.uint8
        assert tuple(split.images.shape[1:]) == (channels, side, side)
        assert split.labels.dtype == np.int64 and split.labels.shape == (len(split.images),)
    _agrees_with_declared_shape(ds)


def _agrees_with_declared_shape(ds):
    """The DataShape a module declares for the benchmarks is what its loader produces."""
    shape = datasets.get_source(ds.meta.name).shape
    if shape is None:
        return
    meta = ds.meta
    assert shape.channels == meta.channels
    if meta.name != "tinyimagenet":  # its classes come from the files' wnids.txt (3 here)
        assert shape.num_classes == meta.num_classes
    assert (tuple(shape.mean), tuple(shape.std)) == (tuple(meta.mean), tuple(meta.std))
    assert tuple(shape.augment) == tuple(meta.train_augment)
    if meta.options.get("medmnist_size", 28) == 28:  # the 64x64 MedMNIST file is the exception
        assert tuple(ds.train.images.shape[2:]) == shape.stored_size
    assert shape.image_size == tuple(meta.image_size)


def test_every_registered_source_declares_name_label_and_shape():
    labels = set()
    for name in datasets.REGISTRY:
        source = datasets.get_source(name)
        assert source.name == name and source.label and source.label not in labels
        labels.add(source.label)
        if name in datasets.PAPER_DATASETS:
            assert source.shape is not None and source.shape.name == name
            assert source.shape.train_size > source.shape.val_size > 0


def test_cifar10_merges_train_and_test_and_splits(tmp_path):
    written = files.write_cifar10(tmp_path, per_batch=4, n_test=5)  # 25 images
    ds = datasets.load("cifar10", tmp_path)
    _check_split_shapes(ds, 3, 32)
    assert ds.split_sizes() == (17, 4, 4)
    assert sorted(_all_labels(ds)) == sorted(written)
    assert ds.meta.class_names[0] == "airplane" and ds.meta.num_classes == 10
    assert not ds.meta.complete  # 25 images are not the official 60,000
    assert ds.meta.train_augment[1] == {"op": "pad_crop", "size": 32, "padding": 4}
    # The first image of data_batch_1, located through the split, has its pixels in CHW order.
    import pickle

    with open(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1", "rb") as handle:
        first = pickle.load(handle)["data"][0].reshape(3, 32, 32)
    everything = np.concatenate([ds.train.images, ds.val.images, ds.test.images])
    assert any(np.array_equal(img, first) for img in everything)
    same = datasets.load("cifar10", tmp_path)
    other = datasets.load("cifar10", tmp_path, split_seed=43)
    assert np.array_equal(same.train.images, ds.train.images) and same.meta.digest == ds.meta.digest
    assert other.meta.digest != ds.meta.digest


def test_cifar10_truncated_batch_names_the_file(tmp_path):
    files.write_cifar10(tmp_path)
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(datasets.DatasetError, match=r"data_batch_3.*harness data fetch cifar10"):
        datasets.load("cifar10", tmp_path)
    batch.unlink()
    with pytest.raises(datasets.DatasetError, match=r"missing file .*data_batch_3"):
        datasets.load("cifar10", tmp_path)


def test_svhn_maps_label_10_to_0_and_merges_extra_on_request(tmp_path):
    written = files.write_svhn(tmp_path, n_train=12, n_test=8, n_extra=6)
    ds = datasets.load("svhn", tmp_path)
    _check_split_shapes(ds, 3, 32)
    expected = np.concatenate([written["train"], written["test"]]).astype(np.int64) % 10
    assert sorted(_all_labels(ds)) == sorted(expected)
    assert 0 in _all_labels(ds) and 10 not in _all_labels(ds)
    assert sum(ds.split_sizes()) == 20 and ds.meta.train_augment == ()
    extra = datasets.load("svhn", tmp_path, merge_extra=True)
    assert sum(extra.split_sizes()) == 26 and extra.meta.options == {"merge_extra": True}
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(datasets.DatasetError, match=r"test_32x32\.mat.*corrupt or truncated"):
        datasets.load("svhn", tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_fashionmnist_reads_idx_files_in_torchvision_layout(tmp_path, gz):
    written = files.write_fashionmnist(tmp_path, n_train=14, n_test=6, gz=gz)
    ds = datasets.load("fashionmnist", tmp_path)
    _check_split_shapes(ds, 1, 28)
    assert ds.split_sizes() == (14, 3, 3)
    assert sorted(_all_labels(ds)) == sorted(written)
    assert ds.meta.channels == 1 and ds.meta.class_names[0] == "T-shirt/top"
    assert ds.meta.mean == (0.2860,) and [a["op"] for a in ds.meta.train_augment] == [
        "hflip",
        "rotate",
        "affine",
    ]


def test_fashionmnist_truncated_gzip_is_reported(tmp_path):
    files.write_fashionmnist(tmp_path, gz=True)
    packed = tmp_path / "fashionmnist" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:12])
    with pytest.raises(
        datasets.DatasetError, match=r"t10k-labels-idx1-ubyte\.gz.*corrupt or truncated"
    ):
        datasets.load("fashionmnist", tmp_path)


def test_tissuemnist_gray_repeated_to_rgb_with_official_splits(tmp_path):
    arrays = files.write_medmnist(tmp_path / "medmnist" / "tissuemnist.npz", gray=True)
    ds = datasets.load("tissuemnist", tmp_path)
    _check_split_shapes(ds, 3, 28)
    assert ds.split_sizes() == (10, 4, 6)  # MedMNIST's own splits, untouched
    assert np.array_equal(ds.test.labels, arrays["test_labels"].reshape(-1))
    first = np.asarray(ds.train.images[0])
    assert all(np.array_equal(first[c], arrays["train_images"][0]) for c in range(3))
    assert ds.meta.channels == 3 and ds.meta.resize == (64, 64) and ds.meta.image_size == (64, 64)
    assert ds.meta.class_names[0] == "Collecting Duct, Connecting Tubule"
    with pytest.raises(
        datasets.DatasetError, match=r"tissuemnist_64\.npz.*harness data fetch tissuemnist"
    ):
        datasets.load("tissuemnist", tmp_path, medmnist_size=64)
    with pytest.raises(ValueError, match="valid: 28, 64"):
        datasets.load("tissuemnist", tmp_path, medmnist_size=128)


def test_bloodmnist_native_64_and_corrupt_npz(tmp_path):
    arrays = files.write_medmnist(tmp_path / "medmnist" / "bloodmnist_64.npz", gray=False, side=64)
    ds = datasets.load("bloodmnist", tmp_path, medmnist_size=64)
    _check_split_shapes(ds, 3, 64)
    assert ds.meta.resize is None and ds.meta.options == {"medmnist_size": 64}
    assert np.array_equal(ds.val.images[1], arrays["val_images"][1].transpose(2, 0, 1))
    path = tmp_path / "medmnist" / "bloodmnist.npz"
    path.write_bytes((tmp_path / "medmnist" / "bloodmnist_64.npz").read_bytes()[:300])
    with pytest.raises(datasets.DatasetError, match=r"bloodmnist\.npz.*corrupt or truncated"):
        datasets.load("bloodmnist", tmp_path)


def test_pcam_reads_h5_lazily(tmp_path):
    written = files.write_pcam(tmp_path, sizes=(8, 4, 4))
    ds = datasets.load("pcam", tmp_path)
    assert ds.split_sizes() == (8, 4, 4)
    reader = ds.train.images
    assert not isinstance(reader, np.ndarray) and reader.shape == (8, 3, 96, 96)
    x, y = written["train"]
    assert np.array_equal(reader[2], x[2].transpose(2, 0, 1))
    batch = reader[np.array([5, 1, 5])]  # unsorted, repeated: still in the order asked
    assert batch.dtype == np.uint8 and batch.shape == (3, 3, 96, 96)
    assert np.array_equal(batch[0], x[5].transpose(2, 0, 1)) and np.array_equal(
        batch[1], x[1].transpose(2, 0, 1)
    )
    assert np.array_equal(ds.train.labels, y.astype(np.int64))
    assert np.array_equal(ds.val.labels, written["valid"][1])
    assert len(ds.meta.digest) == 64 and ds.meta.num_classes == 2
    import pickle

    clone = pickle.loads(pickle.dumps(reader))  # DataLoader workers receive a copy
    assert np.array_equal(clone[3], reader[3])
    (tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5").write_bytes(b"\x89HDF\r\n")
    with pytest.raises(datasets.DatasetError, match=r"split_test_y\.h5.*corrupt or truncated"):
        datasets.load("pcam", tmp_path)


def test_tinyimagenet_zip_fetch_and_load(tmp_path):
    source_dir = tmp_path / "src"
    tree = files.write_tinyimagenet(source_dir, per_class=3, val_per_class=2)
    folder = tmp_path / "data" / "tinyimagenet"
    folder.mkdir(parents=True)
    files.zip_tree(tree, folder / "tiny-imagenet-200.zip")
    source = datasets.get_source("tinyimagenet")
    # A locally placed archive is unpacked by fetch; its md5 differs from the published one.
    with pytest.raises(datasets.DatasetError, match="tiny-imagenet-200.zip differs from the official file"):
        source.fetch(tmp_path / "data")
    from harness.datasets.download import safe_extract

    safe_extract(folder / "tiny-imagenet-200.zip", folder)
    ds = datasets.load("tinyimagenet", tmp_path / "data")
    _check_split_shapes(ds, 3, 64)
    assert sum(ds.split_sizes()) == 15  # 9 train + 6 val merged; test has no labels
    assert ds.meta.class_names == ("goldfish", "Egyptian cat", "something")  # sorted wnids
    labels = _all_labels(ds)
    assert np.bincount(labels).tolist() == [5, 5, 5]
    # The grayscale JPEG of class n02124075 (index 1 in sorted order) became 3 equal channels.
    everything = np.concatenate([ds.train.images, ds.val.images, ds.test.images])
    gray = [img for img, lab in zip(everything, labels, strict=True) if lab == 1 and img.mean() < 2]
    assert gray and np.array_equal(gray[0][0], gray[0][1])
    assert (folder / ".decoded.npz").is_file()  # decoded once, then read from the cache
    assert datasets.load("tinyimagenet", tmp_path / "data").meta.digest == ds.meta.digest
    broken = folder / "tiny-imagenet-200" / "train" / "n01443537" / "images" / "n01443537_2.JPEG"
    broken.write_bytes(b"\xff\xd8 not a jpeg")  # new size: the cache no longer applies
    with pytest.raises(datasets.DatasetError, match=r"n01443537_2\.JPEG.*corrupt or truncated"):
        datasets.load("tinyimagenet", tmp_path / "data")


def test_tinyimagenet_val_label_from_annotations(tmp_path):
    tree = files.write_tinyimagenet(tmp_path / "tinyimagenet", per_class=1, val_per_class=1)
    ds = datasets.load("tinyimagenet", tmp_path)
    assert sum(ds.split_sizes()) == 6
    (tree / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn123\t0\t0\t1\t1\n")
    with pytest.raises(datasets.DatasetError, match=r"val_annotations\.txt.*unknown wnid"):
        datasets.load("tinyimagenet", tmp_path)


def test_padufes20_by_image_and_by_patient(tmp_path):
    rows = files.write_padufes20(tmp_path, patients=12, per_patient=2)
    ds = datasets.load("padufes20", tmp_path)
    _check_split_shapes(ds, 3, 224)
    assert ds.split_sizes() == (16, 4, 4)
    assert ds.meta.class_names == ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
    assert sorted(_all_labels(ds)) == sorted(files.PAD_CLASSES.index(r["diagnostic"]) for r in rows)
    assert ds.meta.train_augment[-1] == {"op": "resized_crop", "size": 224, "scale": [0.8, 1.0]}
    cached = datasets.load("padufes20", tmp_path)  # second load reads the decoded cache
    assert cached.meta.digest == ds.meta.digest
    by_patient = datasets.load("padufes20", tmp_path, patient_split=True, split_seed=5)
    assert sum(by_patient.split_sizes()) == 24 and by_patient.meta.options["patient_split"]
    patients = [
        {int(img[0, 0, 0]) // 10 for img in split.images}
        for split in (by_patient.train, by_patient.val, by_patient.test)
    ]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    by_image = [{int(img[0, 0, 0]) // 10 for img in split.images} for split in (ds.train, ds.test)]
    assert by_image[0] & by_image[1]  # by image, some patient lands in train and test


def test_padufes20_missing_image_and_missing_metadata(tmp_path):
    rows = files.write_padufes20(tmp_path, patients=3, per_patient=1)
    next((tmp_path / "padufes20").rglob(rows[1]["img_id"])).unlink()
    with pytest.raises(datasets.DatasetError, match=rf"{rows[1]['img_id']}.*missing.*Download All"):
        datasets.load("padufes20", tmp_path)
    with pytest.raises(datasets.DatasetError, match=r"missing file .*metadata\.csv.*zr7vgbcyr2"):
        datasets.load("padufes20", tmp_path / "elsewhere")


def test_declared_urls_and_checksums_match_the_maintained_loaders():
    import medmnist
    from torchvision.datasets import CIFAR10, PCAM, SVHN, FashionMNIST

    from harness.datasets import cifar10, fashionmnist, medmnist_sets, pcam, svhn

    assert (cifar10.ARCHIVE.url, cifar10.ARCHIVE.md5) == (CIFAR10.url, CIFAR10.tgz_md5)
    for part, (url, name, md5) in SVHN.split_list.items():
        assert (svhn.REMOTES[part].url, svhn.REMOTES[part].filename, svhn.REMOTES[part].md5) == (
            url,
            name,
            md5,
        )
    assert [(r.filename, r.md5) for r in fashionmnist.REMOTES] == list(FashionMNIST.resources)
    for name, by_size in medmnist_sets.REMOTES.items():
        assert (
            by_size[28].md5 == medmnist.INFO[name]["MD5"]
            and by_size[28].url == medmnist.INFO[name]["url"]
        )
        assert by_size[64].md5 == medmnist.INFO[name]["MD5_64"]
    tv = {f[0] + ".gz": f[2] for split in PCAM._FILES.values() for f in split.values()}
    assert {r.filename: r.md5 for r in pcam.REMOTES} == tv
    assert gzip  # the module is used by the writers' formats; keep the import honest


def test_cifar10_unpacked_digests_are_torchvisions():
    # `data verify` checks each extracted batch against the md5 torchvision publishes.
    from torchvision.datasets import CIFAR10

    from harness.datasets import cifar10

    published = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    published[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    assert published == cifar10.UNPACKED_MD5
