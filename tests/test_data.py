"""Data layer: sources, splits, fitting, augmentation and one-line errors on bad data."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coatsearch.data import FASHION_MNIST_CLASSES, DataError, load_data
from coatsearch.data.augment import RANDAUGMENT_OPS, make_transform, rand_augment, random_crop_flip
from coatsearch.data.idx import read_idx
from coatsearch.data.images import fit_images
from coatsearch.data.sources import FASHION_MNIST_DIR
from coatsearch.data.splits import stratified_split, stratified_subset


# ----------------------------------------------------------------------------- fixtures
def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """An MNIST-format file: zero, zero, type code, ndim, big-endian dims, data."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def make_idx_folder(folder: Path, n_train: int = 60, n_test: int = 20, classes: int = 3,
                    size: int = 20, compress: bool = True) -> Path:
    """Images whose mean brightness encodes the class, so a split can be checked."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % classes).astype(np.uint8)
        images = (labels[:, None, None] * 60 + rng.integers(0, 20, (n, size, size))).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
    return folder


def make_image_folder(root: Path, classes: dict[str, int], mode: str = "RGB", size: tuple[int, int] = (24, 20)) -> Path:
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            colour = (40 * c + i, 10, 200) if mode == "RGB" else 40 * c + i
            Image.new(mode, size, colour).save(root / name / f"{i}.png")
    return root


# ----------------------------------------------------------------------------- built-in default
def test_builtin_fashion_mnist_subset_is_stratified_and_offline() -> None:
    data = load_data("fashion-mnist", image_size=32)
    assert data.classes == FASHION_MNIST_CLASSES and data.num_classes == 10
    assert data.in_channels == 1 and data.train.shape == (1, 32, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (9000, 1000, 2000)
    assert torch.bincount(data.val.labels).tolist() == [100] * 10
    assert torch.bincount(data.test.labels).tolist() == [200] * 10
    # 28x28 is padded, not resized: a 2-pixel black border.
    assert data.train.images[:, :, :2].max() == 0 and data.train.images[:, :, 2:30, 2:30].max() > 0
    x, y = data.train.batch(torch.arange(512))
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2  # normalised


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_full_uses_all_images() -> None:
    data = load_data("fashion-mnist-full", image_size=28)
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)
    assert data.classes == FASHION_MNIST_CLASSES


def test_fashion_mnist_full_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path}: no Fashion-MNIST IDX files"):
        load_data(f"fashion-mnist-full:{tmp_path}", image_size=28)
    make_idx_folder(tmp_path, classes=10, n_train=100)
    assert load_data(f"fashion-mnist-full:{tmp_path}", image_size=28).classes[9] == "Ankle boot"


def test_bundles_pickle_for_worker_processes() -> None:
    data = load_data("fashion-mnist", image_size=16, train_size=50, augment="randaugment")
    copy = pickle.loads(pickle.dumps(data))
    idx = torch.arange(8)
    assert torch.equal(copy.train.batch(idx, torch.Generator().manual_seed(0))[0],
                       data.train.batch(idx, torch.Generator().manual_seed(0))[0])


def test_splits_are_deterministic_by_seed_and_disjoint() -> None:
    a = load_data("fashion-mnist", image_size=16, seed=3, train_size=200)
    b = load_data("fashion-mnist", image_size=16, seed=3, train_size=200)
    c = load_data("fashion-mnist", image_size=16, seed=4, train_size=200)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the test split never depends on the seed
    assert len(a.train) == 200 and torch.bincount(a.train.labels).tolist() == [20] * 10
    flat = lambda s: {bytes(img.numpy()) for img in s.images}  # noqa: E731
    assert not flat(a.train) & flat(a.val)


def test_stratified_split_and_subset_keep_every_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 2 + [3])
    kept, held = stratified_split(labels, 0.2, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[held], minlength=4).tolist() == [10, 6, 1, 0]
    subset = stratified_subset(labels, 41, torch.Generator().manual_seed(0))
    assert len(subset) == 41 and len(set(subset.tolist())) == 41
    assert torch.bincount(labels[subset], minlength=4).tolist()[:2] == [25, 15]


# ----------------------------------------------------------------------------- idx:
def test_idx_folder_gz_and_plain(tmp_path: Path) -> None:
    for compress in (True, False):
        folder = make_idx_folder(tmp_path / str(compress), compress=compress)
        data = load_data(f"idx:{folder}", image_size=16, val_fraction=0.2)
        assert data.num_classes == 3 and data.classes == ("0", "1", "2") and data.in_channels == 1
        assert (len(data.train), len(data.val), len(data.test)) == (48, 12, 20)
        assert data.train.shape == (1, 16, 16)  # 20 -> 16 is a resize
        # Brightness still encodes the class after resizing.
        means = data.test.images.float().mean((1, 2, 3))
        assert means[data.test.labels == 2].min() > means[data.test.labels == 0].max() + 60
    # A bare folder path is recognised as IDX.
    assert load_data(str(tmp_path / "True"), image_size=20).num_classes == 3


def test_idx_without_test_files_carves_a_fixed_test_split(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "d", n_train=100)
    for f in folder.glob("t10k-*"):
        f.unlink()
    a = load_data(f"idx:{folder}", image_size=20, seed=0)
    b = load_data(f"idx:{folder}", image_size=20, seed=5)
    # 34/33/33 images per class: round(0.1 x 33) = 3 of each go to test.
    assert len(a.test) == 9 and torch.equal(a.test.images, b.test.images)
    assert len(a.train) + len(a.val) + len(a.test) == 100


def test_idx_errors_are_one_line_and_name_the_file(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "d", compress=False)
    labels = folder / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(59, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: 59 labels for 60 images"):
        load_data(f"idx:{folder}", image_size=20)
    labels.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 60) + bytes(10))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: shape \(60,\) needs 60 data bytes, found 10"):
        read_idx(labels)
    labels.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataError, match="not an IDX file"):
        load_data(f"idx:{folder}", image_size=20)
    write_idx(labels, np.full(60, 4, np.uint8))
    with pytest.raises(DataError, match="one class only"):
        load_data(f"idx:{folder}", image_size=20)
    with pytest.raises(DataError, match=f"{tmp_path}/none: no such directory"):
        load_data(f"idx:{tmp_path}/none", image_size=20)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no train-images-\\* and train-labels-\\* IDX file"):
        load_data(f"idx:{empty}", image_size=20)


# ----------------------------------------------------------------------------- imagefolder:
def test_imagefolder_rgb_and_gray(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "rgb", {"cat": 12, "dog": 10, "eel": 8})
    data = load_data(f"imagefolder:{root}", image_size=16, val_fraction=0.25)
    assert data.classes == ("cat", "dog", "eel") and data.in_channels == 3
    assert len(data.train) + len(data.val) + len(data.test) == 30
    assert data.train.images.shape[1:] == (3, 16, 16)
    gray = make_image_folder(tmp_path / "gray", {"a": 6, "b": 6}, mode="L", size=(16, 16))
    assert load_data(f"imagefolder:{gray}", image_size=16).in_channels == 1


def test_imagefolder_with_its_own_test_split(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", {"a": 8, "b": 8})
    make_image_folder(tmp_path / "test", {"b": 3})
    data = load_data(f"imagefolder:{tmp_path}", image_size=8)
    assert len(data.test) == 3 and data.test.labels.tolist() == [1, 1, 1]
    assert len(data.train) + len(data.val) == 16


def test_imagefolder_errors(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "r", {"a": 4, "b": 4})
    (root / "c").mkdir()
    with pytest.raises(DataError, match=f"{root}/c: empty class folder"):
        load_data(f"imagefolder:{root}", image_size=8)
    (root / "c").rmdir()
    (root / "b" / "9.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"{root}/b/9.png: unreadable image"):
        load_data(f"imagefolder:{root}", image_size=8)
    single = make_image_folder(tmp_path / "s", {"only": 5})
    with pytest.raises(DataError, match="one class only"):
        load_data(f"imagefolder:{single}", image_size=8)
    flat = tmp_path / "flat"
    flat.mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(f"imagefolder:{flat}", image_size=8)
    with pytest.raises(DataError, match="nowhere: no such directory"):
        load_data(f"imagefolder:{tmp_path}/nowhere", image_size=8)


def test_bad_arguments_and_sources() -> None:
    with pytest.raises(DataError, match="unknown source 'mnist'"):
        load_data("mnist", image_size=32)
    with pytest.raises(DataError, match="val_fraction: expected a fraction"):
        load_data("fashion-mnist", image_size=32, val_fraction=1.0)
    with pytest.raises(DataError, match="train_size: 20000 is more than the 9000"):
        load_data("fashion-mnist", image_size=32, train_size=20000)
    with pytest.raises(DataError, match="augment: expected one of none, light, randaugment"):
        load_data("fashion-mnist", image_size=32, augment="heavy")


def test_too_few_images_for_a_validation_split(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "r", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="too few images per class for a validation split"):
        load_data(f"imagefolder:{root}", image_size=8)


# ----------------------------------------------------------------------------- torchvision:
def test_torchvision_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(DataError, match=r"torchvision:CIFAR10: torchvision is not installed"):
        load_data("torchvision:CIFAR10", image_size=32)


def test_torchvision_dataset_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A stand-in with the real class signature (root, train, transform, download) and
    attributes (.data NHWC uint8, .targets list, .classes) of torchvision's CIFAR10."""
    calls = []

    class CIFAR10:
        def __init__(self, root: str, train: bool = True, transform=None, target_transform=None,
                     download: bool = False) -> None:
            calls.append((root, train, download))
            n = 40 if train else 10
            self.targets = [i % 2 for i in range(n)]
            self.data = np.stack([np.full((32, 32, 3), 100 * t, np.uint8) for t in self.targets])
            self.classes = ["airplane", "automobile"]

    datasets = types.ModuleType("torchvision.datasets")
    datasets.CIFAR10 = CIFAR10
    package = types.ModuleType("torchvision")
    package.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    data = load_data(f"torchvision:CIFAR10:{tmp_path}", image_size=16)
    assert calls == [(str(tmp_path), True, False), (str(tmp_path), False, False)]
    assert data.classes == ("airplane", "automobile") and data.in_channels == 3
    assert len(data.test) == 10 and data.test.images[data.test.labels == 1].min() == 100
    with pytest.raises(DataError, match="no dataset class 'Nope'"):
        load_data("torchvision:Nope", image_size=16)


