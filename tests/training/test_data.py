"""Data loading: offline datasets, splits, and the torchvision path on tiny files in the official formats."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from training.data import (
    DataBundle,
    DataConfig,
    DatasetNotFoundError,
    Normalization,
    dataset_names,
    load_dataset,
)


def _unnormalise(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    shape = (1, len(norm.mean)) + (1,) * (x.dim() - 2)
    return x * torch.tensor(norm.std).view(shape) + torch.tensor(norm.mean).view(shape)


def _to_bytes(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    return (_unnormalise(x, norm) * 255).round().to(torch.uint8)


# --- digits -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_dataset(DataConfig(name="digits"))


def test_digits_shapes_and_sizes(digits: DataBundle) -> None:
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.test) == round(0.2 * 1797)
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8)
        assert 0 <= int(split.y.min()) and int(split.y.max()) <= 9


def test_digits_normalised_from_train(digits: DataBundle) -> None:
    assert abs(float(digits.train.x.mean())) < 1e-4
    assert abs(float(digits.train.x.std()) - 1.0) < 1e-2
    # raw pixels are 0..16 scaled to [0, 1]
    raw = _unnormalise(digits.train.x, digits.normalization)
    assert float(raw.min()) > -1e-4 and float(raw.max()) < 1 + 1e-4


def test_digits_splits_follow_the_seed(digits: DataBundle) -> None:
    again = load_dataset(DataConfig(name="digits"))
    other = load_dataset(DataConfig(name="digits", split_seed=1))
    assert torch.equal(digits.train.x, again.train.x) and torch.equal(digits.test.y, again.test.y)
    assert not torch.equal(digits.test.y, other.test.y)


def test_no_val_and_train_subsample() -> None:
    bundle = load_dataset(DataConfig(name="digits", val_fraction=0.0, max_train_samples=100))
    assert len(bundle.val) == 0 and bundle.val.x.shape == (0, 1, 8, 8)
    assert len(bundle.train) == 100
    assert len(bundle.test) == round(0.2 * 1797)


# --- generated data sets --------------------------------------------------------------------------------


def test_mnist1d_small_and_leaves_global_rng_alone() -> None:
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    bundle = load_dataset(DataConfig(name="mnist1d", num_samples=1000))
    assert np.random.rand() == expected
    assert bundle.input_shape == (1, 40)
    assert bundle.num_classes == 10
    assert len(bundle.train) > 0 and len(bundle.test) > 0
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1000
    assert set(bundle.train.y.tolist()) == set(range(10))


def test_fake_small() -> None:
    bundle = load_dataset(DataConfig(name="fake", num_samples=50))
    assert bundle.input_shape == (3, 32, 32)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 50
    assert len(bundle.test) == 10
    assert len(bundle.normalization.mean) == 3


# --- torchvision datasets on tiny files in the official on-disk formats --------------------------------


def _write_cifar10(root: Path, train_per_batch: int = 2, n_test: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Write the five training batches, the test batch and batches.meta; return (train rows, test rows).

    The official files are Python 2 pickles whose str keys torchvision reads back as str (it unpickles
    with encoding="latin1"); Python 3 str keys give the same result. Each row is 1024 R, 1024 G, 1024 B
    values of a row-major 32x32 image. Training image i gets label i, so pixels can be matched to labels
    after the shuffle.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(5 * train_per_batch, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    for b in range(5):
        rows = slice(b * train_per_batch, (b + 1) * train_per_batch)
        batch = {"data": train[rows], "labels": list(range(rows.start, rows.stop)), "batch_label": f"batch {b}"}
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    test_batch = {"data": test, "labels": [7, 3, 9][:n_test], "batch_label": "testing batch"}
    (folder / "test_batch").write_bytes(pickle.dumps(test_batch, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": train_per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return train, test


def test_cifar10_from_official_format(tmp_path: Path) -> None:
    train, test = _write_cifar10(tmp_path)
    bundle = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.0))
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    assert bundle.normalization.mean == (0.4914, 0.4822, 0.4465)
    assert sorted(bundle.train.y.tolist()) == list(range(10))
    pixels = _to_bytes(bundle.train.x, bundle.normalization)
    for image, label in zip(pixels, bundle.train.y.tolist()):
        assert torch.equal(image, torch.from_numpy(train[label].reshape(3, 32, 32)))
    assert bundle.test.y.tolist() == [7, 3, 9]
    assert torch.equal(_to_bytes(bundle.test.x, bundle.normalization)[1], torch.from_numpy(test[1].reshape(3, 32, 32)))


def test_cifar10_val_is_carved_from_train(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    bundle = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 2, 3)
    assert sorted(bundle.train.y.tolist() + bundle.val.y.tolist()) == list(range(10))


def test_missing_cifar_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)
    assert "download" in str(info.value)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """idx format: a big-endian magic (0, 0, dtype code 0x08 for uint8, number of dims), then each dim."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_idx_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", train)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(10))
    _write_idx(raw / "t10k-images-idx3-ubyte", test)
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.array([4, 0, 2]))

    bundle = load_dataset(DataConfig(name="mnist", root=str(tmp_path), val_fraction=0.0))
    assert bundle.input_shape == (1, 28, 28)
    pixels = _to_bytes(bundle.train.x, bundle.normalization)
    for image, label in zip(pixels, bundle.train.y.tolist()):
        assert torch.equal(image[0], torch.from_numpy(train[label]))
    assert bundle.test.y.tolist() == [4, 0, 2]
    assert torch.equal(_to_bytes(bundle.test.x, bundle.normalization)[2, 0], torch.from_numpy(test[2]))


