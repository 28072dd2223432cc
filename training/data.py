"""Datasets as in-memory tensors with deterministic train/val/test splits.

Every dataset here is small enough to hold in memory, and the trainer slices tensors directly, which is
much faster than a DataLoader at these sizes. Splits depend only on `DataConfig.split_seed`, so every
trial, pruning level and ablation arm of a sweep sees exactly the same samples.
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from training.registry import Registry, origin_of
from training.settings import (  # noqa: F401 (re-exported)
    DATASET_DECLS, DATASET_NAMES, DataConfig, DatasetOptions, Declared,
)

Loader = Callable[["DataConfig"], "DataBundle"]
DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str, options: type[DatasetOptions] | None = None, version: int = 1
                     ) -> Callable[[Loader], Loader]:
    """Register a loader ``(cfg: DataConfig) -> DataBundle`` under ``name`` (a user's dataset the same way as
    the built-ins). ``options`` validates ``data.options`` (``cfg.parsed_options()`` in the loader);
    ``assemble`` turns train and test tensors into the splits every dataset shares."""

    def deco(load: Loader) -> Loader:
        if name not in DATASET_NAMES:
            DATASET_DECLS.register(name, origin=origin_of(load.__module__))(Declared(options or DatasetOptions, version))
        DATASETS.register(name)(load)
        return load

    return deco


class DatasetNotFoundError(FileNotFoundError):
    """Raised instead of torchvision's generic RuntimeError so the message can say where the files belong."""


def dataset_names() -> list[str]:
    return DATASETS.names()


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    normalization: Normalization


def smallest_class(data: DataBundle) -> tuple[int, int]:
    """(class, its number of training examples) for the class with the fewest: what bounds any
    per-class sample drawn from the training split."""
    counts = data.train.y.bincount(minlength=data.num_classes).tolist()
    return counts.index(min(counts)), min(counts)


def load_dataset(cfg: DataConfig) -> DataBundle:
    DATASET_DECLS.get(cfg.name)  # an entry-point dataset is imported (and registers its loader) here
    return DATASETS.get(cfg.name)(cfg)


# --- splitting and normalisation shared by every dataset ------------------------------------------


def _take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.x[index], split.y[index])


def hold_out(split: Split, fraction: float, gen: torch.Generator) -> tuple[Split, Split]:
    """Return (rest, held-out); the permutation comes from the caller's generator so splits chain."""
    perm = torch.randperm(len(split), generator=gen)
    n_held = int(round(fraction * len(split)))
    return _take(split, perm[n_held:]), _take(split, perm[:n_held])


def _channel_stats(x: torch.Tensor) -> Normalization:
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    std = per_channel.std(dim=1)
    std[std == 0] = 1.0  # a constant channel carries no signal; leave it centred but unscaled
    return Normalization(tuple(per_channel.mean(dim=1).tolist()), tuple(std.tolist()))


def _normalise_(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """In place: a CIFAR-sized float copy is ~600 MB, and several trials may load data side by side."""
    shape = (1, len(norm.mean)) + (1,) * (x.dim() - 2)
    mean = torch.tensor(norm.mean, dtype=x.dtype).view(shape)
    std = torch.tensor(norm.std, dtype=x.dtype).view(shape)
    return x.sub_(mean).div_(std)


def assemble(
    name: str,
    cfg: DataConfig,
    train: Split,
    test: Split,
    num_classes: int,
    gen: torch.Generator,
    normalization: Normalization | None = None,
) -> DataBundle:
    """Carve val from train, optionally subsample train, then normalise every split with one set of stats.

    Stats are taken from the final training split when no fixed constants are given, so val/test never
    leak into them.
    """
    train, val = hold_out(train, cfg.val_fraction, gen)
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        train = _take(train, torch.randperm(len(train), generator=gen)[: cfg.max_train_samples])
    if len(train) == 0:
        raise ValueError(f"{name}: the training split is empty; raise num_samples or lower the fractions")
    norm = normalization or _channel_stats(train.x)
    # Every tensor reaching here was created by this module's loaders, so normalising in place is safe.
    splits = [Split(_normalise_(s.x.float(), norm), s.y.long()) for s in (train, val, test)]
    return DataBundle(
        name=name,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=num_classes,
        input_shape=tuple(train.x.shape[1:]),
        normalization=norm,
    )


def _seeded(cfg: DataConfig) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.split_seed)


# --- datasets generated or shipped locally ----------------------------------------------------------


@register_dataset("digits")
def _digits(cfg: DataConfig) -> DataBundle:
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.from_numpy(raw.images).float().div_(16.0).unsqueeze(1)
    gen = _seeded(cfg)
    train, test = hold_out(Split(x, torch.from_numpy(raw.target).long()), cfg.test_fraction, gen)
    return assemble("digits", cfg, train, test, num_classes=10, gen=gen)


MNIST1D_MIN_SAMPLES = 10


@register_dataset("mnist1d")
def _mnist1d(cfg: DataConfig) -> DataBundle:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if cfg.num_samples is not None:
        if cfg.num_samples < MNIST1D_MIN_SAMPLES:  # mnist1d fails on fewer with a numpy stacking error
            raise ValueError(f"data.num_samples={cfg.num_samples}: mnist1d generates samples in rounds of its "
                             f"10 classes, so it needs at least {MNIST1D_MIN_SAMPLES}")
        args.num_samples = cfg.num_samples
    args.seed = cfg.split_seed
    # make_dataset reseeds Python's and NumPy's global RNGs; restore them so loading data does not
    # silently change the randomness of whatever runs next in the trial.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    train = Split(torch.from_numpy(raw["x"]).float().unsqueeze(1), torch.from_numpy(raw["y"]).long())
    test = Split(torch.from_numpy(raw["x_test"]).float().unsqueeze(1), torch.from_numpy(raw["y_test"]).long())
    return assemble("mnist1d", cfg, train, test, num_classes=10, gen=_seeded(cfg))