# ----------------------------------------------------------------------------- fitting, augmentation
def test_fit_images_pads_small_and_resizes_others() -> None:
    img = torch.full((1, 1, 28, 28), 200, dtype=torch.uint8)
    padded = fit_images(img, 32)
    assert padded.shape == (1, 1, 32, 32) and padded[0, 0, 1, 1] == 0 and padded[0, 0, 2, 2] == 200
    assert fit_images(img, 224).shape[-1] == 224 and fit_images(img, 224)[0, 0, 0, 0] == 200
    wide = torch.zeros(1, 3, 10, 30, dtype=torch.uint8)
    assert fit_images(wide, 10).shape == (1, 3, 10, 10)


def test_augmentations_are_seeded_and_keep_shape() -> None:
    x = torch.rand(16, 3, 32, 32)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    for kind in ("light", "randaugment"):
        transform = make_transform(kind)
        a, b = transform(x, g()), transform(x, g())
        assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
        assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert make_transform("none") is None
    # Crop + flip only moves pixels: every output pixel is an input pixel or padding.
    y = random_crop_flip(x, g())
    assert torch.isin(y, torch.cat([x.flatten(), torch.zeros(1)])).all()
    many = rand_augment(x.repeat(8, 1, 1, 1), g(), n=1, m=30)
    assert len(RANDAUGMENT_OPS) == 12 and not torch.equal(many, x.repeat(8, 1, 1, 1))


def test_training_set_augments_and_eval_sets_do_not() -> None:
    data = load_data("fashion-mnist", image_size=32, augment="light", train_size=100)
    idx = torch.arange(16)
    a, _ = data.train.batch(idx, torch.Generator().manual_seed(0))
    b, _ = data.train.batch(idx, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    assert torch.equal(data.val.batch(idx)[0], data.val.batch(idx)[0])
    image, label = data.test[3]
    assert image.shape == (1, 32, 32) and label == int(data.test.labels[3])


def test_a_trial_process_reads_each_data_setting_once_and_keeps_a_few():
    from coatsearch.search.inputs import load_trial_data, trial_bundle
    from coatsearch.space import DataSettings

    trial_bundle.cache_clear()
    first = load_trial_data(DataSettings(train_size=64), 16, 0)
    assert load_trial_data(DataSettings(train_size=64), 16, 0) is first  # an equal setting: the same bundle
    for size in (65, 66, 67, 68):  # four more settings push the first out
        load_trial_data(DataSettings(train_size=size), 16, 0)
    assert load_trial_data(DataSettings(train_size=64), 16, 0) is not first
    trial_bundle.cache_clear()