def test_missing_mnist_names_the_raw_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte") as info:
        load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    assert str(tmp_path / "FashionMNIST" / "raw") in str(info.value)


def test_svhn_from_mat_files(tmp_path: Path) -> None:
    """The official .mat files hold X as (H, W, C, N) and label the digit 0 as 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": train, "y": np.array([[10], [1], [2], [3]], dtype=np.uint8)})
    test = rng.integers(0, 256, size=(32, 32, 3, 2), dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": test, "y": np.array([[5], [10]], dtype=np.uint8)})

    bundle = load_dataset(DataConfig(name="svhn", root=str(tmp_path), val_fraction=0.0))
    assert bundle.input_shape == (3, 32, 32)
    assert sorted(bundle.train.y.tolist()) == [0, 1, 2, 3]
    assert bundle.test.y.tolist() == [5, 0]
    expected = torch.from_numpy(test[..., 1]).permute(2, 0, 1)
    assert torch.equal(_to_bytes(bundle.test.x, bundle.normalization)[1], expected)


# --- configuration ----------------------------------------------------------------------------------------


def test_registered_names() -> None:
    expected = {"digits", "mnist1d", "fake", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn"}
    from training.settings import DATASET_DECLS

    # built-ins (a plugin test earlier in the session may have registered more)
    assert {n for n in dataset_names() if DATASET_DECLS.origin(n) == "built-in"} == expected


def test_config_rejects_unknown_dataset() -> None:
    with pytest.raises(ValidationError, match="digits") as info:
        DataConfig(name="imagenet")
    assert info.value.errors()[0]["loc"] == ("name",)


def test_config_rejects_unknown_key() -> None:
    with pytest.raises(ValidationError) as info:
        DataConfig(name="digits", val_frac=0.1)
    assert info.value.errors()[0]["loc"] == ("val_frac",)


@pytest.mark.parametrize(
    ("field", "value"), [("val_fraction", 0.7), ("test_fraction", 0.0), ("num_samples", 0), ("max_train_samples", -1)]
)
def test_config_rejects_out_of_range(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        DataConfig(name="digits", **{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_torchvision_is_imported_only_by_the_datasets_that_read_through_it(tmp_path: Path) -> None:
    """Importing torchvision costs a second (it pulls in torch._dynamo), in the driver and in every
    worker: a digits trial and its MLP must not pay it, a CIFAR read must still work after."""
    import subprocess
    import sys

    _write_cifar10(tmp_path)
    code = (
        "import sys\n"
        "from training.data import DataConfig, load_dataset\n"
        "from training.models import ModelConfig, create_model\n"
        "b = load_dataset(DataConfig(name='digits'))\n"
        "create_model(ModelConfig(name='mlp'), b.input_shape, b.num_classes)\n"
        "print('torchvision' in sys.modules)\n"
        f"load_dataset(DataConfig(name='cifar10', root={str(tmp_path)!r}))\n"
        "print('torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]