@register_dataset("fake")
def _fake(cfg: DataConfig) -> DataBundle:
    from torchvision import transforms

    fake = _vision().datasets.FakeData(
        size=cfg.num_samples or 1000,
        image_size=(3, 32, 32),
        num_classes=10,
        random_offset=cfg.split_seed,
        transform=transforms.PILToTensor(),
    )
    images, labels = zip(*(fake[i] for i in range(len(fake))))
    x = torch.stack(images).float().div_(255.0)
    gen = _seeded(cfg)
    train, test = hold_out(Split(x, torch.tensor(labels, dtype=torch.int64)), cfg.test_fraction, gen)
    return assemble("fake", cfg, train, test, num_classes=10, gen=gen)


# --- torchvision datasets read from cfg.root ---------------------------------------------------------


@functools.cache
def _vision():
    """torchvision's datasets, imported when a dataset needs them: importing torchvision pulls in
    torch._dynamo (1.2 s on 2 cores), which a sweep on digits or MNIST-1D would pay in the driver and
    in every worker for nothing.

    CIFAR and SVHN with torchvision's md5 check relaxed: it reports regenerated or subsampled files in
    the official format (a tiny test fixture, a cluster's re-packed copy) as missing; existence is
    enough here, and a malformed file still fails loudly when it is unpickled. Downloads keep their
    archive md5 check."""
    from types import SimpleNamespace

    from torchvision import datasets

    def files_exist(self) -> bool:
        folder = Path(self.root, self.base_folder)
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    class CIFAR10(datasets.CIFAR10):
        meta = {**datasets.CIFAR10.meta, "md5": None}
        _check_integrity = files_exist

    class CIFAR100(datasets.CIFAR100):
        meta = {**datasets.CIFAR100.meta, "md5": None}
        _check_integrity = files_exist

    class SVHN(datasets.SVHN):
        def _check_integrity(self) -> bool:
            return Path(self.root, self.filename).is_file()

    return SimpleNamespace(datasets=datasets, CIFAR10=CIFAR10, CIFAR100=CIFAR100, SVHN=SVHN)


def _require_files(name: str, folder: Path, files: list[str], origin: str) -> None:
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name}: data not found at {folder} (missing: {', '.join(missing)}). Set `data.download: true` "
            f"on a machine with internet access, or copy the official files there ({origin})."
        )


Arrays = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W), int64 labels (N,)


def _cifar_arrays(kind: str, root: Path, cfg: DataConfig) -> tuple[Arrays, Arrays]:
    cls = getattr(_vision(), kind)
    if not cfg.download:
        files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        _require_files(cfg.name, root / cls.base_folder, files, f"extract {cls.url} into {root}")

    def read(train: bool) -> Arrays:
        ds = cls(str(root), train=train, download=cfg.download)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # stored HWC
        return images, torch.tensor(ds.targets, dtype=torch.int64)

    return read(True), read(False)


def _mnist_arrays(kind: str, root: Path, cfg: DataConfig) -> tuple[Arrays, Arrays]:
    cls = getattr(_vision().datasets, kind)
    if not cfg.download:
        # torchvision reads the gunzipped idx files from <root>/<ClassName>/raw and verifies no checksum.
        files = [os.path.splitext(f)[0] for f, _ in cls.resources]
        origin = f"the gunzipped {', '.join(f for f, _ in cls.resources)} from {cls.mirrors[0]}"
        _require_files(cfg.name, root / cls.__name__ / "raw", files, origin)

    def read(train: bool) -> Arrays:
        ds = cls(str(root), train=train, download=cfg.download)
        return ds.data.unsqueeze(1), ds.targets.long()

    return read(True), read(False)


def _svhn_arrays(root: Path, cfg: DataConfig) -> tuple[Arrays, Arrays]:
    cls = _vision().SVHN
    if not cfg.download:
        entries = [cls.split_list[s] for s in ("train", "test")]
        origin = " and ".join(url for url, _, _ in entries)
        _require_files(cfg.name, root, [filename for _, filename, _ in entries], origin)

    def read(split: str) -> Arrays:
        ds = cls(str(root), split=split, download=cfg.download)
        return torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()

    return read("train"), read("test")


def _register_vision(
    name: str,
    read: Callable[[Path, DataConfig], tuple[Arrays, Arrays]],
    num_classes: int,
    normalization: Normalization,
) -> None:
    """Fixed, published normalisation constants keep every split and every subsample on the same scale."""

    def load(cfg: DataConfig) -> DataBundle:
        (x_train, y_train), (x_test, y_test) = read(Path(cfg.root).expanduser(), cfg)
        train = Split(x_train.float().div_(255.0), y_train)
        test = Split(x_test.float().div_(255.0), y_test)
        return assemble(name, cfg, train, test, num_classes, _seeded(cfg), normalization)

    register_dataset(name)(load)


_register_vision(
    "cifar10",
    lambda root, cfg: _cifar_arrays("CIFAR10", root, cfg),
    10,
    Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
)
_register_vision(
    "cifar100",
    lambda root, cfg: _cifar_arrays("CIFAR100", root, cfg),
    100,
    Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
)
_register_vision(
    "mnist",
    lambda root, cfg: _mnist_arrays("MNIST", root, cfg),
    10,
    Normalization((0.1307,), (0.3081,)),
)
_register_vision(
    "fashion_mnist",
    lambda root, cfg: _mnist_arrays("FashionMNIST", root, cfg),
    10,
    Normalization((0.2860,), (0.3530,)),
)
_register_vision(
    "svhn",
    _svhn_arrays,
    10,
    Normalization((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
)
