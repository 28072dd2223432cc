"""scikit-learn's bundled tabular classification sets (no download): a dataset registered from outside.

``assemble`` carves the validation split, subsamples and normalises exactly as for the built-ins, so
every trial of a sweep sees the same examples."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from training.data import DataBundle, Split, assemble, hold_out, register_dataset
from training.settings import DataConfig, DatasetOptions


class TabularOptions(DatasetOptions):
    table: Literal["wine", "breast_cancer", "iris"] = Field("wine", description="which scikit-learn table")


@register_dataset("sklearn_tabular", options=TabularOptions)
def load(cfg: DataConfig) -> DataBundle:
    from sklearn import datasets

    opts = cfg.parsed_options()
    raw = getattr(datasets, f"load_{opts.table}")()
    x = torch.from_numpy(raw.data).float()
    y = torch.from_numpy(raw.target).long()
    gen = torch.Generator().manual_seed(cfg.split_seed)
    train, test = hold_out(Split(x, y), cfg.test_fraction, gen)
    return assemble(f"sklearn_tabular:{opts.table}", cfg, train, test, num_classes=int(y.max()) + 1, gen=gen)
