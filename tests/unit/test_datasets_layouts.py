"""Data that torchvision or medmnist already wrote is read where it lies, never fetched again.

Each case writes the tiny files in the harness's own layout, moves them to where the other
tool keeps them, and checks that the source finds them there, loads the same splits, and that
`load(download=True)` does not try the network (the synthetic files would fail every published
checksum, so any fetch attempt would raise).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dataset_files as files
import numpy as np
import pytest

from harness import datasets


@pytest.fixture(autouse=True)
def _no_real_home(tmp_path, monkeypatch):
    """~/.medmnist is one of the places searched: point HOME at an empty folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


def _same(a, b) -> None:
    assert a.meta.digest == b.meta.digest
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert np.array_equal(np.asarray(x.images), np.asarray(y.images))
        assert np.array_equal(x.labels, y.labels)


def _found_at(name: str, root: Path, folder: Path, **options) -> None:
    source = datasets.get_source(name)
    assert source.present(root, **options)
    assert source.directory(root, **options) == folder
    assert all(p.is_relative_to(folder) for p in source.required_files(root, **options))


def test_cifar10_in_torchvision_root(tmp_path):
    ours = tmp_path / "ours"
    files.write_cifar10(ours)
    expected = datasets.load("cifar10", ours)
    root = tmp_path / "tv"  # torchvision.datasets.CIFAR10(root=tv) layout
    _move(ours / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py")
    _found_at("cifar10", root, root)
    _same(datasets.load("cifar10", root, download=True), expected)
    statuses = datasets.get_source("cifar10").verify(root)  # torchvision's md5s, checked there
    assert statuses and not any(s.ok for s in statuses if s.path.name.startswith("data_batch"))


def test_svhn_mat_files_directly_in_root(tmp_path):
    ours = tmp_path / "ours"
    files.write_svhn(ours)
    expected = datasets.load("svhn", ours, merge_extra=True)
    root = tmp_path / "tv"  # torchvision.datasets.SVHN(root=tv) keeps the .mat files in tv/
    _move(ours / "svhn", root)
    _found_at("svhn", root, root, merge_extra=True)
    _same(datasets.load("svhn", root, download=True, merge_extra=True), expected)


@pytest.mark.parametrize("gz", [True, False])
def test_fashionmnist_in_torchvision_raw_folder(tmp_path, gz):
    ours = tmp_path / "ours"
    files.write_fashionmnist(ours, gz=gz)
    staged = tmp_path / "staged"
    shutil.copytree(ours, staged)
    expected = datasets.load("fashionmnist", staged)
    root = tmp_path / "tv"  # torchvision.datasets.FashionMNIST(root=tv) writes tv/FashionMNIST/raw
    _move(ours / "fashionmnist" / "FashionMNIST", root / "FashionMNIST")
    _found_at("fashionmnist", root, root / "FashionMNIST" / "raw")
    _same(datasets.load("fashionmnist", root, download=True), expected)


@pytest.mark.parametrize("where", ["root", "home"])
def test_medmnist_flat_in_root_or_in_its_home_folder(tmp_path, _no_real_home, where):
    ours = tmp_path / "ours"
    files.write_medmnist(ours / "medmnist" / "bloodmnist.npz", gray=False)
    expected = datasets.load("bloodmnist", ours)
    root = tmp_path / "data"
    folder = root if where == "root" else _no_real_home / ".medmnist"
    _move(ours / "medmnist" / "bloodmnist.npz", folder / "bloodmnist.npz")
    root.mkdir(exist_ok=True)
    _found_at("bloodmnist", root, folder)
    _same(datasets.load("bloodmnist", root, download=True), expected)
    source = datasets.get_source("bloodmnist")
    assert source.size_on_disk(root) == (folder / "bloodmnist.npz").stat().st_size
    # The 64x64 file is looked for on its own: absent everywhere, it is reported under ours.
    assert not source.present(root, medmnist_size=64)
    assert source.directory(root, medmnist_size=64) == root / "medmnist"


def test_tinyimagenet_unzipped_in_root(tmp_path):
    ours = tmp_path / "ours"
    files.write_tinyimagenet(ours / "tinyimagenet", per_class=2, val_per_class=1)
    staged = tmp_path / "staged"
    shutil.copytree(ours, staged)
    expected = datasets.load("tinyimagenet", staged)
    root = tmp_path / "data"
    _move(ours / "tinyimagenet" / "tiny-imagenet-200", root / "tiny-imagenet-200")
    _found_at("tinyimagenet", root, root)
    _same(datasets.load("tinyimagenet", root, download=True), expected)


def test_our_folder_wins_when_both_hold_the_files(tmp_path):
    root = tmp_path / "data"
    files.write_cifar10(root)  # root/cifar10/cifar-10-batches-py
    other = tmp_path / "other"
    files.write_cifar10(other)
    _move(other / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py")
    _found_at("cifar10", root, root / "cifar10")


def test_nothing_anywhere_points_at_our_folder(tmp_path):
    root = tmp_path / "empty"
    for name in ("cifar10", "svhn", "tinyimagenet"):
        source = datasets.get_source(name)
        assert not source.present(root) and source.directory(root) == root / name
    with pytest.raises(datasets.DatasetError, match=r"empty/medmnist/bloodmnist\.npz"):
        datasets.load("bloodmnist", root)


def test_data_list_and_verify_show_where_the_files_were_found(tmp_path, capsys):
    from harness.cli import main

    ours = tmp_path / "ours"
    files.write_svhn(ours)
    root = tmp_path / "tv"
    _move(ours / "svhn", root)
    assert main(["data", "list", "--data", str(root)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("svhn"))
    assert row.split()[1] == "yes" and row.endswith(str(root))
    assert main(["data", "verify", "svhn", "--data", str(root)]) == 1  # not the official files
    out, err = capsys.readouterr()
    assert f"FAIL {root / 'train_32x32.mat'}: train_32x32.mat differs from the official" in out
    assert "svhn/train_32x32.mat" not in out and "train_32x32.mat" in err
